"""An exponential moving average (EMA) of the generator's weights.

Samples from an average of G's recent weights are smoother and more varied than
from its last weights (Karras et al. 2018; Yazici et al. 2019). After each G
update, inside the jitted step:

    d_t = min(d, (1 + t) / (WARMUP + t))      # t: G updates so far
    ema = d_t * ema + (1 - d_t) * weights

The warm-up (TensorFlow's `ExponentialMovingAverage(num_updates=t)` form) keeps
the average's horizon, about 1 / (1 - d_t) = (WARMUP + t) / (WARMUP - 1) steps,
to roughly the last ninth of training until `d` caps it: early on G moves fast,
and a long window would reach back to much worse weights (and to the
initialisation, which a plain EMA weighs by d^t).

BatchNorm: G normalises with running statistics when sampling, and the running
statistics of the raw weights do not fit averaged weights. Two ways are kept:
"average" (an EMA of the running statistics, alongside the weights) and
"recompute" (statistics measured for the averaged weights from one train-mode
forward pass, as SWA does); `Config.ema_batch_stats` picks one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gan import sampling
from gan.models import BN_MOMENTUM, NOISE_DIM, Generator, generator_classes

WARMUP = 10.0
# Noise vectors (digits in turn) of the "recompute" forward pass: statistics of
# 1,000 samples, an error of about 3% of a channel's spread in its mean.
RECOMPUTE_SAMPLES = 1000
RECOMPUTE_SEED = 0

Variables = dict[str, Any]  # {"params": ..., "batch_stats": ...}


def decay_at(decay: float, step: jax.Array) -> jax.Array:
    """The decay used after G update number `step` (1 for the first): warm-up."""
    t = jnp.asarray(step, jnp.float32)
    return jnp.minimum(jnp.float32(decay), (1.0 + t) / (WARMUP + t))


def init(variables: Variables, decays: tuple[float, ...]) -> tuple[Variables, ...]:
    """One average per decay, started at `variables` (copies, never aliases)."""
    return tuple(jax.tree.map(jnp.array, variables) for _ in decays)


def update(averages: tuple[Variables, ...], variables: Variables,
           decays: tuple[float, ...], step: jax.Array) -> tuple[Variables, ...]:
    """Each average moved towards `variables` with its decay at `step`."""
    out = []
    for average, decay in zip(averages, decays):
        d = decay_at(decay, step)
        out.append(jax.tree.map(lambda e, v: d * e + (1.0 - d) * v, average, variables))
    return tuple(out)


@jax.jit
def recompute_batch_stats(variables: Variables) -> Variables:
    """`variables` with BatchNorm statistics measured for its weights.

    One train-mode forward pass over RECOMPUTE_SAMPLES noise vectors (classes in
    turn, fixed seed: the result is a function of the weights). Starting from
    zero statistics, one BatchNorm update leaves `(1 - momentum) * batch_stat`,
    so dividing by `1 - momentum` gives the batch's own mean and variance.
    """
    z = jax.random.normal(jax.random.key(RECOMPUTE_SEED), (RECOMPUTE_SAMPLES, NOISE_DIM))
    num_classes = generator_classes(variables)
    labels = jnp.arange(RECOMPUTE_SAMPLES) % num_classes
    zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
    _, new = Generator(num_classes=num_classes).apply(
        {"params": variables["params"], "batch_stats": zeros}, z, labels, train=True,
        mutable=["batch_stats"])
    stats = jax.tree.map(lambda s: s / (1.0 - BN_MOMENTUM), new["batch_stats"])
    return {"params": variables["params"], "batch_stats": stats}


def label(decay: float, batch_stats_mode: str) -> str:
    """The name an average is logged and exported under: `ema0.99_average`."""
    return f"ema{decay!r}_{batch_stats_mode}"


def for_sampling(average: Variables, batch_stats_mode: str) -> Variables:
    """The variables to sample from an average with, per `batch_stats_mode`."""
    if batch_stats_mode == "recompute":
        return recompute_batch_stats(average)
    if batch_stats_mode == "average":
        return average
    raise ValueError(f"unknown batch_stats mode {batch_stats_mode!r}")


def sampling_variables(g_state: Any, batch_stats_mode: str, raw: bool = False
                       ) -> Variables:
    """What to sample with from G's train state: its first average (with
    `batch_stats_mode` statistics) when it keeps one, else (or with `raw`) its
    own weights and running statistics."""
    if g_state.ema and not raw:
        return for_sampling(g_state.ema[0], batch_stats_mode)
    return sampling.g_variables(g_state)
