"""Sample quality in numbers, judged by a classifier of the dataset
(`gan.classifier`; MNIST's is shipped). "Digit" below stands for any class.

- Conditional accuracy: the classifier reads the digit that was requested.
- Cross-entropy of the classifier's prediction against the requested digit.
- Frechet distance between Gaussians fitted to classifier features of samples and
  of the real test digits, next to its floor: the same distance for as many real
  training digits, so the ratio says how far from "as good as real" a generator is.
- Precision and recall in the same feature space (Kynkaanniemi et al. 2019, k = 3):
  the share of samples inside the real digits' k-NN balls, and of real digits
  inside the samples' balls.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gan import classifier, ema, sampling
from gan.config import EMA_BATCH_STATS, Config
from gan.datasets import DIGITS, Labelled
from gan.models import NOISE_DIM

NUM_SAMPLES = 10_000   # 1,000 per digit
QUICK_SAMPLES = 1_000  # train.py --eval-every
K_NEIGHBOURS = 3
# Rows of the pairwise distance matrix computed at once ([CHUNK, N] floats).
DISTANCE_CHUNK = 1000


# --------------------------------------------------------------------------
# Frechet distance
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """Mean `[D]` and covariance `[D, D]` (float64) of a feature set."""
    mean: np.ndarray
    cov: np.ndarray


def fit_gaussian(features: np.ndarray) -> Gaussian:
    """The features' mean and (unbiased) covariance, in float64."""
    x = np.asarray(features, np.float64)
    return Gaussian(x.mean(axis=0), np.cov(x, rowvar=False))


def frechet_distance(a: Gaussian, b: Gaussian) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    tr((S_a S_b)^(1/2)) is the sum of square roots of the eigenvalues of the
    symmetric PSD matrix S_a^(1/2) S_b S_a^(1/2) (same spectrum as S_a S_b), which
    avoids a general matrix square root and its complex round-off.
    """
    w, v = np.linalg.eigh(a.cov)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = sqrt_a @ b.cov @ sqrt_a
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    d = float(np.sum((a.mean - b.mean) ** 2)
              + np.trace(a.cov) + np.trace(b.cov) - 2 * tr_sqrt)
    return max(d, 0.0)  # round-off can dip just below zero for equal sets


# --------------------------------------------------------------------------
# Precision and recall (k-NN balls)
# --------------------------------------------------------------------------


@jax.jit
def _sq_distances(x: jax.Array, y: jax.Array) -> jax.Array:
    """`[n, m]` squared Euclidean distances, clipped at 0 against round-off."""
    d = (jnp.sum(x * x, 1)[:, None] + jnp.sum(y * y, 1)[None, :]
         - 2 * jnp.dot(x, y.T, precision=jax.lax.Precision.HIGHEST))
    return jnp.maximum(d, 0.0)


@functools.partial(jax.jit, static_argnames="k")
def _kth_smallest(x: jax.Array, y: jax.Array, k: int) -> jax.Array:
    return -jax.lax.top_k(-_sq_distances(x, y), k)[0][:, -1]


@jax.jit
def _inside_any(x: jax.Array, y: jax.Array, radii_sq: jax.Array) -> jax.Array:
    return jnp.any(_sq_distances(x, y) <= radii_sq[None, :], axis=1)


def _chunked(fn, x: np.ndarray, *args) -> np.ndarray:
    return np.concatenate([np.asarray(fn(jnp.asarray(x[i:i + DISTANCE_CHUNK]), *args))
                           for i in range(0, len(x), DISTANCE_CHUNK)])


def knn_radii_sq(features: np.ndarray, k: int = K_NEIGHBOURS) -> np.ndarray:
    """Squared distance from each point to its k-th nearest other point of the set."""
    y = jnp.asarray(features, jnp.float32)
    # The point itself is its own nearest neighbour (distance 0): take k + 1.
    return _chunked(functools.partial(_kth_smallest, k=k + 1),
                    np.asarray(features, np.float32), y)


def coverage(queries: np.ndarray, points: np.ndarray, radii_sq: np.ndarray) -> float:
    """Share of queries within radius of at least one point."""
    if len(queries) == 0:
        return float("nan")
    inside = _chunked(_inside_any, np.asarray(queries, np.float32),
                      jnp.asarray(points, jnp.float32), jnp.asarray(radii_sq))
    return float(inside.mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = K_NEIGHBOURS
                     ) -> tuple[float, float]:
    """Improved precision and recall of `fake` against `real` features."""
    precision = coverage(fake, real, knn_radii_sq(real, k))
    recall = coverage(real, fake, knn_radii_sq(fake, k))
    return precision, recall


# --------------------------------------------------------------------------
# Real-data reference and the scores of a sample set
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Reference:
    """The real images a sample set is compared with, in feature space."""
    test_features: np.ndarray        # [N_test, FEATURE_DIM]
    test_labels: np.ndarray          # [N_test]
    test: Gaussian
    test_per_digit: list[Gaussian | None]  # None: fewer than 2 test digits
    floor: float                     # FD(n real training digits, test digits)
    floor_per_digit: list[float]
    num_real: int                    # n above: the sample count it is fair for
    classifier_accuracy: float       # on the test digits
    # Precision and recall of those n training digits: what real data scores.
    real_precision: float = float("nan")
    real_recall: float = float("nan")


def make_reference(params: Any, train: tuple[np.ndarray, np.ndarray],
                   test: tuple[np.ndarray, np.ndarray], num_real: int,
                   seed: int = 0, with_precision_recall: bool = True) -> Reference:
    """Features of the test digits, and the Frechet floor for `num_real` samples.

    The floor uses `num_real` training digits drawn at random (fixed seed): the
    Frechet distance is biased upwards for small sets, so a generator's distance
    is compared with the floor of a real set of the same size.
    """
    test_x, test_y = test
    num_classes = classifier.classes_in(params)
    logits, test_feat = classifier.predict(params, test_x)
    acc = float(np.mean(logits.argmax(1) == test_y))
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(train[1]))[:num_real]
    _, real_feat = classifier.predict(params, train[0][pick])
    real_y = train[1][pick]
    test_g = fit_gaussian(test_feat)
    per_digit = [fit_gaussian(test_feat[test_y == d]) if np.sum(test_y == d) > 1
                 else None for d in range(num_classes)]
    real_pr = (precision_recall(test_feat, real_feat) if with_precision_recall
               else (float("nan"), float("nan")))
    return Reference(
        test_features=test_feat, test_labels=np.asarray(test_y), test=test_g,
        test_per_digit=per_digit, floor=frechet_distance(fit_gaussian(real_feat), test_g),
        floor_per_digit=[_digit_distance(real_feat, real_y, d, per_digit[d])
                         for d in range(num_classes)],
        num_real=num_real, classifier_accuracy=acc,
        real_precision=real_pr[0], real_recall=real_pr[1])


def _digit_distance(features: np.ndarray, labels: np.ndarray, digit: int,
                    real: Gaussian | None) -> float:
    """Frechet distance of one digit's features to `real`; NaN with < 2 of them."""
    mine = features[labels == digit]
    if real is None or len(mine) < 2:
        return float("nan")
    return frechet_distance(fit_gaussian(mine), real)


