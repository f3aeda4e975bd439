"""Losses, schedule, the train step's update structure, and that learning works."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan import sampling
from gan.config import Config
from gan.data import to_float
from gan.models import NOISE_DIM, Generator
from gan.training import (batch_indices, bce_with_logits, create_train_states,
                          learning_rate_schedule, make_optimizer, train_step,
                          train_step_on_data, train_steps_on_data)
from tests.synthetic import block_digits, classify_blocks

B = 8


def numpy_bce(logits, target):
    x = np.asarray(logits, np.float64)
    p = 1 / (1 + np.exp(-x))
    return np.mean(-(target * np.log(p) + (1 - target) * np.log(1 - p)))


@pytest.mark.parametrize("target", [0.0, 1.0])
def test_bce_equals_numpy_sigmoid_cross_entropy(target):
    logits = np.linspace(-8, 8, 33).astype(np.float32)
    np.testing.assert_allclose(bce_with_logits(jnp.asarray(logits), target),
                               numpy_bce(logits, target), rtol=1e-5)


def test_schedule_is_the_seeds_staircase_decay():
    schedule = learning_rate_schedule(Config())
    for step in [0, 1, 499, 500, 501, 999, 1000, 17_999]:
        np.testing.assert_allclose(schedule(step), 2e-4 * 0.95 ** (step // 500),
                                   rtol=1e-6)


def test_batch_indices_visit_every_example_once_per_epoch():
    key = jax.random.key(0)
    n, b = 23, 5                                  # 4 steps per epoch, 3 left over
    epoch0 = np.concatenate([batch_indices(key, s, n, b) for s in range(4)])
    epoch1 = np.concatenate([batch_indices(key, s, n, b) for s in range(4, 8)])
    assert len(set(epoch0.tolist())) == 20 and len(set(epoch1.tolist())) == 20
    assert not np.array_equal(epoch0, epoch1)     # a fresh order each epoch


def _batch():
    images, labels = block_digits(B, seed=1)
    return {"image": to_float(jnp.asarray(images)), "label": jnp.asarray(labels)}


def assert_same_gradients(state, grads):
    """The gradient a step used, read from Adam's first moment (1 - b1) * g.

    Parameters are not compared: Adam's first step moves each weight by about
    lr * sign(g), which turns rounding-level differences in near-zero gradients
    into full-size ones. Tolerance: 1e-4 of the network's largest gradient (the
    biases of layers followed by BatchNorm have exactly-zero true gradients, so
    only rounding noise is there to compare).
    """
    mu = state.opt_state[0].mu
    scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads))
    for m, g in zip(jax.tree.leaves(mu), jax.tree.leaves(grads)):
        np.testing.assert_allclose(np.asarray(m) / (1 - Config().beta1), g,
                                   atol=1e-4 * scale, rtol=1e-3)


@pytest.mark.slow
def test_step_updates_equal_separate_d_then_g_updates():
    """D's update uses G's old params; G's update uses D's new params; each
    update touches only its own network. Recomputed here with two separate D
    calls (real, then fake), as the seed, against the fused step."""
    num_classes = 10
    g, d = create_train_states(Config(), jax.random.key(0))
    batch, key = _batch(), jax.random.key(3)
    new_g, new_d, metrics = jax.jit(train_step)(g, d, batch, key)

    d_noise, g_noise, g_label = jax.random.split(key, 3)
    z = jax.random.normal(d_noise, (B, NOISE_DIM))
    fake, g_upd = g.apply_fn({"params": g.params, "batch_stats": g.batch_stats},
                             z, batch["label"], train=True, mutable=["batch_stats"])

    def d_loss(params):
        stats = d.batch_stats
        real_logits, upd = d.apply_fn({"params": params, "batch_stats": stats},
                                      batch["image"], batch["label"],
                                      mutable=["batch_stats"])
        fake_logits, upd = d.apply_fn({"params": params, "batch_stats": upd["batch_stats"]},
                                      fake, batch["label"], mutable=["batch_stats"])
        loss = bce_with_logits(real_logits, 1.0) + bce_with_logits(fake_logits, 0.0)
        return loss, upd["batch_stats"]

    (loss, d_stats), grads = jax.jit(jax.value_and_grad(d_loss, has_aux=True))(d.params)
    np.testing.assert_allclose(metrics["d_loss"], loss, rtol=1e-5)
    assert_same_gradients(new_d, grads)

    labels = jax.random.randint(g_label, (B,), 0, num_classes)
    z = jax.random.normal(g_noise, (B, NOISE_DIM))
    g_stats = g_upd["batch_stats"]

    def g_loss(params):
        fake = g.apply_fn({"params": params, "batch_stats": g_stats}, z, labels,
                          mutable=["batch_stats"])[0]
        # D's params after its update (compared above through its gradient).
        logits, upd = d.apply_fn({"params": new_d.params, "batch_stats": d_stats},
                                 fake, labels, mutable=["batch_stats"])
        return bce_with_logits(logits, 1.0), upd["batch_stats"]

    (loss, d_stats), grads = jax.jit(jax.value_and_grad(g_loss, has_aux=True))(
        g.params)
    # Every train-mode D call updates D's running statistics: real, fake, G's fake.
    for a, b in zip(jax.tree.leaves(new_d.batch_stats), jax.tree.leaves(d_stats)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["g_loss"], loss, rtol=1e-5)
    assert_same_gradients(new_g, grads)
    # Both states moved, and both step counters.
    assert int(new_g.step) == int(new_d.step) == 1
    for old, new in ((g, new_g), (d, new_d)):
        moved = [not np.array_equal(a, b) for a, b in
                 zip(jax.tree.leaves(old.params), jax.tree.leaves(new.params))]
        assert all(moved)


@pytest.mark.slow
def test_the_step_asks_g_for_the_datasets_classes():
    """For a dataset of 3 classes (`--dataset`) G's update draws its labels
    from those 3: its loss is recomputed here from G's old params and D's new
    ones (train-mode BatchNorm normalises by the batch, so the running
    statistics play no part). Labels from all ten would give another loss."""
    g, d = create_train_states(Config(), jax.random.key(0), 3)
    batch, key = _batch(), jax.random.key(3)
    batch["label"] = batch["label"] % 3
    _, new_d, metrics = jax.jit(train_step)(g, d, batch, key)
    _, g_noise, g_label = jax.random.split(key, 3)
    labels = jax.random.randint(g_label, (B,), 0, 3)
    z = jax.random.normal(g_noise, (B, NOISE_DIM))
    fake, _ = g.apply_fn({"params": g.params, "batch_stats": g.batch_stats}, z, labels,
                         train=True, mutable=["batch_stats"])
    logits, _ = d.apply_fn({"params": new_d.params, "batch_stats": d.batch_stats}, fake,
                           labels, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(metrics["g_loss"], bce_with_logits(logits, 1.0), rtol=1e-5)


@pytest.mark.slow
def test_steps_in_one_call_equal_single_steps():
    """`train_steps_on_data` runs the steps that single calls run: same batches,
    keys, gradients and statistics. Three steps as calls of 2 and 1 (one program,
    `max_steps=2`) against three single steps, from the same states.

    The loop body is compiled on its own, so sums round differently, and two
    effects magnify rounding: Adam's sign-like early steps turn rounding-level
    gradient differences into full-size weight differences (see
    assert_same_gradients), and at initialisation G's gradient is badly
    conditioned (a 1e-6 relative change of G's weights moves the gradients of its
    inner layers by ~40%; a plain op-by-op evaluation of the same step differs
    from the jitted one as much). So: learning rate 1e-7 to keep the two runs
    together; losses rtol 1e-4 (measured up to 4e-6: the rounding above,
    compounded over the steps), BatchNorm statistics rtol 1e-5; the gradients,
    read from Adam's first moments, 1e-4 of their norm for D and 3e-2 for G's
    last layer, the G gradient that is best conditioned (measured 3e-6 and 4e-3).
    Another key changes these three by 0.65, 0.9 and 0.1.
    """
    images, labels = (jnp.asarray(a) for a in block_digits(60, seed=2))
    key = jax.random.key(4)
    g, d = create_train_states(Config(batch_size=10, learning_rate=1e-7),
                               jax.random.key(0))
    g1, d1 = jax.tree.map(jnp.copy, (g, d))
    single = []
    for _ in range(3):
        g1, d1, m = train_step_on_data(g1, d1, images, labels, key, batch_size=10)
        single.append(m)
    g3, d3, first = train_steps_on_data(g, d, images, labels, key, np.int32(2),
                                        batch_size=10, max_steps=2)
    g3, d3, second = train_steps_on_data(g3, d3, images, labels, key, np.int32(1),
                                         batch_size=10, max_steps=2)
    for name in single[0]:
        np.testing.assert_allclose(np.concatenate([first[name], second[name][:1]]),
                                   [float(m[name]) for m in single], rtol=1e-4)
        assert float(second[name][1]) == 0.0          # the row no step filled
    assert int(g3.step) == int(d3.step) == 3
    for a, b in ((g1, g3), (d1, d3)):
        for x, y in zip(jax.tree.leaves(a.batch_stats), jax.tree.leaves(b.batch_stats)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)

    def relative_error(x, y):
        x, y = (jnp.concatenate([v.ravel() for v in jax.tree.leaves(t)]) for t in (x, y))
        return float(jnp.linalg.norm(x - y) / jnp.linalg.norm(x))

    assert relative_error(d1.opt_state[0].mu, d3.opt_state[0].mu) < 1e-4
    # G's weight average is updated at every step of the loop: its BatchNorm
    # statistics (not ill-conditioned) match the single steps' as G's own do.
    for x, y in zip(jax.tree.leaves(g1.ema[0]["batch_stats"]),
                    jax.tree.leaves(g3.ema[0]["batch_stats"]), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert relative_error(g1.opt_state[0].mu["deconv3"],
                          g3.opt_state[0].mu["deconv3"]) < 3e-2


@pytest.mark.slow
def test_bfloat16_step_keeps_float32_state_and_close_losses():
    """`compute_dtype="bfloat16"` is mixed precision: after a step every
    parameter, optimizer moment and BatchNorm statistic is still float32, and
    the losses are the float32 step's within bf16 rounding (rtol 2e-2; the
    models' outputs agree to ~1e-2, tests/test_models.py)."""
    batch, key = _batch(), jax.random.key(3)
    losses = {}
    for dtype in ("float32", "bfloat16"):
        g, d = create_train_states(Config(compute_dtype=dtype), jax.random.key(0))
        assert g.apply_fn.__self__.dtype == d.apply_fn.__self__.dtype == dtype
        g, d, metrics = jax.jit(train_step)(g, d, batch, key)
        assert {x.dtype for x in jax.tree.leaves((g, d)) if hasattr(x, "dtype")
                and jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype("float32")}
        losses[dtype] = np.array([float(metrics[k]) for k in sorted(metrics)])
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=2e-2)
    assert not np.array_equal(losses["bfloat16"], losses["float32"])


