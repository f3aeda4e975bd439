"""One way to quote an error inside a one-line message."""

from __future__ import annotations

# Longest quoted text: a library's message can run to pages (Orbax, TFDS).
MAX_CHARS = 200


def one_line(error: BaseException) -> str:
    """`error` in one line: an OSError's reason (`No space left on device`), or
    else `Type: message`, whitespace folded and cut to MAX_CHARS."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = " ".join(str(error).split()) or "no details"
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS - 3] + "..."
    return f"{type(error).__name__}: {text}"


class TrainError(Exception):
    """A run that cannot start or go on; the message is one line."""


class CheckpointError(ValueError):
    """An unreadable, damaged or incompatible checkpoint, run record or weights
    file (a ValueError); the message is one line."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint or weights file that does not exist: a CheckpointError and
    a FileNotFoundError, for callers that catch either."""
