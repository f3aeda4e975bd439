"""The MNIST classifier that judges samples: a LeNet-style CNN, trained once, cached.

`evaluate.py` uses its predictions (does a sample show the requested digit?) and its
penultimate-layer features (how close are samples to real digits?). It is trained
on the MNIST train split only, with small random shifts, and cached as msgpack.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from gan import batching, files
from gan.data import NUM_CLASSES, to_float
from gan.errors import one_line

FEATURE_DIM = 128
# The classifier shipped in weights/ (99.43% on the MNIST test set): what
# evaluate.py, train.py --eval-every and sample.py --verify use unless told.
SHIPPED = os.path.join(files.WEIGHTS_DIR, "mnist_classifier.msgpack")
# Training recipe: reaches ~99.4% on the MNIST test split (see README).
EPOCHS = 8
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
MAX_SHIFT = 2  # pixels of random translation, each axis


class ClassifierError(ValueError):
    """A classifier file that cannot be used; the message is one line."""


class Classifier(nn.Module):
    """LeNet-style CNN: two 5x5 conv + max-pool stages, a 128-unit layer, 10 logits."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False
                 ) -> tuple[jax.Array, jax.Array]:
        """Returns (logits `[B, 10]`, features `[B, FEATURE_DIM]`) for `[B, 28, 28, 1]`."""
        x = nn.relu(nn.Conv(32, (5, 5), padding="VALID")(x))   # [B, 24, 24, 32]
        x = nn.max_pool(x, (2, 2), (2, 2))                      # [B, 12, 12, 32]
        x = nn.relu(nn.Conv(64, (5, 5), padding="VALID")(x))   # [B, 8, 8, 64]
        x = nn.max_pool(x, (2, 2), (2, 2))                      # [B, 4, 4, 64]
        features = nn.relu(nn.Dense(FEATURE_DIM)(x.reshape(len(x), -1)))
        h = nn.Dropout(0.5, deterministic=not train)(features)
        return nn.Dense(NUM_CLASSES)(h), features


@jax.jit
def _apply(params: Any, images_u8: jax.Array) -> tuple[jax.Array, jax.Array]:
    return Classifier().apply({"params": params}, to_float(images_u8))


def predict(params: Any, images_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits `[N, 10]` and features `[N, FEATURE_DIM]` (float32) of uint8
    images, in batches of the fixed sizes of `gan.batching`."""
    if not len(images_u8):
        return (np.zeros((0, NUM_CLASSES), np.float32),
                np.zeros((0, FEATURE_DIM), np.float32))
    logits, feats = batching.in_fixed_batches(
        lambda x: _apply(params, jnp.asarray(x)), np.asarray(images_u8, np.uint8))
    return logits, feats


def accuracy(params: Any, images_u8: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of images classified as their label."""
    logits, _ = predict(params, images_u8)
    return float(np.mean(logits.argmax(axis=1) == np.asarray(labels)))


def _shift(images: jax.Array, key: jax.Array) -> jax.Array:
    """Moves each `[28, 28]` image by up to MAX_SHIFT pixels (zero fill)."""
    n, h, w = images.shape
    padded = jnp.pad(images, ((0, 0), (MAX_SHIFT, MAX_SHIFT), (MAX_SHIFT, MAX_SHIFT)))
    offsets = jax.random.randint(key, (n, 2), 0, 2 * MAX_SHIFT + 1)
    return jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1]), (h, w)))(
        padded, offsets)


def _make_step(tx: optax.GradientTransformation) -> Callable:
    @jax.jit
    def step(params, opt_state, images_u8, labels, key):
        shift_key, dropout_key = jax.random.split(key)
        x = to_float(_shift(images_u8, shift_key))

        def loss_fn(p):
            logits, _ = Classifier().apply({"params": p}, x, train=True,
                                           rngs={"dropout": dropout_key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss
    return step


def train(images_u8: np.ndarray, labels: np.ndarray, key: jax.Array,
          epochs: int = EPOCHS, batch_size: int = BATCH_SIZE,
          learning_rate: float = LEARNING_RATE,
          progress: Callable[[str], None] | None = None) -> Any:
    """Trains the classifier (Adam, random shifts, dropout); returns its params."""
    init_key, key = jax.random.split(key)
    params = jax.jit(Classifier().init)(init_key, jnp.zeros((1, 28, 28, 1)))["params"]
    batch_size = min(batch_size, len(labels))  # tiny datasets (tests)
    steps_per_epoch = len(labels) // batch_size
    schedule = optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch)
    tx = optax.adam(schedule)
    opt_state = tx.init(params)
    step = _make_step(tx)
    images_dev = jax.device_put(np.asarray(images_u8, np.uint8))
    labels_dev = jax.device_put(np.asarray(labels, np.int32))
    for epoch in range(epochs):
        order = jax.random.permutation(jax.random.fold_in(key, epoch), len(labels))
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            params, opt_state, loss = step(
                params, opt_state, images_dev[idx], labels_dev[idx],
                jax.random.fold_in(key, epoch * steps_per_epoch + i + 1_000_000))
        if progress:
            progress(f"classifier epoch {epoch + 1}/{epochs}: loss {float(loss):.4f}")
    return params


def _template() -> Any:
    return jax.eval_shape(Classifier().init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32))["params"]


def save(path: str, params: Any, test_accuracy: float) -> None:
    """Writes params and their test accuracy to `path` (msgpack), atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    payload = {"params": jax.device_get(params), "test_accuracy": test_accuracy}
    files.write_bytes(path, serialization.msgpack_serialize(payload))


@dataclasses.dataclass
class Loaded:
    params: Any
    test_accuracy: float


def load(path: str) -> Loaded:
    """Reads a file written by `save`.

    Raises:
      ClassifierError: unreadable, damaged or of another architecture.
    """
    try:
        with open(path, "rb") as f:
            raw = serialization.msgpack_restore(f.read())
        params, acc = raw["params"], float(raw["test_accuracy"])
        want = jax.tree.map(lambda a: a.shape, _template())
        got = jax.tree.map(np.shape, params)
    except OSError as e:
        raise ClassifierError(f"cannot read classifier {path}: {one_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - msgpack raises many types.
        raise ClassifierError(f"{path} is not a classifier file ({type(e).__name__}); "
                              "delete it to retrain") from None
    if want != got:
        raise ClassifierError(f"{path} holds another classifier architecture; "
                              "delete it to retrain")
    return Loaded(params, acc)


def _check_writable(path: str) -> None:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + ".tmp", "wb"):
            pass
        os.remove(path + ".tmp")
    except OSError as e:
        raise ClassifierError(f"cannot write classifier {path}: {one_line(e)}") from None


def load_or_train(path: str, data_dir: str | None,
                  progress: Callable[[str], None] | None = None) -> Loaded:
    """The cached classifier at `path`, trained on MNIST first when missing."""
    from gan import data  # noqa: PLC0415 - TFDS import only when training.
    path = os.path.expanduser(path)
    if os.path.exists(path):
        return load(path)
    _check_writable(path)  # before minutes of training, not after
    train_x, train_y = data.load_mnist(data_dir, "train")
    test_x, test_y = data.load_mnist(data_dir, "test")
    if progress:
        progress(f"training the MNIST classifier once (cached in {path})")
    params = train(train_x, train_y, jax.random.key(0), progress=progress)
    acc = accuracy(params, test_x, test_y)
    try:
        save(path, params, acc)
    except OSError as e:
        raise ClassifierError(f"cannot write classifier {path}: {one_line(e)}") from None
    return Loaded(params, acc)
