"""The classifier that judges samples: a LeNet-style CNN, trained once per
dataset, cached.

`evaluate.py` uses its predictions (does a sample show the requested class?) and
its penultimate-layer features (how close are samples to real images?). It is
trained on the dataset's train split only, with small random shifts, and cached
as msgpack with the class names and the training data's fingerprint. MNIST's is
shipped in weights/; another dataset's is trained beside the run the first time
it is needed (`path_for`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from gan import batching, data, datasets, files
from gan.data import NUM_CLASSES, to_float
from gan.datasets import DIGITS, MNIST, describe
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
# Another dataset's classifier, in the run's workdir (or beside its generator file).
RUN_FILE = "classifier.msgpack"


class ClassifierError(ValueError):
    """A classifier file that cannot be used; the message is one line."""


class Classifier(nn.Module):
    """LeNet-style CNN: two 5x5 conv + max-pool stages, a 128-unit layer, a
    logit per class (MNIST's 10 digits by default)."""
    num_classes: int = NUM_CLASSES

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False
                 ) -> tuple[jax.Array, jax.Array]:
        """Returns (logits `[B, C]`, features `[B, FEATURE_DIM]`) for `[B, 28, 28, 1]`."""
        x = nn.relu(nn.Conv(32, (5, 5), padding="VALID")(x))   # [B, 24, 24, 32]
        x = nn.max_pool(x, (2, 2), (2, 2))                      # [B, 12, 12, 32]
        x = nn.relu(nn.Conv(64, (5, 5), padding="VALID")(x))   # [B, 8, 8, 64]
        x = nn.max_pool(x, (2, 2), (2, 2))                      # [B, 4, 4, 64]
        features = nn.relu(nn.Dense(FEATURE_DIM)(x.reshape(len(x), -1)))
        h = nn.Dropout(0.5, deterministic=not train)(features)
        return nn.Dense(self.num_classes)(h), features


def classes_in(params: Any) -> int:
    """The class count of a classifier's params (its last layer's width)."""
    return params["Dense_1"]["bias"].shape[0]


@jax.jit
def _apply(params: Any, images_u8: jax.Array) -> tuple[jax.Array, jax.Array]:
    return Classifier(num_classes=classes_in(params)).apply({"params": params},
                                                            to_float(images_u8))


def predict(params: Any, images_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits `[N, C]` and features `[N, FEATURE_DIM]` (float32) of uint8
    images, in batches of the fixed sizes of `gan.batching`."""
    if not len(images_u8):
        return (np.zeros((0, classes_in(params)), np.float32),
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


def _make_step(tx: optax.GradientTransformation, num_classes: int) -> Callable:
    @jax.jit
    def step(params, opt_state, images_u8, labels, key):
        shift_key, dropout_key = jax.random.split(key)
        x = to_float(_shift(images_u8, shift_key))

        def loss_fn(p):
            logits, _ = Classifier(num_classes=num_classes).apply(
                {"params": p}, x, train=True, rngs={"dropout": dropout_key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss
    return step


def train(images_u8: np.ndarray, labels: np.ndarray, key: jax.Array,
          epochs: int = EPOCHS, batch_size: int = BATCH_SIZE,
          learning_rate: float = LEARNING_RATE,
          progress: Callable[[str], None] | None = None,
          num_classes: int = NUM_CLASSES) -> Any:
    """Trains the classifier (Adam, random shifts, dropout); returns its params."""
    init_key, key = jax.random.split(key)
    init = jax.jit(Classifier(num_classes=num_classes).init)
    params = init(init_key, jnp.zeros((1, 28, 28, 1)))["params"]
    batch_size = min(batch_size, len(labels))  # tiny datasets (tests)
    steps_per_epoch = len(labels) // batch_size
    schedule = optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch)
    tx = optax.adam(schedule)
    opt_state = tx.init(params)
    step = _make_step(tx, num_classes)
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


def _template(num_classes: int) -> Any:
    return jax.eval_shape(Classifier(num_classes=num_classes).init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32))["params"]


def save(path: str, params: Any, test_accuracy: float,
         classes: tuple[str, ...] = DIGITS, data: dict[str, Any] | None = None
         ) -> None:
    """Writes params, their test accuracy, the class names and the training
    data's fingerprint (`gan.data.fingerprint`) to `path` (msgpack), atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    payload = {"params": jax.device_get(params), "test_accuracy": test_accuracy,
               "classes": json.dumps(list(classes)), "data": json.dumps(data)}
    files.write_bytes(path, serialization.msgpack_serialize(payload))


