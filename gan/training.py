"""Train states, the optimizer and the jitted train step."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn
import optax
from flax import struct
from flax.training import train_state
from jax.sharding import Mesh

from gan import ema, parallel
from gan.config import Config
from gan.data import NUM_CLASSES, to_float
from gan.models import NOISE_DIM, Discriminator, Generator, discriminator_classes

Metrics = dict[str, jax.Array]


class TrainState(train_state.TrainState):
    """Params, optimizer state and step, plus BatchNorm running statistics.

    G's state also carries the averages of its weights (`gan.ema`): `ema` holds
    one `{"params", "batch_stats"}` per decay of `ema_decays` (static), the
    first being the run's `Config.ema_decay`; both are empty without EMA.
    """
    batch_stats: Any = None
    ema: tuple[Any, ...] = ()
    ema_decays: tuple[float, ...] = struct.field(pytree_node=False, default=())


def learning_rate_schedule(config: Config) -> optax.Schedule:
    """The seed's `tf.train.exponential_decay(lr, step, 500, 0.95, staircase=True)`."""
    return optax.exponential_decay(config.learning_rate, config.decay_steps,
                                   config.decay_rate, staircase=True)


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """Adam on the decay schedule; one object per distinct setting (`_adam`)."""
    return _adam(config.learning_rate, config.decay_steps, config.decay_rate,
                 config.beta1)


@functools.lru_cache(maxsize=None)
def _adam(learning_rate: float, decay_steps: int, decay_rate: float, beta1: float
          ) -> optax.GradientTransformation:
    """The optimizer is static in a TrainState, so part of the jitted train
    step's cache key, and optax builds new closures on every call: without one
    object per setting, every run or restore in a process (the tests make many)
    would trace and compile the step again."""
    schedule = optax.exponential_decay(learning_rate, decay_steps, decay_rate,
                                       staircase=True)
    return optax.adam(schedule, b1=beta1)


@functools.lru_cache(maxsize=None)
def _networks(dtype: str, num_classes: int) -> tuple[Generator, Discriminator]:
    """One (G, D) per compute dtype and class count: a state's `apply_fn` is
    static, part of the train step's cache key, like its optimizer (`_adam`)."""
    return (Generator(dtype, num_classes=num_classes),
            Discriminator(dtype, num_classes=num_classes))


@functools.partial(jax.jit, static_argnums=0)
def _init(module: nn.Module, key: jax.Array, *inputs: jax.Array) -> Any:
    """`module.init` in eval mode, compiled once per distinct module (per compute
    dtype); op by op it takes seconds on CPU."""
    return module.init(key, *inputs, train=False)


def create_train_states(config: Config, key: jax.Array,
                        num_classes: int = NUM_CLASSES
                        ) -> tuple[TrainState, TrainState]:
    """Fresh (G, D) states for `num_classes` classes (the seed's 10 digits),
    initialised as the seed (truncated normal 0.02, zero bias)."""
    g_key, d_key = jax.random.split(key)
    z = jnp.zeros((1, NOISE_DIM), jnp.float32)
    labels = jnp.zeros((1,), jnp.int32)
    images = jnp.zeros((1, 28, 28, 1), jnp.float32)
    states = []
    generator, discriminator = _networks(config.compute_dtype, num_classes)
    # G's weights are averaged (gan.ema), D's are not.
    for module, k, inputs, decays in (
            (generator, g_key, (z, labels), config.ema_decays),
            (discriminator, d_key, (images, labels), ())):
        variables = _init(module, k, *inputs)
        states.append(TrainState.create(
            apply_fn=module.apply, params=variables["params"],
            batch_stats=variables["batch_stats"], tx=make_optimizer(config),
            ema=ema.init(variables, decays), ema_decays=decays))
    return states[0], states[1]


def bce_with_logits(logits: jax.Array, target: float) -> jax.Array:
    """Mean sigmoid cross-entropy against a constant 0/1 target."""
    return jnp.mean(optax.sigmoid_binary_cross_entropy(
        logits, jnp.full_like(logits, target)))


def train_step(g_state: TrainState, d_state: TrainState,
               batch: dict[str, jax.Array], key: jax.Array
               ) -> tuple[TrainState, TrainState, Metrics]:
    """One seed iteration: a D update, then a G update.

    Args:
      g_state, d_state: the generator's and discriminator's states.
      batch: `image` float `[B, 28, 28, 1]` in [-1, 1] and `label` int `[B]`.
      key: this step's randomness (noise for both updates and G's labels).

    Returns:
      New (g_state, d_state) and scalar metrics (the losses). G's weight
      averages (`g_state.ema`) take the new weights after its update.
    """
    images, labels = batch["image"], batch["label"]
    d_noise_key, g_noise_key, g_label_key = jax.random.split(key, 3)
    g_state, d_state, d_metrics = _d_update(g_state, d_state, images, labels,
                                            d_noise_key)
    g_state, d_state, g_loss = _g_update(g_state, d_state, len(labels), images.dtype,
                                         g_noise_key, g_label_key)
    if g_state.ema_decays:  # reads the new weights only: training is unchanged
        g_state = g_state.replace(ema=ema.update(
            g_state.ema, {"params": g_state.params, "batch_stats": g_state.batch_stats},
            g_state.ema_decays, g_state.step))
    return g_state, d_state, {"d_loss": d_metrics["d_loss"], "g_loss": g_loss,
                              "d_loss_real": d_metrics["d_loss_real"],
                              "d_loss_fake": d_metrics["d_loss_fake"]}


