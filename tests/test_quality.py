"""Quality metrics on cases with known answers, and each fast form vs a plain one."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from gan import classifier, quality
from tests.synthetic import block_digits, block_images


# --------------------------------------------------------------------------
# Frechet distance
# --------------------------------------------------------------------------


def _random_cov(rng, d):
    a = rng.normal(size=(d, 2 * d))
    return a @ a.T / (2 * d)


def _frechet_textbook(a: quality.Gaussian, b: quality.Gaussian) -> float:
    """The usual formula with a general matrix square root (scipy, float64)."""
    import scipy.linalg  # noqa: PLC0415 - installed with jax
    covmean = scipy.linalg.sqrtm(a.cov @ b.cov).real
    return float(np.sum((a.mean - b.mean) ** 2) + np.trace(a.cov)
                 + np.trace(b.cov) - 2 * np.trace(covmean))


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    va, vb = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    a = quality.Gaussian(rng.normal(size=8), np.diag(va))
    b = quality.Gaussian(rng.normal(size=8), np.diag(vb))
    want = np.sum((a.mean - b.mean) ** 2) + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2)
    assert quality.frechet_distance(a, b) == pytest.approx(want, rel=1e-10)


def test_frechet_distance_matches_the_textbook_sqrtm_formula():
    rng = np.random.default_rng(1)
    a = quality.Gaussian(rng.normal(size=16), _random_cov(rng, 16))
    b = quality.Gaussian(rng.normal(size=16), _random_cov(rng, 16))
    # Both in float64; sqrtm's Schur iteration leaves ~1e-9 relative round-off.
    assert quality.frechet_distance(a, b) == pytest.approx(_frechet_textbook(a, b),
                                                            rel=1e-6)
    assert quality.frechet_distance(a, b) == pytest.approx(
        quality.frechet_distance(b, a), rel=1e-9)


def test_frechet_distance_of_a_set_to_itself_is_zero_and_grows_with_a_shift():
    x = np.random.default_rng(2).normal(size=(500, 12))
    g = quality.fit_gaussian(x)
    assert quality.frechet_distance(g, g) < 1e-9
    shifted = quality.fit_gaussian(x + 0.5)           # same covariance, mean + 0.5
    assert quality.frechet_distance(g, shifted) == pytest.approx(12 * 0.25, rel=1e-6)


# --------------------------------------------------------------------------
# Precision and recall
# --------------------------------------------------------------------------


def _precision_recall_plain(real, fake, k):
    """All pairwise distances in numpy float64, no chunks, no top_k."""
    def radii(x):
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        return np.sort(d, axis=1)[:, k]            # column 0 is the point itself

    def cover(q, p, r):
        d = np.linalg.norm(q[:, None] - p[None], axis=-1)
        return float(np.mean(np.any(d <= r[None], axis=1)))

    return cover(fake, real, radii(real)), cover(real, fake, radii(fake))


def test_precision_recall_equals_the_plain_computation(monkeypatch):
    monkeypatch.setattr(quality, "DISTANCE_CHUNK", 37)  # several uneven chunks
    rng = np.random.default_rng(3)
    real = rng.normal(size=(300, 6)).astype(np.float32)
    fake = (rng.normal(size=(250, 6)) * 0.8 + 0.6).astype(np.float32)
    got = quality.precision_recall(real, fake, k=3)
    want = _precision_recall_plain(real.astype(np.float64), fake.astype(np.float64), 3)
    # Fractions of counts: equal unless a point sits on a ball's edge to ~1e-6.
    assert got == pytest.approx(want, abs=1.0 / 250)
    assert 0.1 < got[0] < 0.99 and 0.1 < got[1] < 0.99   # a non-trivial case


def test_precision_recall_known_answers():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(200, 4)).astype(np.float32)
    b = a + 100.0                                        # far from every point of a
    assert quality.precision_recall(a, a) == (1.0, 1.0)
    assert quality.precision_recall(a, b) == (0.0, 0.0)
    # Samples cover one of two real modes: all realistic, half the variety.
    real = np.concatenate([a, b])
    assert quality.precision_recall(real, a) == (1.0, 0.5)


# --------------------------------------------------------------------------
# The classifier and the scores of a sample set
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def judged():
    """A classifier trained on block digits, and a reference from them."""
    train_x, train_y = block_digits(1200, seed=10)
    test_x, test_y = block_digits(400, seed=11)
    params = classifier.train(train_x, train_y, jax.random.key(0), epochs=2,
                              batch_size=50)
    reference = quality.make_reference(params, (train_x, train_y), (test_x, test_y),
                                        num_real=400)
    return params, reference, test_x, test_y


def test_classifier_learns_block_digits(judged):
    params, reference, test_x, test_y = judged
    assert reference.classifier_accuracy > 0.95
    assert classifier.accuracy(params, test_x, test_y) == reference.classifier_accuracy


def test_real_digits_score_like_the_classifier_and_near_the_floor(judged):
    params, reference, _, _ = judged
    x, y = block_digits(400, seed=12)                    # unseen real digits
    result = quality.score(params, x, y, reference)
    assert result["conditional_accuracy"] == pytest.approx(
        classifier.accuracy(params, x, y))
    assert result["conditional_accuracy"] > 0.95
    assert result["cross_entropy"] < 0.3
    assert 0.5 < result["frechet_ratio"] < 2.0           # as real as real digits
    # Two real sets of 400 score ~0.8 with k = 3 (k-NN balls of a finite sample
    # miss some of the same distribution); noise scores ~0 (below).
    assert result["precision"] > 0.6 and result["recall"] > 0.6
    assert result["real_precision"] > 0.6 and result["real_recall"] > 0.6
    assert len(result["per_digit_accuracy"]) == 10


def test_identical_sets_have_zero_distance_and_full_precision_recall(judged):
    params, reference, test_x, test_y = judged
    result = quality.score(params, test_x, test_y, reference)
    assert result["frechet_distance"] < 1e-6
    assert np.nanmax(result["per_digit_frechet"]) < 1e-6
    assert result["precision"] == 1.0 and result["recall"] == 1.0


def test_shuffled_labels_give_chance_conditional_accuracy(judged):
    params, reference, _, _ = judged
    x, y = block_digits(2000, seed=13)
    wrong = np.random.default_rng(0).permutation(y)
    result = quality.score(params, x, wrong, reference, with_precision_recall=False)
    assert 0.05 < result["conditional_accuracy"] < 0.15
    assert result["cross_entropy"] > 1.0
    # The images are real digits, so the feature distance stays near the floor.
    assert result["frechet_ratio"] < 2.0


def test_one_digit_missing_is_named_worst(judged):
    params, reference, _, _ = judged
    x, y = block_digits(1000, seed=14)
    keep = y != 3
    x, y = x[keep], y[keep]
    requested = y.copy()
    sevens = np.flatnonzero(y == 7)
    requested[sevens[::2]] = 3                           # a 3 is asked, a 7 drawn
    result = quality.score(params, x, requested, reference, with_precision_recall=False)
    assert result["worst_digit"] == 3
    assert result["worst_digit_accuracy"] < 0.05
    assert min(a for d, a in enumerate(result["per_digit_accuracy"]) if d != 3) > 0.9


def test_noise_images_score_far_from_real(judged):
    params, reference, _, _ = judged
    noise = np.random.default_rng(5).integers(0, 256, (400, 28, 28)).astype(np.uint8)
    result = quality.score(params, noise, np.arange(400) % 10, reference)
    assert result["frechet_ratio"] > 10
    assert result["precision"] < 0.1


def test_generated_digits_are_scored_against_the_labels_asked_for(judged, monkeypatch):
    """A stand-in generator that draws the block digit of each label it is
    given scores as real digits do; sampling other labels than those scored
    against would score near 0."""
    params, reference, _, _ = judged
    asked = []

    def block_generator(variables, z, labels):
        asked.append(np.asarray(labels))
        return block_images(labels, seed=len(asked))

    monkeypatch.setattr(quality.sampling, "generate_uint8", block_generator)
    result = quality.evaluate_generator(None, params, reference, num_samples=300,
                                         with_precision_recall=False)
    assert np.array_equal(np.bincount(np.concatenate(asked)), np.full(10, 30))
    assert result["conditional_accuracy"] > 0.95
    assert min(result["per_digit_accuracy"]) > 0.8


def test_sample_inputs_cycle_through_the_digits():
    z, labels = quality.sample_inputs(10_000, seed=0)
    assert z.shape == (10_000, 100)
    assert np.array_equal(np.bincount(labels), np.full(10, 1000))
    z2, _ = quality.sample_inputs(10_000, seed=0)
    assert np.array_equal(z, z2)


# --------------------------------------------------------------------------
# The classifier file
# --------------------------------------------------------------------------


def test_classifier_file_round_trip_and_damage(tmp_path, judged):
    params = judged[0]
    path = tmp_path / "clf.msgpack"
    classifier.save(str(path), params, 0.97)
    loaded = classifier.load(str(path))
    assert loaded.test_accuracy == pytest.approx(0.97)
    assert all(np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(params), jax.tree.leaves(loaded.params)))
    # A cached file is used as is: no data needed.
    again = classifier.load_or_train(str(path), data_dir=str(tmp_path / "none"))
    assert again.test_accuracy == pytest.approx(0.97)

    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(classifier.ClassifierError, match="not a classifier file"):
        classifier.load(str(path))
    assert path.read_bytes() == data[: len(data) // 2]   # left for the user to see

    other = jax.tree.map(lambda a: np.zeros(np.shape(a)[:-1] + (3,)), params)
    classifier.save(str(path), other, 0.5)
    with pytest.raises(classifier.ClassifierError, match="another classifier"):
        classifier.load(str(path))