def score(params: Any, images_u8: np.ndarray, requested: np.ndarray,
          reference: Reference, with_precision_recall: bool = True) -> dict[str, Any]:
    """All quality figures of uint8 images `[N, 28, 28]` meant to show `requested`.

    Returns:
      A JSON-ready dict: `conditional_accuracy`, `per_digit_accuracy` (list of 10),
      `worst_digit`, `worst_digit_accuracy`, `cross_entropy`, `frechet_distance`,
      `frechet_floor`, `frechet_ratio`, `per_digit_frechet`, `per_digit_floor`,
      `precision`, `recall` (and `real_precision`, `real_recall`: the same for
      real training digits), `num_samples`, `classifier_test_accuracy`.
    """
    requested = np.asarray(requested)
    num_classes = classifier.classes_in(params)
    logits, feats = classifier.predict(params, images_u8)
    correct = logits.argmax(1) == requested
    log_probs = jax.nn.log_softmax(jnp.asarray(logits), axis=1)
    ce = -float(np.mean(np.take_along_axis(np.asarray(log_probs),
                                           requested[:, None], 1)))
    per_digit_acc = [float(correct[requested == d].mean()) if np.any(requested == d)
                     else float("nan") for d in range(num_classes)]
    worst = int(np.nanargmin(per_digit_acc))
    fd = frechet_distance(fit_gaussian(feats), reference.test)
    per_digit_fd = [_digit_distance(feats, requested, d, reference.test_per_digit[d])
                    for d in range(num_classes)]
    result = {
        "num_samples": int(len(requested)),
        "classifier_test_accuracy": reference.classifier_accuracy,
        "conditional_accuracy": float(correct.mean()),
        "per_digit_accuracy": per_digit_acc,
        "worst_digit": worst,
        "worst_digit_accuracy": per_digit_acc[worst],
        "cross_entropy": ce,
        "frechet_distance": fd,
        "frechet_floor": reference.floor,
        "frechet_ratio": _ratio(fd, reference.floor),
        "per_digit_frechet": per_digit_fd,
        "per_digit_floor": reference.floor_per_digit,
    }
    if with_precision_recall:
        result["precision"], result["recall"] = precision_recall(
            reference.test_features, feats)
        result["real_precision"] = reference.real_precision
        result["real_recall"] = reference.real_recall
    return result


# --------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------