def _d_update(g_state: TrainState, d_state: TrainState, images: jax.Array,
              labels: jax.Array, noise_key: jax.Array
              ) -> tuple[TrainState, TrainState, Metrics]:
    """D's update: real digits against G's fakes of the same digits (G is not
    differentiated here; its BatchNorm statistics move, as in the seed)."""
    b = labels.shape[0]
    z = jax.random.normal(noise_key, (b, NOISE_DIM), images.dtype)
    fake, g_vars = g_state.apply_fn(
        {"params": g_state.params, "batch_stats": g_state.batch_stats},
        z, labels, train=True, mutable=["batch_stats"])

    def d_loss_fn(params):
        # Real and fake in one call, BatchNorm per half: the same as two calls.
        logits, d_vars = d_state.apply_fn(
            {"params": params, "batch_stats": d_state.batch_stats},
            jnp.concatenate([images, fake]), jnp.concatenate([labels, labels]),
            train=True, groups=2, mutable=["batch_stats"])
        loss_real = bce_with_logits(logits[:b], 1.0)
        loss_fake = bce_with_logits(logits[b:], 0.0)
        return loss_real + loss_fake, (d_vars["batch_stats"], loss_real, loss_fake)

    (d_loss, (d_stats, loss_real, loss_fake)), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True)(d_state.params)
    d_state = d_state.apply_gradients(grads=d_grads, batch_stats=d_stats)
    g_state = g_state.replace(batch_stats=g_vars["batch_stats"])
    return g_state, d_state, {"d_loss": d_loss, "d_loss_real": loss_real,
                              "d_loss_fake": loss_fake}


def _g_update(g_state: TrainState, d_state: TrainState, b: int, dtype: Any,
              noise_key: jax.Array, label_key: jax.Array
              ) -> tuple[TrainState, TrainState, jax.Array]:
    """G's update: fresh noise, labels drawn from all the classes (the seed's
    randint(0, 9) never asked G for a 9), non-saturating loss."""
    z = jax.random.normal(noise_key, (b, NOISE_DIM), dtype)
    num_classes = discriminator_classes(d_state.params)  # a shape: static
    g_labels = jax.random.randint(label_key, (b,), 0, num_classes)

    def g_loss_fn(params):
        fake, g_vars = g_state.apply_fn(
            {"params": params, "batch_stats": g_state.batch_stats},
            z, g_labels, train=True, mutable=["batch_stats"])
        logits, d_vars = d_state.apply_fn(
            {"params": d_state.params, "batch_stats": d_state.batch_stats},
            fake, g_labels, train=True, mutable=["batch_stats"])
        return bce_with_logits(logits, 1.0), (g_vars["batch_stats"],
                                              d_vars["batch_stats"])

    (g_loss, (g_stats, d_stats)), g_grads = jax.value_and_grad(
        g_loss_fn, has_aux=True)(g_state.params)
    g_state = g_state.apply_gradients(grads=g_grads, batch_stats=g_stats)
    return g_state, d_state.replace(batch_stats=d_stats), g_loss


def batch_indices(key: jax.Array, step: jax.Array, num_examples: int,
                  batch_size: int, shard: jax.Array | None = None) -> jax.Array:
    """Which examples step `step` trains on: epochs are fresh permutations.

    Epoch e visits the data in the order `permutation(fold_in(key, e))` (data
    shard s, when the set is sharded: `fold_in(fold_in(key, e), s)`); the
    `num_examples % batch_size` examples left over are skipped that epoch. A pure
    function of the step, so resuming at any step reproduces the data order.
    """
    steps_per_epoch = num_examples // batch_size
    epoch, position = jnp.divmod(step, steps_per_epoch)
    epoch_key = jax.random.fold_in(key, epoch)
    if shard is not None:
        epoch_key = jax.random.fold_in(epoch_key, shard)
    order = jax.random.permutation(epoch_key, num_examples)
    return jax.lax.dynamic_slice_in_dim(order, position * batch_size, batch_size)