@pytest.mark.slow
def test_generator_labels_the_step_draws_cover_all_ten_digits():
    """The seed's randint(0, 9) never drew a 9; the step asks G for all ten.
    Recorded from G's calls inside `train_step` on a batch of zeros: the first
    call (D's update) gets the batch's labels, the second (G's) the drawn ones."""
    g, d = create_train_states(Config(), jax.random.key(0))
    calls = []

    def recording_apply(variables, z, labels, **kwargs):
        jax.debug.callback(lambda x: calls.append(np.asarray(x)), labels, ordered=True)
        return Generator().apply(variables, z, labels, **kwargs)

    g = g.replace(apply_fn=recording_apply)
    images, _ = block_digits(50, seed=1)
    batch = {"image": to_float(jnp.asarray(images)), "label": jnp.zeros(50, jnp.int32)}
    step = jax.jit(train_step)
    for i in range(6):
        jax.block_until_ready(step(g, d, batch, jax.random.key(i)))
    assert len(calls) == 12
    assert all((c == 0).all() for c in calls[0::2])           # D's fakes: the batch's
    drawn = np.concatenate(calls[1::2])                         # 300 of G's labels
    assert np.bincount(drawn, minlength=10).min() >= 10, np.bincount(drawn)
    assert drawn.max() == 9


