"""Shared pieces of the command-line entry points."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

# Where compiled XLA programs are cached between runs (JAX's persistent cache).
CACHE_ENV = "GAN_COMPILE_CACHE"
DEFAULT_CACHE = os.path.join("~", ".cache", "cdcgan-jax", "xla")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: `prog: error: message`, exit code 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see --help)", self.prog)


def fail(message: str, prog: str | None = None) -> NoReturn:
    """Prints one line to stderr and exits with code 2.

    Exits at once (`os._exit`): after a failed Orbax restore, interpreter
    shutdown would print tracebacks of its abandoned read tasks.
    """
    prog = prog or os.path.basename(sys.argv[0])
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(2)


def seed(text: str) -> int:
    """argparse type for seeds: an integer in [0, 2**32)."""
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"seed must be in 0..{2**32 - 1}, got {value}")
    return value


def decays(text: str) -> tuple[float, ...]:
    """argparse type for a comma-separated list of decays, e.g. 0.99,0.9999."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected decays like 0.99,0.9999, got {text!r}") from None


def enable_compile_cache() -> None:
    """Turns on JAX's persistent compilation cache (`$GAN_COMPILE_CACHE`, or
    ~/.cache/cdcgan-jax/xla; set it to an empty string to turn the cache off)."""
    path = os.environ.get(CACHE_ENV, DEFAULT_CACHE)
    if not path:
        return
    import jax
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
    # Cache every program: the train step compiles in seconds, not minutes.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def check_writable(path: str, flag: str) -> None:
    """Fails (one line, exit 2) unless `path` can be created or replaced."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        fail(f"{flag} {path}: folder {folder} does not exist")
    if os.path.isdir(path):
        fail(f"{flag} {path} is a folder")
    if not os.access(folder, os.W_OK):
        fail(f"{flag} {path}: folder {folder} is not writable")