def sample_inputs(num_samples: int, seed: int, num_classes: int = len(DIGITS)
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Noise `[N, NOISE_DIM]` and labels `[N]`: the classes in turn (0, 1, ...,
    C - 1, 0, ...), so MNIST's 10,000 samples are 1,000 per digit."""
    z = np.asarray(jax.random.normal(jax.random.key(seed), (num_samples, NOISE_DIM)),
                   np.float32)
    labels = (np.arange(num_samples) % num_classes).astype(np.int32)
    return z, labels


def evaluate_generator(g_variables: Any, params: Any, reference: Reference,
                       num_samples: int = NUM_SAMPLES, seed: int = 0,
                       with_precision_recall: bool = True) -> dict[str, Any]:
    """Samples `num_samples` digits (eval-mode BatchNorm) and scores them."""
    z, labels = sample_inputs(num_samples, seed, classifier.classes_in(params))
    images = sampling.generate_uint8(g_variables, z, labels)
    return score(params, images, labels, reference, with_precision_recall)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def json_ready(result: dict[str, Any]) -> dict[str, Any]:
    """`result` with NaN (e.g. a digit with too few samples) as null: strict JSON."""
    def clean(v):
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v
    return {k: clean(v) for k, v in result.items()}


def format_table(result: dict[str, Any], classes: tuple[str, ...] = DIGITS) -> str:
    """A readable summary of `score`'s dict; rows named by `classes`."""
    pct = lambda v: f"{100 * v:6.2f}%"  # noqa: E731
    lines = [
        f"samples                {result['num_samples']} "
        f"(classifier test accuracy {pct(result['classifier_test_accuracy']).strip()})",
        f"conditional accuracy   {pct(result['conditional_accuracy'])}   "
        f"worst {'digit' if classes == DIGITS else 'class'} "
        f"{classes[result['worst_digit']]}: "
        f"{pct(result['worst_digit_accuracy']).strip()}",
        f"cross-entropy          {result['cross_entropy']:7.4f}",
        f"Frechet distance       {result['frechet_distance']:7.3f}   "
        f"floor {result['frechet_floor']:.3f}, ratio {result['frechet_ratio']:.2f}",
    ]
    if "precision" in result:
        lines.append(f"precision / recall     {result['precision']:7.4f} / "
                     f"{result['recall']:.4f}   (k = {K_NEIGHBOURS}; real "
                     f"{'digits' if classes == DIGITS else 'images'}: "
                     f"{result['real_precision']:.4f} / {result['real_recall']:.4f})")
    width = max(5, *(len(c) for c in classes))
    kind = "digit" if classes == DIGITS else "class"
    lines += ["", f"{kind:<{width + 2}} accuracy  Frechet  floor   ratio"]
    for d, name in enumerate(classes):
        fd, floor = result["per_digit_frechet"][d], result["per_digit_floor"][d]
        lines.append(f"  {name:<{width}} {pct(result['per_digit_accuracy'][d])}  "
                     f"{fd:7.3f}  {floor:6.3f}  {_ratio(fd, floor):5.2f}")
    return "\n".join(lines)


class EpochScorer:
    """`train.py --eval-every`: QUICK_SAMPLES samples of G and of its weight
    averages scored against real images at epoch ends."""

    def __init__(self, classifier_path: str, dataset: str, data_dir: str | None,
                 train_data: Labelled | None, say: Any | None = None):
        from gan import datasets  # noqa: PLC0415 - TFDS only when scoring.
        train_data = train_data or datasets.load(dataset, data_dir, "train")
        # A cached classifier is checked before the test split is read; a new
        # one is trained with it.
        test_data = (None if os.path.exists(os.path.expanduser(classifier_path))
                     else datasets.load(dataset, data_dir, "test"))
        clf = classifier.load_or_train(classifier_path, data_dir, say, dataset,
                                       train_data, test_data)
        test_data = test_data or datasets.load(dataset, data_dir, "test")
        self._params = clf.params
        self._reference = make_reference(clf.params, train_data.arrays,
                                         test_data.arrays, QUICK_SAMPLES,
                                         with_precision_recall=False)

    def score(self, g_variables: dict[str, Any], suffix: str = "") -> dict[str, float]:
        """`cond_acc<suffix>` and `fd_ratio<suffix>` of one generator."""
        result = evaluate_generator(g_variables, self._params, self._reference,
                                    QUICK_SAMPLES, with_precision_recall=False)
        return {"cond_acc" + suffix: result["conditional_accuracy"],
                "fd_ratio" + suffix: result["frechet_ratio"]}

    def __call__(self, g_state: Any, config: Config) -> dict[str, float]:
        """Scores G's own weights (`cond_acc`, `fd_ratio`) and its average as
        the run samples it (`..._ema`); with `ema_compare`, every average with
        either BatchNorm mode too (`..._ema<decay>_<mode>`)."""
        scores = self.score(sampling.g_variables(g_state))
        if config.ema_compare:
            for decay, average in zip(g_state.ema_decays, g_state.ema):
                for mode in EMA_BATCH_STATS:
                    scores.update(self.score(ema.for_sampling(average, mode),
                                             "_" + ema.label(decay, mode)))
            product = "_" + ema.label(config.ema_decay, config.ema_batch_stats)
            scores["cond_acc_ema"] = scores["cond_acc" + product]
            scores["fd_ratio_ema"] = scores["fd_ratio" + product]
        elif g_state.ema:
            scores.update(self.score(
                ema.sampling_variables(g_state, config.ema_batch_stats), "_ema"))
        return scores
