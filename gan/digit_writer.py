"""Digits, numbers and morphs on request: the Python API behind sample.py and
app.py.

    from gan import DigitWriter
    writer = DigitWriter.load()                     # weights/generator.msgpack
    lines = writer.number("2026", styles=4).images  # uint8 [4, 4, 28, 28]
    grid = writer.grid("0123456789", per_digit=10)  # uint8 [10, 10, 28, 28]
    writer.classes                                  # ("0", ..., "9"): what it draws
    mine = writer.style_from(Image.open("my7.png"))  # your handwriting
    writer.number("2026", style=mine)               # 2026 written in it

A generator trained on other data (`train.py --dataset`) draws its classes:
`grid(["Sneaker", "Bag"])` (names or indices) and `digit_morph` work for any,
numbers and handwriting need the digits 0-9.

Everything random follows from `seed`: the same call gives the same pixels.
Every argument is checked (`gan.limits`, the rules sample.py and the web page
share): a bad one is a one-line `WriterError` (a ValueError).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import numpy as np

from gan import datasets, handwriting, sampling, weights
from gan.datasets import DIGITS
from gan.handwriting import HandwritingError, Style
# The request rules (shared with sample.py and the web page), re-exported here.
from gan.limits import (MAX_FRAMES, MAX_IMAGES, MAX_NUMBER, MAX_STYLES,  # noqa: F401
                        WriterError, check_count, check_digits, check_flag,
                        check_number, check_seed, check_work, whole)
from gan.models import NOISE_DIM, generator_classes

# A verified digit must be read as itself with at least this probability.
MIN_CONFIDENCE = 0.9
# Fresh draws a line (or digit) gets before its last draw is kept as it is.
MAX_REDRAWS = 20
# A digit whose label is not given must be read with at least this probability;
# below it, `style_from` asks for the label rather than guess.
STYLE_CONFIDENCE = 0.9
# A misread line written in a given style is redrawn near it: the style's z
# plus fresh noise of this scale times the attempt (0.1, 0.2, ..., 2.0; the
# style's own |z| is about 10), so a stubborn line moves further each time.
STYLE_JITTER = 0.1

# (images uint8 [N, 28, 28]) -> (digit read [N], its probability [N]).
Reader = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass
class Number:
    """A number written in `styles` handwritings, one line each."""
    text: str
    images: np.ndarray   # uint8 [styles, len(text), 28, 28]; spaces are black cells
    redrawn: int         # lines redrawn because a digit was misread (verify)
    unverified: int      # lines still misread after MAX_REDRAWS draws

    def digits(self) -> dict[str, np.ndarray]:
        """The digit cells, line by line: `images` uint8 `[N, 28, 28]`, `labels`,
        and each one's `line` and `position` (index in `text`)."""
        positions, digits = cells(self.text)
        lines = np.repeat(np.arange(len(self.images), dtype=np.int32), len(positions))
        return {"images": self.images[:, positions].reshape(-1, 28, 28),
                "labels": np.tile(digits, len(self.images)),
                "line": lines, "position": np.tile(positions, len(self.images))}


