"""What one may ask of a `DigitWriter`: the rules and limits shared by the
Python API, sample.py and the web page, so all three accept the same requests
and refuse the others with the same one-line `WriterError`. Light (no JAX):
the command line checks its flags with these before it imports anything big.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

# Seeds are 32-bit: a larger one would wrap around onto another seed's pixels.
MAX_SEED = 2**32 - 1
# Longest number `number` writes (characters, spaces included).
MAX_NUMBER = 64
# Most handwriting lines (or grid columns) per request.
MAX_STYLES = 64
# Most frames per handwriting or digit in a morph.
MAX_FRAMES = 100
# Most digits one call draws: about 10 s on a 2-core CPU, and ~0.4 MB each of
# activations per chunk. Bigger requests take several calls.
MAX_IMAGES = 10_000


class WriterError(ValueError):
    """A request no writer can fill (bad text, counts, seed); one line."""


def whole(name: str, value: Any, low: int, high: int) -> int:
    """`value` as an int, if it is a whole number in `low..high`: an int (numpy's
    too), or a float with a whole value (the web page's number box and JSON send
    floats). Not a bool, a string, None, NaN or infinity."""
    ok = False
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        ok = True
    elif (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value) and float(value).is_integer()):
        ok = True
    if not ok or not low <= int(value) <= high:
        raise WriterError(f"`{name}` must be a whole number between {low} and "
                          f"{high}, got {_shown(value)}")
    return int(value)


def check_seed(seed: Any) -> int:
    """The seed as an int in 0..MAX_SEED, else WriterError."""
    return whole("seed", seed, 0, MAX_SEED)


def check_count(name: str, value: Any, most: int) -> int:
    """The setting `name` as an int in 1..most, else WriterError."""
    return whole(name, value, 1, most)


def check_flag(name: str, value: Any) -> bool:
    """True or False, and nothing else (the string "no" is not False)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":  # numpy's too
        return bool(value)
    raise WriterError(f"`{name}` must be True or False, got {_shown(value)}")


def check_number(text: Any) -> str:
    """`text` if it is a string of 1..MAX_NUMBER digits and spaces."""
    if not isinstance(text, str):
        raise WriterError(f"the number must be text (digits and spaces, like "
                          f"'2026'), got {_shown(text)}")
    if not text.strip():
        raise WriterError("write at least one digit, like 2026")
    if len(text) > MAX_NUMBER:
        raise WriterError(f"numbers have at most {MAX_NUMBER} characters, got "
                          f"{len(text)}")
    bad = sorted({c for c in text if c not in "0123456789 "})
    if bad:
        raise WriterError("only digits 0-9 and spaces can be written, not "
                          + " ".join(repr(c) for c in bad[:10]))
    return text


def check_digits(digits: Any) -> str:
    """`digits` (a grid's rows) if it is a string of 1..MAX_NUMBER digits."""
    if (not isinstance(digits, str) or not digits or len(digits) > MAX_NUMBER
            or not set(digits) <= set("0123456789")):
        raise WriterError(f"`digits` must be 1 to {MAX_NUMBER} digits 0-9, like "
                          f"'2026'; got {_shown(digits)}")
    return digits


def check_work(images: int) -> None:
    """Refuses a call that would draw more than MAX_IMAGES digits."""
    if images > MAX_IMAGES:
        raise WriterError(f"this asks for {images:,} digits; one call draws at most "
                          f"{MAX_IMAGES:,} (ask in several calls)")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
