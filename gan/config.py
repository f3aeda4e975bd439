"""Every setting of a run, in one place: the recipe (`Config`) and how a run is
carried out (`RunOptions`). `train.py` makes one flag per field.

A field's metadata holds its help text; `recipe=True` marks the fields that
define what a checkpoint means: a resumed run must match them. Values are
checked when a dataclass is made (`ConfigError`); messages name settings in
backticks (`batch_size`), which the command line shows as flags (--batch-size).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

# Precisions of `Config.compute_dtype`.
COMPUTE_DTYPES = ("float32", "bfloat16")
# BatchNorm statistics of G's weight average, `Config.ema_batch_stats` (gan.ema).
EMA_BATCH_STATS = ("recompute", "average")


class ConfigError(ValueError):
    """A setting no run can use; the message is one line."""


def setting(default: Any, help: str, *, recipe: bool = False,
            choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with its help text (and choices, when fixed)."""
    return dataclasses.field(default=default, metadata={
        "help": help, "recipe": recipe, "choices": choices})


def recipe_fields() -> tuple[str, ...]:
    """Names of the `Config` fields a resumed run must match."""
    return tuple(f.name for f in dataclasses.fields(Config) if f.metadata["recipe"])


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _check(value is None or (value > 0 and math.isfinite(value)),
               f"`{name}` must be positive, got {value}")


@dataclasses.dataclass(frozen=True)
class Config:
    """The training recipe (the seed's by default)."""
    epochs: int = setting(30, "passes over the training images (60,000 for MNIST; "
                          "may grow when resuming)")
    batch_size: int = setting(100, "images per step, for D and for G", recipe=True)
    learning_rate: float = setting(2e-4, "Adam's initial step size, for both "
                                   "networks", recipe=True)
    decay_steps: int = setting(500, "the step size is multiplied by `decay_rate` "
                               "every this many steps", recipe=True)
    decay_rate: float = setting(0.95, "staircase exponential decay factor",
                                recipe=True)
    beta1: float = setting(0.5, "Adam's first-moment decay (0.5, as DCGAN)",
                           recipe=True)
    seed: int = setting(0, "seeds initialisation, noise, label draws and data "
                        "order, in 0..2**32-1", recipe=True)
    compute_dtype: str = setting(
        "float32", "precision of the convolutions (bfloat16 for GPUs: parameters, "
        "BatchNorm, losses and sampling stay float32)", recipe=True,
        choices=COMPUTE_DTYPES)
    data_shards: int | None = setting(
        None, "cut the training set into this many independently shuffled "
        "shards, each giving `batch_size` / `data_shards` examples per step "
        "(default: one per process)", recipe=True)
    ema_decay: float = setting(
        0.99, "decay of the generator's weight average, which grids, "
        "generator.msgpack, sample.py and evaluate.py use (0: off; docs/quality.md)",
        recipe=True)
    ema_compare: tuple[float, ...] = setting(
        (), "more decays averaged beside `ema_decay`, e.g. 0.99,0.9999, each "
        "scored by `eval_every` (for choosing one)", recipe=True)
    ema_batch_stats: str = setting(
        "average", "BatchNorm statistics of the average: an average of the "
        "running statistics, or measured for its weights (gan.ema)",
        choices=EMA_BATCH_STATS)

    def __post_init__(self):
        _positive(self, "epochs", "batch_size", "learning_rate", "decay_steps",
                  "data_shards")
        _check(0 < self.decay_rate <= 1, f"`decay_rate` must be in (0, 1], "
               f"got {self.decay_rate}")
        _check(0 <= self.beta1 < 1, f"`beta1` must be in [0, 1), got {self.beta1}")
        _check(0 <= self.seed < 2**32, f"`seed` must be in 0..{2**32 - 1}, "
               f"got {self.seed}")
        for name in ("compute_dtype", "ema_batch_stats"):
            choices = Config.__dataclass_fields__[name].metadata["choices"]
            _check(getattr(self, name) in choices, f"`{name}` must be one of "
                   f"{', '.join(choices)}, got {getattr(self, name)!r}")
        _check(0 <= self.ema_decay < 1, "`ema_decay` must be in [0, 1) (0: no "
               f"average), got {self.ema_decay}")
        _check(all(0 < d < 1 for d in self.ema_compare), "`ema_compare` decays "
               "must be in (0, 1), got " + ",".join(map(str, self.ema_compare)))
        _check(not self.ema_compare or self.ema_decay > 0,
               "`ema_compare` needs `ema_decay` above 0")
        _check(len(set(self.ema_decays)) == len(self.ema_decays),
               "`ema_compare` decays must differ from each other and from "
               f"`ema_decay` {self.ema_decay}")

    @property
    def ema_decays(self) -> tuple[float, ...]:
        """Decays of the averages a run keeps: `ema_decay` first, then
        `ema_compare`; none when `ema_decay` is 0."""
        return (self.ema_decay, *self.ema_compare) if self.ema_decay else ()

    def with_shards(self, processes: int) -> Config:
        """This recipe with `data_shards` set (one per process when unset)."""
        return dataclasses.replace(self, data_shards=self.data_shards or processes)


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a run is carried out: where, how long, what it writes on the way."""
    workdir: str = setting("runs/cdcgan", "folder for checkpoints, logs and "
                           "sample grids; an existing run there is resumed")
    dataset: str = setting(
        "mnist", "what to train on: mnist, a TFDS set of 28x28 grayscale images "
        "(fashion_mnist, kmnist, emnist/letters, emnist/balanced, ...), or "
        "folder:PATH, a subfolder of pictures per class (docs/datasets.md)")
    data_dir: str | None = setting(
        None, "TFDS data dir (default: $TFDS_DATA_DIR, then ~/tensorflow_datasets, "
        "downloading if needed) or a folder holding the dataset's four IDX files")
    max_steps: int | None = setting(None, "stop after this many steps in total "
                                    "(smoke runs)")
    keep: int = setting(3, "checkpoints kept")
    checkpoint_every: int | None = setting(None, "also checkpoint every N steps "
                                           "(default: at epoch ends only)")
    eval_every: int | None = setting(
        None, "every N epochs score 1,000 samples (conditional accuracy, Frechet "
        "ratio; see evaluate.py) and log them beside the losses")
    classifier: str | None = setting(
        None, "the `eval_every` classifier file, trained there when missing "
        "(default: the one shipped in weights/)")
    devices: int | None = setting(None, "devices (per process) to split each "
                                  "batch over (default: all local devices)")
    coordinator: str | None = setting(None, "multi-process runs: host:port of "
                                      "process 0 (see README)")
    num_processes: int | None = setting(None, "multi-process runs: how many")
    process_id: int | None = setting(None, "multi-process runs: this one's index")
    coordinator_timeout: int = setting(
        120, "multi-process runs: seconds to wait at start for the coordinator and "
        "the other processes")
    log_every: int = setting(50, "steps between pulls of the losses to the host")
    steps_per_call: int = setting(
        1, "train steps per dispatch to the device, in one compiled loop (for "
        "GPUs; XLA:CPU runs such loops far slower, see docs/speed.md)")
    progress: bool = setting(True, "show a progress bar")

    def __post_init__(self):
        _positive(self, "max_steps", "keep", "checkpoint_every", "eval_every",
                  "coordinator_timeout", "log_every", "steps_per_call")
        for name in ("workdir", "data_dir", "classifier"):  # `--workdir=~/w` too
            if getattr(self, name):
                object.__setattr__(self, name, os.path.expanduser(getattr(self, name)))