def draw_batch(images: jax.Array, labels: jax.Array, key: jax.Array,
               step: jax.Array, batch_size: int) -> dict[str, jax.Array]:
    """Step `step`'s batch from a training set cut into S data shards.

    Args:
      images: uint8 `[S, N/S, 28, 28]`; labels int `[S, N/S]`.
      key: the run's data key.
      step: the global step.
      batch_size: global batch; shard s gives its `batch_size / S` examples.

    Returns:
      `image` float `[B, 28, 28, 1]` in [-1, 1] and `label` int `[B]`, shard-major.
    """
    shards, per_shard = labels.shape
    b = batch_size // shards

    def one_shard(x, y, s):
        idx = batch_indices(key, step, per_shard, b, s if shards > 1 else None)
        return x[idx], y[idx]

    x, y = jax.vmap(one_shard)(images, labels, jnp.arange(shards))  # [S, B/S, ...]
    return {"image": to_float(x.reshape(batch_size, *x.shape[2:])),
            "label": y.reshape(batch_size)}


def _step_on_data(g_state: TrainState, d_state: TrainState, images: jax.Array,
                  labels: jax.Array, key: jax.Array, batch_size: int,
                  mesh: Mesh | None) -> tuple[TrainState, TrainState, Metrics]:
    """`train_step_on_data`, unjitted (the body of both jitted forms)."""
    if labels.ndim == 1:
        images, labels = images[None], labels[None]
    data_key, step_key = jax.random.split(key)
    batch = draw_batch(images, labels, data_key, d_state.step, batch_size)
    if mesh is not None:
        batch = jax.lax.with_sharding_constraint(batch, parallel.batch_sharding(mesh))
    g_state, d_state, metrics = train_step(g_state, d_state, batch,
                                           jax.random.fold_in(step_key, d_state.step))
    if mesh is not None:
        g_state, d_state, metrics = jax.lax.with_sharding_constraint(
            (g_state, d_state, metrics), parallel.replicated(mesh))
    return g_state, d_state, metrics


@functools.partial(jax.jit, static_argnames=("batch_size", "mesh"),
                   donate_argnames=("g_state", "d_state"))
def train_step_on_data(g_state: TrainState, d_state: TrainState,
                       images: jax.Array, labels: jax.Array, key: jax.Array, *,
                       batch_size: int, mesh: Mesh | None = None
                       ) -> tuple[TrainState, TrainState, Metrics]:
    """`train_step` on the batch for step `d_state.step`, drawn on the device.

    The whole training set stays on the device; batch selection, scaling and all
    randomness happen here, so the host only dispatches and reads logged metrics.
    Step s uses the data order of `batch_indices` and the key `fold_in(key, s)`:
    a run is a pure function of its key.

    Args:
      g_state, d_state: the states (donated).
      images: uint8 `[N, 28, 28]`, the whole training set, or `[S, N/S, 28, 28]`
        cut into S data shards (see `gan.parallel`).
      labels: int `[N]` or `[S, N/S]`.
      key: the run's training key.
      batch_size: images per step (global).
      mesh: split the batch over this mesh's devices (`gan.parallel`); states
        stay replicated. None: wherever the inputs are.

    Returns:
      New states and this step's scalar metrics.
    """
    return _step_on_data(g_state, d_state, images, labels, key, batch_size, mesh)


@functools.partial(jax.jit, static_argnames=("batch_size", "max_steps", "mesh"),
                   donate_argnames=("g_state", "d_state"))
def train_steps_on_data(g_state: TrainState, d_state: TrainState,
                        images: jax.Array, labels: jax.Array, key: jax.Array,
                        num_steps: jax.Array, *, batch_size: int, max_steps: int,
                        mesh: Mesh | None = None
                        ) -> tuple[TrainState, TrainState, Metrics]:
    """`num_steps` consecutive `train_step_on_data` steps in one dispatch.

    The same steps as `num_steps` calls of `train_step_on_data` (same batches,
    same keys: both follow `d_state.step`), in a `lax.fori_loop`. `num_steps` is
    traced, so one compiled program serves every count up to `max_steps`.

    Args:
      g_state, d_state, images, labels, key, batch_size, mesh: as
        `train_step_on_data`.
      num_steps: int scalar, 1 to `max_steps` (more run only `max_steps`).
      max_steps: length of the returned metric arrays.

    Returns:
      New states and each metric as `[max_steps]`: row i holds step i of this
      call, rows from `num_steps` on are zero.
    """
    def one(g, d):
        return _step_on_data(g, d, images, labels, key, batch_size, mesh)

    shapes = jax.eval_shape(one, g_state, d_state)[2]
    history = jax.tree.map(lambda m: jnp.zeros((max_steps,) + m.shape, m.dtype), shapes)

    def body(i, carry):
        g, d, history = carry
        g, d, metrics = one(g, d)
        history = jax.tree.map(lambda h, m: h.at[i].set(m), history, metrics)
        return g, d, history

    # Never more steps than rows: no step runs without its metrics.
    return jax.lax.fori_loop(0, jnp.minimum(num_steps, max_steps), body,
                             (g_state, d_state, history))