def classifier_reader(params: Any) -> Reader:
    """A Reader from the MNIST classifier's parameters (`gan.classifier`)."""
    from gan import classifier  # noqa: PLC0415 - only when verifying.

    def read(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, _ = classifier.predict(params, images)      # [N, 10], padded batches
        # Softmax in numpy: jax.nn.softmax here compiled a program per N.
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs = e / e.sum(axis=-1, keepdims=True)
        return probs.argmax(axis=-1), probs.max(axis=-1)
    return read


class DigitWriter:
    """A generator's weights (and, to verify, a reader of digits).

    Args:
      variables: G's `params` and `batch_stats` (e.g. from `gan.weights.load`).
      reader: reads digits for `verify=True`; default: the shipped classifier
        (another dataset's: `classifier.msgpack` beside `source`), loaded when
        first needed.
      classes: what label i draws (MNIST's digits "0" to "9" by default).
      source: the generator file or workdir it came from.
    """

    def __init__(self, variables: Any, reader: Reader | None = None,
                 step: int | None = None, averaged: bool = False,
                 classes: tuple[str, ...] = DIGITS, source: str | None = None,
                 dataset: str = datasets.MNIST):
        self.variables, self._reader = variables, reader
        self.step, self.averaged = step, averaged
        self.classes, self.source, self.dataset = tuple(classes), source, dataset
        self._classifier_params: Any = None
        if generator_classes(variables) != len(self.classes):
            raise WriterError(f"the generator draws {generator_classes(variables)} "
                              f"classes, but {len(self.classes)} names were given")

    @classmethod
    def load(cls, path: str | None = None, raw: bool = False,
             reader: Reader | None = None) -> DigitWriter:
        """From a generator file or a train.py workdir (default: the shipped
        generator, `gan.weights.load`).

        Raises:
          CheckpointNotFoundError: nothing at `path` (a FileNotFoundError).
          CheckpointError: an unreadable or unusable one (a ValueError).
          WriterError: `raw` is not True or False.
        """
        generator = weights.load(path, raw=check_flag("raw", raw))
        return cls(generator.variables, reader, generator.step, generator.averaged,
                   generator.classes, path or weights.SHIPPED, generator.dataset)

    @property
    def writes_digits(self) -> bool:
        """Whether its classes are the digits 0-9 (numbers can be written)."""
        return datasets.is_digits(self.classes)

    @property
    def classifier_params(self) -> Any:
        """The classifier's parameters, loaded when first needed: the shipped
        one for MNIST, or for other data the one beside `source`
        (`classifier.path_for`, trained by evaluate.py or train.py --eval-every)."""
        if self._classifier_params is None:
            from gan import classifier  # noqa: PLC0415
            path = classifier.path_for(self.dataset, self.source or ".")
            if path != classifier.SHIPPED and not os.path.exists(path):
                raise WriterError(
                    f"reading {datasets.describe(self.classes)} needs their "
                    f"classifier, {path}, which is not there yet: `evaluate.py "
                    f"--checkpoint {self.source}` trains it")
            try:
                loaded = classifier.check_made_for(classifier.load(path), path,
                                                   self.classes)
            except classifier.ClassifierError as e:
                raise WriterError(str(e)) from None
            self._classifier_params = loaded.params
        return self._classifier_params

    def _need_digits(self, what: str) -> None:
        """Raises WriterError unless this generator draws the digits 0-9."""
        if not self.writes_digits:
            raise WriterError(f"{what} needs a generator of the digits 0-9; this one "
                              f"draws {datasets.describe(self.classes)}: draw them in a "
                              "grid")

    def class_rows(self, wanted: Any) -> list[int]:
        """Labels of a grid's rows: None for every class; for a digit generator a
        string of digits ("2026"); else class names or indices, as a sequence or
        one comma-separated string ("Sneaker,Bag")."""
        if wanted is None:
            return list(range(len(self.classes)))
        if self.writes_digits and not isinstance(wanted, (list, tuple)):
            return [int(c) for c in check_digits(wanted)]
        items = wanted.split(",") if isinstance(wanted, str) else wanted
        try:
            items = list(items)
        except TypeError:
            raise WriterError(f"`digits` must be class names or indices, got "
                              f"{wanted!r:.40}") from None
        if not items:
            raise WriterError("`digits` names no class")
        try:
            return [datasets.class_index(self.classes, item.strip()
                                         if isinstance(item, str) else item)
                    for item in items]
        except ValueError as e:
            raise WriterError(str(e)) from None

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            self._reader = classifier_reader(self.classifier_params)
        return self._reader

    def style_from(self, picture: Any, label: int | None = None,
                   seed: int = 0) -> Style:
        """The handwriting of one digit the user drew or photographed, for
        `number(..., style=)` and `grid(..., style=)` (`gan.handwriting`).

        Args:
          picture: a PIL image or a 2-D array (`handwriting.prepare`).
          label: which digit it is; by default the classifier reads it, and
            asks for the label when it is less than STYLE_CONFIDENCE sure.
          seed: of the inversion's random starts: the same picture and seed
            give the same style.

        Raises:
          HandwritingError (a WriterError): no digit in the picture, a label
            that is not 0-9, or a digit the classifier cannot read surely.
        """
        self._need_digits("handwriting")
        source = handwriting.prepare(picture)
        seed = check_seed(seed)
        if label is None:
            read, confidence = self.reader(source[None])
            if float(confidence[0]) < STYLE_CONFIDENCE:
                raise HandwritingError(
                    f"this digit reads as a {int(read[0])} with only "
                    f"{float(confidence[0]):.0%} confidence; say which digit it is "
                    "(`label`)")
            label = int(read[0])
        label = whole("label", label, 0, len(self.classes) - 1)
        return handwriting.fit_style(self.variables, self.classifier_params, source,
                                     label, seed)

    def draw(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """uint8 `[N, 28, 28]` for noise `[N, NOISE_DIM]` and labels: int `[N]`, or
        float `[N, C]` label vectors (one-hot rows give the int labels' digits)."""
        return sampling.generate_uint8(self.variables, np.asarray(z, np.float32),
                                       np.asarray(labels))

    def grid(self, digits: Any = None, per_digit: int = 10, seed: int = 0,
             verify: bool = False, style: Style | None = None
             ) -> tuple[np.ndarray, int]:
        """A row per class, a column per noise vector (the same down a column):
        uint8 `[rows, per_digit, 28, 28]`, and the cells redrawn. `digits`: the
        rows (`class_rows`; default every class). With a `style` (`style_from`)
        every cell is written in it."""
        rows = self.class_rows(digits)
        per_digit = check_count("per_digit", per_digit, MAX_IMAGES)
        seed, verify = check_seed(seed), check_flag("verify", verify)
        check_style(style)
        check_work(len(rows) * per_digit)
        key = jax.random.key(seed)
        z, labels = sampling.digit_rows(key, rows, per_digit)
        if style is not None:
            z[:] = style.z
        images = self.draw(z, labels)
        redrawn = 0
        if verify:  # each misread cell on its own, with fresh noise
            images, redrawn, _ = self._verified(images, z, labels, key,
                                                np.arange(len(labels)), style)
        return images.reshape(len(rows), per_digit, 28, 28), redrawn

    def number(self, text: str, styles: int = 1, seed: int = 0,
               verify: bool = False, style: Style | None = None) -> Number:
        """`text` (digits and spaces) written `styles` times, each line in one
        handwriting: the same noise vector for every digit of a line. With a
        `style` (`style_from`) every line is written in it."""
        text, styles = check_number(text), check_count("styles", styles, MAX_STYLES)
        seed, verify = check_seed(seed), check_flag("verify", verify)
        check_style(style)
        self._need_digits("a number")
        key = jax.random.key(seed)
        positions, digits = cells(text)
        labels = np.tile(digits, styles)
        lines = np.repeat(np.arange(styles), len(positions))
        noise = (line_noise(key, styles) if style is None
                 else np.tile(style.z, (styles, 1)))                # [styles, 100]
        z = noise[lines]                                         # [styles * L', 100]
        drawn = self.draw(z, labels)
        redrawn = unverified = 0
        if verify:  # a misread digit redraws its whole line: one handwriting
            drawn, redrawn, unverified = self._verified(drawn, z, labels, key, lines,
                                                        style)
        return Number(text, place(drawn, text, styles), redrawn, unverified)

    def style_morph(self, text: str, styles: int = 4, frames_per_style: int = 12,
                    seed: int = 0) -> np.ndarray:
        """`text` morphing through `styles` handwritings and back to the first:
        uint8 `[styles * frames_per_style, len(text), 28, 28]`, a frame per line,
        along great circles between the lines' noise vectors (`slerp`)."""
        text, styles = check_number(text), check_count("styles", styles, MAX_STYLES)
        frames_per_style = check_count("frames_per_style", frames_per_style, MAX_FRAMES)
        seed = check_seed(seed)
        self._need_digits("a number")
        check_work(styles * frames_per_style * len(text.replace(" ", "")))
        noise = line_noise(jax.random.key(seed), styles)
        t = np.arange(frames_per_style) / frames_per_style
        path = np.concatenate([slerp(noise[i], noise[(i + 1) % styles], t)
                               for i in range(styles)])          # [F, NOISE_DIM]
        positions, digits = cells(text)
        drawn = self.draw(np.repeat(path, len(positions), axis=0),
                          np.tile(digits, len(path)))
        return place(drawn, text, len(path))

    def digit_morph(self, styles: int = 8, frames_per_digit: int = 8,
                    seed: int = 0) -> np.ndarray:
        """Each class turning into the next (the digits: 0 to 1 to ... to 9) and
        back to the first, in `styles` handwritings: uint8 `[C * frames_per_digit,
        styles, 28, 28]` for C classes. The label input moves in a straight line between
        one-hot vectors."""
        styles = check_count("styles", styles, MAX_STYLES)
        frames_per_digit = check_count("frames_per_digit", frames_per_digit, MAX_FRAMES)
        seed = check_seed(seed)
        count = len(self.classes)
        check_work(count * frames_per_digit * styles)
        t = (np.arange(frames_per_digit) / frames_per_digit)[:, None]
        eye = np.eye(count, dtype=np.float32)
        vectors = np.concatenate([(1 - t) * eye[d] + t * eye[(d + 1) % count]
                                  for d in range(count)])        # [F, C]
        noise = line_noise(jax.random.key(seed), styles)
        drawn = self.draw(np.tile(noise, (len(vectors), 1)),
                          np.repeat(vectors, styles, axis=0).astype(np.float32))
        return drawn.reshape(len(vectors), styles, 28, 28)

    def _verified(self, images: np.ndarray, z: np.ndarray, labels: np.ndarray,
                  key: jax.Array, groups: np.ndarray, style: Style | None = None
                  ) -> tuple[np.ndarray, int, int]:
        """Redraws every group (line or cell) holding a misread digit with fresh
        noise, one vector per group, up to MAX_REDRAWS times; in a `style`, with
        the style's noise plus fresh noise growing by STYLE_JITTER per attempt."""
        images, z = images.copy(), z.copy()
        redrawn, bad = set(), self._misread_groups(images, labels, groups)
        for attempt in range(1, MAX_REDRAWS + 1):
            if not len(bad):
                break
            redrawn.update(bad.tolist())
            fresh = np.asarray(jax.random.normal(jax.random.fold_in(key, attempt),
                                                 (groups.max() + 1, NOISE_DIM)))
            if style is not None:
                fresh = style.z + STYLE_JITTER * attempt * fresh
            rows = np.isin(groups, bad)
            z[rows] = fresh[groups[rows]]
            images[rows] = self.draw(z[rows], labels[rows])
            bad = self._misread_groups(images, labels, groups)
        return images, len(redrawn), len(bad)

    def _misread_groups(self, images: np.ndarray, labels: np.ndarray,
                        groups: np.ndarray) -> np.ndarray:
        read, confidence = self.reader(images)
        wrong = (np.asarray(read) != labels) | (np.asarray(confidence) < MIN_CONFIDENCE)
        return np.unique(groups[wrong])


def check_style(style: Any) -> None:
    """Raises WriterError unless `style` is None or a `Style` (`style_from`)."""
    if style is not None and not isinstance(style, Style):
        raise WriterError(f"`style` must come from DigitWriter.style_from, got "
                          f"{type(style).__name__}")


def cells(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(positions, digits) of the digit characters of `text`, int32 each."""
    positions = [i for i, c in enumerate(text) if c != " "]
    return (np.array(positions, np.int32),
            np.array([int(text[i]) for i in positions], np.int32))


def place(drawn: np.ndarray, text: str, lines: int) -> np.ndarray:
    """Digits drawn line by line, uint8 `[lines * D, 28, 28]`, laid out as
    `[lines, len(text), 28, 28]` with black cells for the spaces."""
    positions, _ = cells(text)
    out = np.zeros((lines, len(text), 28, 28), np.uint8)
    out[:, positions] = drawn.reshape(lines, len(positions), 28, 28)
    return out


def line_noise(key: jax.Array, styles: int) -> np.ndarray:
    """One noise vector per handwriting line, float32 `[styles, NOISE_DIM]`."""
    return np.asarray(jax.random.normal(key, (styles, NOISE_DIM)), np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points `[len(t), D]` on the great circle from `a` (t = 0) to `b` (t = 1),
    their norms interpolated linearly: Gaussian noise lives near a sphere, and a
    straight line between two samples passes through unlikely short vectors."""
    t = np.asarray(t, np.float64)[:, None]
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    ua, ub = a / na, b / nb
    omega = np.arccos(np.clip(ua @ ub, -1.0, 1.0))
    if omega < 1e-6:  # (nearly) the same direction
        direction = (1 - t) * ua + t * ub
    else:
        direction = (np.sin((1 - t) * omega) * ua + np.sin(t * omega) * ub) / np.sin(omega)
    return (((1 - t) * na + t * nb) * direction).astype(np.float32)
