"""Shared pieces of the command-line entry points."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import shlex
import subprocess
import sys
import types
import typing
from typing import Any, NoReturn, Sequence

# Where compiled XLA programs are cached between runs (JAX's persistent cache).
CACHE_ENV = "GAN_COMPILE_CACHE"
DEFAULT_CACHE = os.path.join("~", ".cache", "cdcgan-jax", "xla")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: `prog: error: message`, exit code 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see --help)", self.prog)


def fail(message: str, prog: str | None = None, code: int = 2) -> NoReturn:
    """Prints one line to stderr, settings named as flags (`as_flags`), and
    exits with `code` (2: bad input) by raising SystemExit."""
    prog = prog or os.path.basename(sys.argv[0])
    print(f"{prog}: error: {as_flags(message)}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def set_up_process() -> None:
    """What every entry point installs before it imports JAX, TensorFlow or
    Orbax (the library changes no process-wide state itself):

    - TensorFlow (imported by TFDS only) and absl keep their notices quiet;
    - the noise of a failed Orbax save or restore is dropped (`_OrbaxNoise`);
      the one line the failure raises is what the user sees.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # silences a notice
    from absl import logging as absl_logging  # noqa: PLC0415 - light, no JAX
    absl_logging.set_verbosity(absl_logging.ERROR)  # TFDS's probing warnings
    noise = _OrbaxNoise()
    absl_logging.get_absl_logger().addFilter(noise.keep_log)
    logging.getLogger("asyncio").addFilter(noise.keep_log)
    noise.previous_hook = sys.unraisablehook
    sys.unraisablehook = noise.unraisable


class _OrbaxNoise:
    """When the first array of an Orbax save or restore fails (a full disk, a
    missing data chunk), Orbax's other writes or reads are abandoned: their
    callbacks find the event loop closed and their coroutines are never
    awaited. Python reports each on stderr, as an "unraisable" exception or
    through asyncio's logger ("Task exception was never retrieved"), from other
    threads, also at exit; Orbax's threads log the error, traceback and all:
    hundreds of lines around the one line `gan.checkpoint` raises. This drops
    exactly those reports, and nothing else."""

    previous_hook: Any = None

    @staticmethod
    def keep_log(log: logging.LogRecord) -> bool:
        if log.name == "asyncio":
            text = log.getMessage()
            return not ("never retrieved" in text
                        and ("orbax" in text or "TensorStore" in text))
        return not ("orbax" in log.pathname and log.levelno >= logging.ERROR)

    def unraisable(self, unraisable: Any) -> None:
        abandoned = ((isinstance(unraisable.exc_value, RuntimeError)
                      and "Event loop is closed" in str(unraisable.exc_value))
                     or "orbax" in repr(getattr(unraisable.object, "cr_code", "")))
        if not abandoned:
            self.previous_hook(unraisable)


def seed(text: str) -> int:
    """argparse type for seeds: an integer in [0, 2**32) (`gan.limits`)."""
    from gan import limits  # noqa: PLC0415 - light, no JAX
    try:
        return limits.check_seed(int(text))
    except limits.WriterError as e:
        raise argparse.ArgumentTypeError(as_flags(str(e))) from None


def comma_list(kind: type) -> Any:
    """argparse type for a comma-separated list, e.g. 0.99,0.9999 for floats."""
    def parse(text: str) -> tuple[Any, ...]:
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {kind.__name__}s like "
                f"{kind(1)},{kind(2)}, got {text!r}") from None
    parse.metavar = "X,Y"
    return parse


