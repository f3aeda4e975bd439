"""Generator weights: the few MB that sampling needs, in msgpack (no pickle),
and the one answer to "which weights to sample" for sample.py, evaluate.py,
app.py and `DigitWriter`: a generator file, a train.py workdir, or by default
the generator shipped in weights/."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import numpy as np
from flax import serialization

from gan import checkpoint, checksum, ema, files, record
from gan.config import Config
from gan.datasets import DIGITS, MNIST
from gan.errors import CheckpointError, CheckpointNotFoundError, one_line
from gan.models import NOISE_DIM, Generator

# What each checkpoint of a run writes beside it (G's sampling variables).
GENERATOR_FILE = "generator.msgpack"
# The generator shipped with the repository (README, "Pretrained generator").
SHIPPED = os.path.join(files.WEIGHTS_DIR, GENERATOR_FILE)
# Reads of a workdir a run is writing: a step listed may be deleted (`keep`)
# before it is read; each attempt takes the newest step again.
LIVE_RUN_ATTEMPTS = 10
LIVE_RUN_PAUSE_S = 0.1


@dataclasses.dataclass
class GeneratorWeights:
    """A generator's variables and where they came from."""
    variables: dict[str, Any]  # {"params": ..., "batch_stats": ...}
    step: int
    config: Config
    averaged: bool = False  # the weight average (gan.ema), not G's own weights
    classes: tuple[str, ...] = DIGITS  # what label i draws (gan.datasets)
    dataset: str = MNIST    # the data it was trained on (`--dataset`)


def save(path: str, variables: dict[str, Any], step: int, config: Config,
         averaged: bool = False, classes: tuple[str, ...] = DIGITS,
         dataset: str = MNIST) -> None:
    """Writes G's variables, the step, the recipe and the class names to
    `path`, atomically.

    `averaged`: the variables are G's weight average (`gan.ema`); files from
    before it hold G's own weights and no such mark. Files from before class
    names were kept draw the digits of MNIST.
    """
    variables = jax.device_get(variables)
    payload = {"variables": variables, "step": step,
               "config": json.dumps(dataclasses.asdict(config)),
               "weights": "ema" if averaged else "raw",
               "classes": json.dumps(list(classes)), "dataset": dataset,
               checksum.DIGEST: checksum.digest(variables)}
    files.write_bytes(path, serialization.msgpack_serialize(payload))


def _template(num_classes: int) -> dict[str, Any]:
    z = jax.ShapeDtypeStruct((1, NOISE_DIM), np.float32)
    labels = jax.ShapeDtypeStruct((1,), np.int32)
    generator = Generator(num_classes=num_classes)
    return jax.eval_shape(lambda z, y: generator.init(jax.random.key(0), z, y),
                          z, labels)


def read_file(path: str) -> GeneratorWeights:
    """Reads a file written by `save`.

    Raises:
      CheckpointError: unreadable, damaged, or not this model's generator.
    """
    try:
        with open(path, "rb") as f:
            raw = serialization.msgpack_restore(f.read())
        variables, step = raw["variables"], int(raw["step"])
        config = record.config_of(json.loads(raw["config"]))
        averaged = raw.get("weights", "raw") == "ema"
        classes = record.check_classes(json.loads(raw.get("classes", "null")))
        dataset = str(raw.get("dataset", MNIST))
    except FileNotFoundError as e:  # removed since it was looked for
        raise CheckpointNotFoundError(f"cannot read generator weights {path}: "
                                      f"{one_line(e)}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read generator weights {path}: "
                              f"{one_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - msgpack raises many types.
        raise CheckpointError(f"{path} is not a generator weights file "
                              f"({type(e).__name__})") from None
    want = jax.tree.map(lambda a: (a.shape, np.dtype(a.dtype)),
                        _template(len(classes)))
    try:
        got = jax.tree.map(lambda a: (np.shape(a), np.asarray(a).dtype), variables)
    except Exception:  # noqa: BLE001
        got = None
    if want != got:
        raise CheckpointError(f"{path} does not hold this model's generator "
                              f"for its {len(classes)} classes (parameter names or "
                              "shapes differ)")
    if checksum.DIGEST not in raw:
        checksum.note_unverified(path)
    elif raw[checksum.DIGEST] != checksum.digest(variables):
        raise CheckpointError(f"{path} is damaged (its weights do not match their "
                              "checksum)")
    return GeneratorWeights(variables, step, config, averaged, classes, dataset)


def saved_step(path: str) -> int | None:
    """The step a generator file was saved at, None when it is missing or
    unreadable (read without checking the weights)."""
    try:
        with open(path, "rb") as f:
            return int(serialization.msgpack_restore(f.read())["step"])
    except Exception:  # noqa: BLE001 - missing, cut short, or not ours: unknown
        return None


def load(path: str | None = None, raw: bool = False) -> GeneratorWeights:
    """The weights to sample: from a generator file, from a train.py workdir
    (its newest checkpoint), or, with no `path`, the shipped generator.

    A workdir gives G's weight average when its run keeps one (`gan.ema`), or
    with `raw` G's own weights. A file holds one or the other.

    Raises:
      CheckpointNotFoundError: nothing at `path` (also a FileNotFoundError).
      CheckpointError: unreadable, damaged or another model's (a ValueError);
        also when `raw` is asked of a file holding the average.
    """
    if path == "":
        raise CheckpointError("an empty path names no weights; leave it out for the "
                              "shipped generator")
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"a checkpoint path is text, got {path!r:.40}")
    path = os.path.expanduser(SHIPPED if path is None else path)
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"checkpoint {path} does not exist")
    if os.path.isfile(path):
        weights = read_file(path)
        if raw and weights.averaged:
            raise CheckpointError(
                f"{path} holds only the averaged (EMA) generator; for G's own "
                "weights pass the train.py workdir it came from")
        return weights
    restored = _restore_newest(path)
    g_state = restored.g_state
    variables = ema.sampling_variables(g_state, restored.config.ema_batch_stats, raw)
    return GeneratorWeights(variables, restored.step, restored.config,
                            averaged=bool(g_state.ema) and not raw,
                            classes=restored.classes, dataset=restored.dataset)


def _restore_newest(workdir: str) -> checkpoint.Restored:
    """The newest checkpoint of a workdir, retried while a live run replaces it."""
    for attempt in range(LIVE_RUN_ATTEMPTS):
        newest = None
        try:
            newest = checkpoint.newest_step(workdir)
            return checkpoint.restore(workdir, newest)
        except CheckpointError:
            # Again only if a live run replaced the step under us (`keep`).
            if attempt == LIVE_RUN_ATTEMPTS - 1 or not checkpoint.replaced(workdir,
                                                                           newest):
                raise
            time.sleep(LIVE_RUN_PAUSE_S)
    raise AssertionError("unreachable")