def test_adam_steps_follow_the_decay_schedule():
    """With a constant gradient, Adam's step is lr_t * g / (|g| + eps) = lr_t:
    the step sizes show the learning rate the optimizer used at each step."""
    config = Config(learning_rate=1e-3, decay_steps=2, decay_rate=0.5)
    tx = make_optimizer(config)
    params = jnp.zeros(3)
    state = tx.init(params)
    sizes = []
    for _ in range(7):
        updates, state = tx.update(jnp.ones(3), state, params)
        sizes.append(-float(updates[0]))
    np.testing.assert_allclose(sizes, [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 1.25e-4],
                               rtol=1e-5)


def test_batch_stats_move_in_train_mode_only():
    g, d = create_train_states(Config(), jax.random.key(0))
    z = jax.random.normal(jax.random.key(1), (B, NOISE_DIM))
    labels = jnp.arange(B)
    variables = {"params": g.params, "batch_stats": g.batch_stats}
    for train in (True, False):
        _, upd = g.apply_fn(variables, z, labels, train=train, mutable=["batch_stats"])
        moved = [not np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(upd["batch_stats"]), jax.tree.leaves(g.batch_stats))]
        assert all(moved) if train else not any(moved)


@pytest.mark.slow
def test_learning_gives_label_dependent_digits():
    """150 steps on block digits (class = where the square is): the generator
    must put the square where each label asks. Ignoring the label would score
    ~10%. (The step size is twice the seed's, to learn in fewer steps: 0.94 at
    step 150, as 1e-3 reaches at step 170.)"""
    images, labels = block_digits(640, seed=0)
    config = Config(batch_size=16, learning_rate=2e-3)
    g, d = create_train_states(config, jax.random.key(0))
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    key = jax.random.key(1)
    for _ in range(150):
        g, d, metrics = train_step_on_data(g, d, images, labels, key,
                                           batch_size=config.batch_size)
    assert np.isfinite(float(metrics["d_loss"]))
    z, wanted = sampling.digit_rows(jax.random.key(2), range(10), 20)
    out = sampling.generate_uint8(sampling.g_variables(g), z, wanted)
    accuracy = np.mean(classify_blocks(out) == wanted)
    assert accuracy > 0.8, accuracy