def flag_type(annotation: Any) -> tuple[Any, bool]:
    """(how a flag's text is read, whether None is allowed) for a field's type:
    int, float, str, bool, `X | None`, `Optional[X]` or `tuple[X, ...]`."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional, annotation = len(args) < len(typing.get_args(annotation)), args[0]
    if typing.get_origin(annotation) is tuple:
        return comma_list(typing.get_args(annotation)[0]), optional
    if annotation not in (int, float, str, bool):
        raise TypeError(f"no flag for fields of type {annotation}")
    return annotation, optional


_METAVARS = {int: "N", float: "X"}


def flag(name: str) -> str:
    """The command-line flag of a setting: `batch_size` -> `--batch-size`."""
    return "--" + name.replace("_", "-")


def as_flags(message: str) -> str:
    """A message from gan/ with its settings (`batch_size`) named as flags."""
    return re.sub(r"`(\w+)`", lambda m: flag(m.group(1)), message)


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of the dataclass `cls`, with its default and help.

    A field of type `X | None` defaults to None (its help says what that means);
    a bool field that defaults to True becomes `--no-<name>`.
    """
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        help_text, choices = as_flags(field.metadata["help"]), field.metadata["choices"]
        if field.metadata["recipe"]:
            help_text += " (recipe)"
        kind, _ = flag_type(hints[field.name])
        if kind is bool:
            if field.default:
                parser.add_argument(flag("no_" + field.name), dest=field.name,
                                    action="store_false", help=help_text + " (on "
                                    "unless this is given)")
            else:
                parser.add_argument(flag(field.name), action="store_true",
                                    help=help_text)
            continue
        default = (",".join(map(str, field.default)) if isinstance(field.default, tuple)
                   else field.default)
        if default not in (None, ""):
            help_text += f" (default: {default})"
        parser.add_argument(flag(field.name), type=kind, choices=choices,
                            metavar=getattr(kind, "metavar", _METAVARS.get(kind)),
                            default=field.default, help=help_text)


def settings(args: argparse.Namespace, cls: type) -> Any:
    """The dataclass `cls` made from parsed flags (see `add_flags`); a value it
    refuses is one line naming the flag, exit 2."""
    from gan.config import ConfigError  # noqa: PLC0415 - gan.config is light.
    try:
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
    except ConfigError as e:
        fail(str(e))


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


def check_xla_flags() -> None:
    """Fails (one line, exit 2) when XLA would refuse `$XLA_FLAGS`.

    XLA reads the variable when its first backend starts and ends the process
    on a flag it does not know, with a C++ fatal error. So when the variable is
    set, a probe process (CPU backend, ~2 s) starts XLA first.
    """
    flags = os.environ.get("XLA_FLAGS", "").strip()
    if not flags:
        return
    try:
        tokens = shlex.split(flags)   # XLA takes quoted values: --xla_dump_to="a b"
    except ValueError as e:
        fail(f"XLA_FLAGS={flags!r} cannot be read: {e}")
    for token in tokens:
        if not re.fullmatch(r"--\w+(=.*)?", token, re.S):
            fail(f"XLA_FLAGS holds {token!r}, not a flag like --xla_name=value")
    try:
        probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"],
                               capture_output=True, text=True, timeout=300,
                               env={**os.environ, "JAX_PLATFORMS": "cpu"})
    except subprocess.TimeoutExpired:
        return                        # undecided: let the run itself find out
    if probe.returncode != 0:
        lines = probe.stderr.strip().splitlines() or ["(no message)"]
        refused = next((line for line in lines if "XLA_FLAGS" in line), None)
        if refused:
            fail(f"XLA refuses XLA_FLAGS={flags!r}: {refused.split('] ')[-1].strip()}")
        fail(f"JAX does not start with XLA_FLAGS={flags!r}: {lines[-1].strip()}")


def check_writable(path: str, flag: str, reads: Sequence[str | None] = ()) -> None:
    """Fails (one line, exit 2) unless `path` can be created or replaced: among
    others, it must not be the shipped weights nor one of `reads` (files or
    folders the command reads), by any name (`gan.files.overwrite_problem`)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        fail(f"{flag} {path}: folder {folder} does not exist")
    from gan.files import not_replaceable, overwrite_problem  # noqa: PLC0415 - light
    problem = not_replaceable(path) or overwrite_problem(path, reads)
    if problem:
        fail(f"{flag} {path} {problem}")
    if not os.access(folder, os.W_OK) or (os.path.exists(path)
                                          and not os.access(path, os.W_OK)):
        fail(f"{flag} {path} is not writable")
    if folder.startswith(("/proc", "/sys")):
        fail(f"{flag} {path} is in a kernel file system")
