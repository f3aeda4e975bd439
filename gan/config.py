"""The one set of defaults: the seed's recipe."""

from __future__ import annotations

import dataclasses

# Precisions of `Config.compute_dtype`.
COMPUTE_DTYPES = ("float32", "bfloat16")
# BatchNorm statistics of G's weight average, `Config.ema_batch_stats` (gan.ema).
EMA_BATCH_STATS = ("recompute", "average")


@dataclasses.dataclass(frozen=True)
class Config:
    """Training configuration; `train.py` flags override these fields.

    Attributes:
      epochs: passes over the 60,000 training digits.
      batch_size: images per step, for D and for G.
      learning_rate: Adam's initial step size, for both networks.
      decay_steps: the step size is multiplied by `decay_rate` every this many steps.
      decay_rate: staircase exponential decay factor.
      beta1: Adam's first-moment decay (0.5, as DCGAN).
      seed: seeds initialisation, noise, label draws and data order.
      log_every: losses come to the host this often (steps).
      compute_dtype: precision of the convolutions and matmuls, "float32" (the
        seed's) or "bfloat16" (parameters, BatchNorm, losses and sampling stay
        float32); a recipe field: a run resumes with the same value.
      steps_per_call: train steps run per dispatch to the device, in one
        compiled loop (`gan.training.train_steps_on_data`); 1 dispatches each
        step on its own, which XLA:CPU runs much faster (see README "Speed").
      data_shards: the training set is cut into this many shards, each shuffled
        on its own and giving batch_size / data_shards examples per step; a
        multi-process run needs one per process (see gan.parallel).
      ema_decay: decay d of the generator's weight average (`gan.ema`), the
        weights that grids, generator.msgpack, sample.py and evaluate.py use;
        0 turns it off. A recipe field (the checkpoint holds the average).
        0.99 scored best of 0.99-0.9999 over 30 epochs (README "EMA").
      ema_compare: more decays averaged beside `ema_decay`, only to be scored
        by `--eval-every` (measuring which decay is best); a recipe field.
      ema_batch_stats: BatchNorm statistics for sampling from an average,
        "average" (an EMA of the running statistics) or "recompute" (measured
        for the averaged weights); see `gan.ema`. The two scored alike; the
        average needs no extra pass.
    """
    epochs: int = 30
    batch_size: int = 100
    learning_rate: float = 2e-4
    decay_steps: int = 500
    decay_rate: float = 0.95
    beta1: float = 0.5
    seed: int = 0
    log_every: int = 50
    compute_dtype: str = "float32"
    steps_per_call: int = 1
    data_shards: int = 1
    ema_decay: float = 0.99
    ema_compare: tuple[float, ...] = ()
    ema_batch_stats: str = "average"

    @property
    def ema_decays(self) -> tuple[float, ...]:
        """Decays of the averages a run keeps: `ema_decay` first, then
        `ema_compare`; none when `ema_decay` is 0."""
        return (self.ema_decay, *self.ema_compare) if self.ema_decay else ()
