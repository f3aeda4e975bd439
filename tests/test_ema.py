"""The generator's weight average (gan.ema): the update, its BatchNorm
statistics, that it leaves training alone, and old files without it."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from gan import checkpoint, ema, loop, weights
from gan.config import Config, RunOptions
from gan.models import NOISE_DIM, Generator
from gan.training import create_train_states, train_step_on_data
from tests.synthetic import block_digits, write_idx_arrays

# Left out of the quick loop (`pytest -m "not slow"`): training runs.
pytestmark = pytest.mark.slow


def reference_decay(d: float, t: int) -> float:
    """The documented warm-up, written out: min(d, (1 + t) / (10 + t))."""
    return min(d, (1 + t) / (10 + t))


def _steps(config: Config, n: int):
    """`n` train steps from the same start; G's weights after each step too."""
    images, labels = (jnp.asarray(a) for a in block_digits(60, seed=2))
    g, d = create_train_states(config, jax.random.key(0))
    seen = [jax.device_get({"params": g.params, "batch_stats": g.batch_stats})]
    metrics = []
    for _ in range(n):
        g, d, m = train_step_on_data(g, d, images, labels, jax.random.key(4),
                                     batch_size=10)
        seen.append(jax.device_get({"params": g.params, "batch_stats": g.batch_stats}))
        metrics.append(jax.device_get(m))
    return g, d, seen, metrics


# Two configs for the whole module, so the train step compiles twice only.
PLAIN = Config(batch_size=10, ema_decay=0.0)
AVERAGED = Config(batch_size=10, ema_decay=0.999, ema_compare=(0.5,))


@pytest.fixture(scope="module")
def four_steps():
    return _steps(PLAIN, 4), _steps(AVERAGED, 4)


def test_average_leaves_training_bit_for_bit_unchanged_and_follows_the_formula(
        four_steps):
    """Four steps with and without averages: G's and D's states and the losses
    are identical bits (the average only reads the new weights). Each average
    equals the warm-up EMA of the weights after every step, computed here in
    float64 (rtol 1e-5: float32 rounding over four updates, measured ~1e-7)."""
    (g0, d0, seen, m0), (g1, d1, _, m1) = four_steps
    assert g0.ema == () and len(g1.ema) == 2
    for name in ("params", "batch_stats", "opt_state", "step"):
        for a, b in ((g0, g1), (d0, d1)):
            for x, y in zip(jax.tree.leaves(getattr(a, name)),
                            jax.tree.leaves(getattr(b, name)), strict=True):
                np.testing.assert_array_equal(x, y)
    assert m0 == m1
    for decay, average in zip((0.999, 0.5), g1.ema):
        want = jax.tree.map(lambda x: np.asarray(x, np.float64), seen[0])
        for t in range(1, 5):
            dt = reference_decay(decay, t)
            want = jax.tree.map(lambda e, w: dt * e + (1 - dt) * w, want, seen[t])
        for x, y in zip(jax.tree.leaves(average), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-9)
    # Not a copy of the last weights: the two decays differ from them and each other.
    last = jax.tree.leaves(seen[-1]["params"])
    for average in g1.ema:
        assert not all(np.array_equal(a, b) for a, b in
                       zip(jax.tree.leaves(average["params"]), last))


def test_decay_warms_up_then_holds():
    for d in (0.99, 0.999, 0.9999):
        for t in (1, 5, 50, 500, 5000, 50_000):
            np.testing.assert_allclose(float(ema.decay_at(d, t)), reference_decay(d, t),
                                       rtol=1e-6)


def test_recomputed_statistics_make_eval_mode_equal_train_mode(four_steps):
    """With statistics measured on a batch, eval mode on that batch computes what
    train mode does (which normalises with the batch's own statistics): the
    recomputed statistics are exactly the forward pass's. Weights from a few
    steps, so the statistics are not the initial ones. Tolerance 1e-4 of the
    [-1, 1] output: float32 means over 1,000 samples."""
    average = four_steps[1][0].ema[0]
    stats = ema.recompute_batch_stats(average)["batch_stats"]
    z = jax.random.normal(jax.random.key(ema.RECOMPUTE_SEED),
                          (ema.RECOMPUTE_SAMPLES, NOISE_DIM))
    labels = jnp.arange(ema.RECOMPUTE_SAMPLES) % 10
    apply = jax.jit(Generator().apply, static_argnames=("train", "mutable"))
    train_out, _ = apply(average, z, labels, train=True, mutable=("batch_stats",))
    eval_out = apply({"params": average["params"], "batch_stats": stats},
                     z, labels, train=False)
    np.testing.assert_allclose(eval_out, train_out, atol=1e-4)
    # ... which the averaged running statistics do not do.
    stale = apply(average, z, labels, train=False)
    assert float(jnp.max(jnp.abs(stale - train_out))) > 1e-2
    assert ema.for_sampling(average, "average") is average