@dataclasses.dataclass
class Loaded:
    params: Any
    test_accuracy: float
    classes: tuple[str, ...] = DIGITS
    data: dict[str, Any] | None = None  # its training data's fingerprint


def load(path: str) -> Loaded:
    """Reads a file written by `save`.

    Raises:
      ClassifierError: unreadable, damaged or of another architecture.
    """
    try:
        with open(path, "rb") as f:
            raw = serialization.msgpack_restore(f.read())
        params, acc = raw["params"], float(raw["test_accuracy"])
        classes = tuple(json.loads(raw.get("classes", "null")) or DIGITS)
        data = json.loads(raw.get("data", "null"))
        want = jax.tree.map(lambda a: a.shape, _template(len(classes)))
        got = jax.tree.map(np.shape, params)
    except OSError as e:
        raise ClassifierError(f"cannot read classifier {path}: {one_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - msgpack raises many types.
        raise ClassifierError(f"{path} is not a classifier file ({type(e).__name__}); "
                              "delete it to retrain") from None
    if want != got:
        raise ClassifierError(f"{path} holds another classifier architecture; "
                              "delete it to retrain")
    return Loaded(params, acc, classes, data)


def path_for(dataset: str, run: str) -> str:
    """Where a dataset's classifier is: MNIST's shipped one, else RUN_FILE in
    the run's workdir (or beside a generator file)."""
    if dataset == MNIST:
        return SHIPPED
    folder = run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run))
    return os.path.join(folder, RUN_FILE)


def _check_writable(path: str) -> None:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + ".tmp", "wb"):
            pass
        os.remove(path + ".tmp")
    except OSError as e:
        raise ClassifierError(f"cannot write classifier {path}: {one_line(e)}") from None


def load_or_train(path: str, data_dir: str | None,
                  progress: Callable[[str], None] | None = None,
                  dataset: str = MNIST, train_data: Any = None,
                  test_data: Any = None) -> Loaded:
    """The cached classifier at `path`, trained first when missing (on the
    given splits, `gan.datasets.Labelled`, or those of `dataset` loaded here),
    its test accuracy reported through `progress`.

    Raises:
      ClassifierError: unusable, or made for other classes or other data.
      DataError: the data cannot be loaded.
    """
    path = os.path.expanduser(path)
    if os.path.exists(path) and train_data is None:
        return load(path)
    train_data = train_data or datasets.load(dataset, data_dir, "train")
    fingerprint = data_fingerprint(train_data)
    if os.path.exists(path):
        return check_made_for(load(path), path, train_data.classes, fingerprint)
    _check_writable(path)  # before minutes of training, not after
    test_data = test_data or datasets.load(dataset, data_dir, "test")
    what = data.title(dataset)
    if progress:
        progress(f"training the {what} classifier once (cached in {path})")
    params = train(train_data.images, train_data.labels, jax.random.key(0),
                   progress=progress, num_classes=len(train_data.classes))
    acc = accuracy(params, test_data.images, test_data.labels)
    if progress:
        progress(f"classifier test accuracy {100 * acc:.2f}% on {len(test_data.labels):,} "
                 f"{what} test images")
    try:
        save(path, params, acc, train_data.classes, fingerprint)
    except OSError as e:
        raise ClassifierError(f"cannot write classifier {path}: {one_line(e)}") from None
    return Loaded(params, acc, train_data.classes, fingerprint)


def data_fingerprint(found: datasets.Labelled) -> dict[str, Any]:
    """What a cached classifier was trained on, whatever the order (MNIST's TFDS
    copy and IDX files order the same digits differently): the sorted labels,
    and for a folder its pictures."""
    pictures = found.images if datasets.folder_of(found.name) is not None else None
    return data.fingerprint(np.sort(found.labels), images=pictures)


def check_made_for(loaded: Loaded, path: str, classes: tuple[str, ...],
                   fingerprint: dict[str, Any] | None = None) -> Loaded:
    """`loaded`, unless it was trained for other classes or other data
    (ClassifierError). Files from before fingerprints were kept are MNIST's."""
    if tuple(loaded.classes) != tuple(classes):
        raise ClassifierError(f"classifier {path} judges other classes "
                              f"({describe(loaded.classes)}), not "
                              f"{describe(classes)}; give another path to train one")
    shared = (loaded.data or {}).keys() & (fingerprint or {}).keys()
    if any(loaded.data[k] != fingerprint[k] for k in shared):
        raise ClassifierError(f"classifier {path} was trained on other data "
                              f"({loaded.data['examples']:,} images); delete it or "
                              "give another path to train one")
    return loaded