def _tiny_run(tmp_path, config: Config, max_steps: int = 3) -> str:
    data_dir = tmp_path / "mnist"
    data_dir.mkdir(exist_ok=True)
    write_idx_arrays(data_dir, *block_digits(60))
    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(config, RunOptions(
        workdir=workdir, data_dir=str(data_dir), max_steps=max_steps, progress=False))
    return workdir


@pytest.mark.parametrize("mode", ["average", "recompute"])
def test_workdir_outputs_use_the_average(tmp_path, mode):
    """generator.msgpack holds the first average, with its averaged or its
    recomputed statistics per --ema-batch-stats, marked as such; load_sampler
    gives it from the workdir, and G's own weights with raw=True."""
    workdir = _tiny_run(tmp_path, dataclasses.replace(AVERAGED, ema_batch_stats=mode))
    restored = checkpoint.restore(workdir)
    assert restored.g_state.ema_decays == (0.999, 0.5)
    first = restored.g_state.ema[0]
    want = first if mode == "average" else ema.recompute_batch_stats(first)
    exported = weights.load(f"{workdir}/generator.msgpack")
    from_dir = weights.load(workdir)
    raw = weights.load(workdir, raw=True)
    assert exported.averaged and from_dir.averaged and not raw.averaged
    for x, y, z in zip(jax.tree.leaves(want), jax.tree.leaves(exported.variables),
                       jax.tree.leaves(from_dir.variables)):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    for x, y in zip(jax.tree.leaves(raw.variables),
                    jax.tree.leaves({"params": restored.g_state.params,
                                     "batch_stats": restored.g_state.batch_stats})):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(checkpoint.CheckpointError, match="only the averaged"):
        weights.load(f"{workdir}/generator.msgpack", raw=True)


def test_a_run_from_before_the_average_still_loads_and_resumes(tmp_path):
    """A workdir whose config.json predates the average (no ema fields) and has
    no average in its checkpoints: it restores, samples G's own weights, and
    resumes with --ema-decay 0; the default decay is refused in one line."""
    workdir = _tiny_run(tmp_path, PLAIN, max_steps=2)
    path = f"{workdir}/config.json"
    with open(path) as f:
        fields = json.load(f)
    for name in ("ema_decay", "ema_compare", "ema_batch_stats"):
        del fields[name]
    with open(path, "w") as f:
        json.dump(fields, f)
    restored = checkpoint.restore(workdir)
    assert restored.config.ema_decay == 0.0 and restored.g_state.ema == ()
    assert not weights.load(workdir).averaged
    with pytest.raises(loop.TrainError, match="`ema_decay` 0.0"):
        loop.train_and_evaluate(Config(batch_size=10), RunOptions(
            workdir=workdir, data_dir=str(tmp_path / "mnist"), max_steps=3,
            progress=False))
    loop.train_and_evaluate(PLAIN, RunOptions(
        workdir=workdir, data_dir=str(tmp_path / "mnist"), max_steps=3, progress=False))
    assert checkpoint.restore(workdir).step == 3


def test_a_generator_file_from_before_the_average_still_loads(tmp_path):
    """Files written before the average: no "weights" mark, a config without
    ema fields. They hold G's own weights, which --raw may ask for too."""
    config = Config(ema_decay=0.0)
    g, _ = create_train_states(config, jax.random.key(1))
    fields = {k: v for k, v in dataclasses.asdict(config).items()
              if not k.startswith("ema")}
    payload = {"variables": jax.device_get({"params": g.params,
                                            "batch_stats": g.batch_stats}),
               "step": 9, "config": json.dumps(fields)}
    path = tmp_path / "old.msgpack"
    path.write_bytes(serialization.msgpack_serialize(payload))
    for raw in (False, True):
        loaded = weights.load(str(path), raw=raw)
        assert loaded.step == 9 and not loaded.averaged
        assert loaded.config.ema_decay == 0.0
