"""DigitWriter (gan/writer.py): numbers in one handwriting per line, verified
digits, interpolation, and the label-vector input it needs."""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan import digit_writer, models
from gan.config import Config
from gan.training import create_train_states
from gan.digit_writer import DigitWriter, WriterError
from tests.synthetic import block_images, classify_blocks


@pytest.fixture(scope="module")
def w():
    """A writer with freshly initialised weights: no training needed to check
    how noise and labels are laid out."""
    g, _ = create_train_states(Config(), jax.random.key(3))
    return DigitWriter({"params": g.params, "batch_stats": g.batch_stats})


@pytest.mark.parametrize("module", [models.Generator(), models.PlainGenerator()])
def test_label_vectors_with_one_hot_rows_equal_int_labels_exactly(module):
    """The integer path is the one-hot special case of the label-vector path,
    and a blend of two digits enters G's first layer as that blend: its output
    is the same blend of the two digits' outputs (an affine layer; 1e-5 of
    float32 rounding)."""
    z = jax.random.normal(jax.random.key(0), (10, models.NOISE_DIM))
    variables = module.init(jax.random.key(1), z, jnp.arange(10), train=False)

    def first_layer_and_image(labels):
        image, state = module.apply(variables, z, labels, train=False,
                                    capture_intermediates=True, mutable=["intermediates"])
        return state["intermediates"]["deconv1"]["__call__"][0], image

    ints, by_int = first_layer_and_image(jnp.arange(10))
    _, by_vector = first_layer_and_image(jnp.eye(10))
    np.testing.assert_array_equal(by_int, by_vector)
    nexts, _ = first_layer_and_image((jnp.arange(10) + 1) % 10)
    blend, _ = first_layer_and_image(0.7 * jnp.eye(10) + 0.3 * jnp.roll(jnp.eye(10), 1, 1))
    np.testing.assert_allclose(blend, 0.7 * ints + 0.3 * nexts, atol=1e-5)


def test_a_number_is_one_handwriting_per_line(w):
    """Every digit of a line uses the line's noise vector: the same digit twice
    in a line is the same picture, and each cell equals a single draw with that
    line's noise; lines differ; a space is a black cell."""
    number = w.number("2 22", styles=3, seed=5)
    assert number.images.shape == (3, 4, 28, 28) and number.images.dtype == np.uint8
    noise = digit_writer.line_noise(jax.random.key(5), 3)
    for line in range(3):
        cells = number.images[line]
        assert not cells[1].any()                                  # the space
        np.testing.assert_array_equal(cells[2], cells[3])
        np.testing.assert_array_equal(cells[0], w.draw(noise[line:line + 1], [2])[0])
    assert not np.array_equal(number.images[0, 0], number.images[1, 0])
    again = w.number("2 22", styles=3, seed=5)
    np.testing.assert_array_equal(again.images, number.images)


def test_number_digits_lists_each_digit_with_its_line_and_position(w):
    number = w.number("20 6", styles=2)
    d = number.digits()
    assert d["images"].shape == (6, 28, 28)
    assert d["labels"].tolist() == [2, 0, 6, 2, 0, 6]
    assert d["line"].tolist() == [0, 0, 0, 1, 1, 1]
    assert d["position"].tolist() == [0, 1, 3, 0, 1, 3]
    for image, line, position in zip(d["images"], d["line"], d["position"]):
        np.testing.assert_array_equal(image, number.images[line, position])


@pytest.mark.parametrize("text,styles,words", [
    ("20a6", 1, "'a'"), ("", 1, "at least one digit"), ("   ", 1, "at least one digit"),
    ("1" * 65, 1, "at most 64"), ("2026", 0, "`styles`"), ("2026", 65, "`styles`"),
])
def test_bad_requests_are_one_line_errors(w, text, styles, words):
    with pytest.raises(WriterError, match=words):
        w.number(text, styles=styles)


# ---------------------------------------------------------------------------
# Verification, with block digits standing in for the generator and a reader
# that misreads a known fraction of the pictures
# ---------------------------------------------------------------------------


class BlockWriter(DigitWriter):
    """Draws the block digit of each label, its background noise seeded by the
    noise vector: a fresh vector gives a fresh picture."""

    def draw(self, z, labels):
        labels = np.asarray(labels)
        return np.stack([block_images(labels[i:i + 1], seed=zlib.crc32(z[i].tobytes()))[0]
                         for i in range(len(labels))])


def rejecting_reader(images):
    """Reads block digits exactly, except it misreads one picture in four (by a
    hash of its pixels, so the same picture is always read the same way)."""
    read = classify_blocks(images)
    misread = np.array([zlib.crc32(im.tobytes()) % 4 == 0 for im in images])
    return np.where(misread, (read + 1) % 10, read), np.ones(len(images))


def test_verify_redraws_every_line_with_a_misread_digit(w):
    bw = BlockWriter(w.variables, reader=rejecting_reader)
    plain = bw.number("2026", styles=40, seed=1)
    checked = bw.number("2026", styles=40, seed=1, verify=True)
    bad_lines = {line for line in range(40)
                 if (rejecting_reader(plain.images[line])[0] != [2, 0, 2, 6]).any()}
    assert 15 < len(bad_lines) < 40          # about 1 - 0.75^4 = 68% of the lines
    assert checked.redrawn == len(bad_lines) and checked.unverified == 0
    for line in range(40):
        read, _ = rejecting_reader(checked.images[line])
        assert read.tolist() == [2, 0, 2, 6]
        np.testing.assert_array_equal(checked.images[line, 0], checked.images[line, 2])
        if line not in bad_lines:
            np.testing.assert_array_equal(checked.images[line], plain.images[line])
        else:  # redrawn as a whole: one fresh noise vector for the line
            assert not np.array_equal(checked.images[line], plain.images[line])
    again = bw.number("2026", styles=40, seed=1, verify=True)
    np.testing.assert_array_equal(again.images, checked.images)


def test_verify_redraws_unsure_digits_and_reports_what_it_could_not_fix(w):
    """Below MIN_CONFIDENCE counts as misread; a reader that never accepts a 7
    leaves those lines unverified after MAX_REDRAWS draws."""
    def unsure_of_sevens(images):
        read = classify_blocks(images)
        return read, np.where(read == 7, 0.5, 1.0)

    bw = BlockWriter(w.variables, reader=unsure_of_sevens)
    result = bw.number("17 1", styles=3, verify=True)
    assert result.redrawn == 3 and result.unverified == 3
    assert bw.number("11", styles=3, verify=True).redrawn == 0


def test_verified_grid_redraws_single_cells(w):
    bw = BlockWriter(w.variables, reader=rejecting_reader)
    plain, _ = bw.grid("0123456789", per_digit=8, seed=2)
    checked, redrawn = bw.grid("0123456789", per_digit=8, seed=2, verify=True)
    flat = plain.reshape(-1, 28, 28)
    bad = rejecting_reader(flat)[0] != np.repeat(np.arange(10), 8)
    assert redrawn == bad.sum() > 0
    np.testing.assert_array_equal(checked.reshape(-1, 28, 28)[~bad], flat[~bad])
    assert (rejecting_reader(checked.reshape(-1, 28, 28))[0]
            == np.repeat(np.arange(10), 8)).all()


# ---------------------------------------------------------------------------
# Interpolation
# ---------------------------------------------------------------------------


def test_slerp_follows_the_great_circle():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=100), rng.normal(size=100)
    t = np.linspace(0, 1, 5)
    path = digit_writer.slerp(a, b, t)
    np.testing.assert_allclose(path[0], a, atol=1e-5)
    np.testing.assert_allclose(path[-1], b, atol=1e-5)
    norms = np.linalg.norm(path, axis=1)
    np.testing.assert_allclose(norms, (1 - t) * np.linalg.norm(a) + t * np.linalg.norm(b),
                               rtol=1e-5)
    cos = lambda u, v: u @ v / np.linalg.norm(u) / np.linalg.norm(v)  # noqa: E731
    total = np.arccos(cos(a, b))
    # The angle from a grows linearly. atol 1e-3 rad: the path is float32, and
    # arccos near 0 turns a 5e-8 cosine error into 3e-4 rad.
    np.testing.assert_allclose([np.arccos(np.clip(cos(a, p), -1, 1)) for p in path],
                               t * total, atol=1e-3)


def test_style_morph_passes_through_each_line_of_the_number(w):
    frames = w.style_morph("20 6", styles=3, frames_per_style=4, seed=7)
    assert frames.shape == (12, 4, 28, 28)
    lines = w.number("20 6", styles=3, seed=7).images
    for k in range(3):   # frame 4k is line k (slerp at t = 0, to float rounding)
        diff = np.abs(frames[4 * k].astype(int) - lines[k].astype(int))
        assert diff.max() <= 1
    assert not np.array_equal(frames[1], frames[0])


def test_digit_morph_starts_each_segment_at_the_digit(w):
    frames = w.digit_morph(styles=3, frames_per_digit=4, seed=2)
    assert frames.shape == (40, 3, 28, 28)
    grid, _ = w.grid("0123456789", per_digit=3, seed=2)   # the same noise per column
    for d in range(10):
        np.testing.assert_array_equal(frames[4 * d], grid[d])


# ---------------------------------------------------------------------------
# The API is as strict as the command line (issue 26): one rule set, gan.limits
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("call,words", [
    # A seed past 32 bits wrapped onto another seed's pixels; -1 onto 2**32 - 1.
    (lambda w: w.number("7", seed=2**32), "`seed` must be a whole number between 0 "
     "and 4294967295, got 4294967296"),
    (lambda w: w.number("7", seed=-1), "got -1"),
    (lambda w: w.number("7", seed=None), "got None"),
    (lambda w: w.number("7", seed="x"), "got 'x'"),
    (lambda w: w.number("7", seed=1.5), "got 1.5"),
    (lambda w: w.number("7", seed=2**64), "got 18446744073709551616"),
    (lambda w: w.number("7", seed=float("nan")), "got nan"),
    (lambda w: w.number("7", seed=True), "got True"),
    (lambda w: w.number("7", styles=2.5), "`styles` must be a whole number between 1 "
     "and 64, got 2.5"),
    (lambda w: w.number("7", styles="3"), "got '3'"),
    (lambda w: w.number("7", styles=None), "got None"),
    (lambda w: w.number(2026), "the number must be text .* got 2026"),
    (lambda w: w.number(None), "got None"),
    (lambda w: w.grid(2026), "`digits` must be 1 to 64 digits 0-9, like '2026'; got 2026"),
    (lambda w: w.grid("1", seed=-1), "`seed`"),
    (lambda w: w.number("7", verify="no"), "`verify` must be True or False, got 'no'"),
    (lambda w: w.grid("1", verify=1), "`verify` must be True or False, got 1"),
    # Ran for more than 9 minutes; one call now draws at most 10,000 digits.
    (lambda w: w.grid("1", per_digit=10**6), "`per_digit` must be a whole number "
     "between 1 and 10000, got 1000000"),
    (lambda w: w.grid("0123456789", per_digit=1001), "asks for 10,010 digits"),
    (lambda w: w.style_morph("2026", styles=64, frames_per_style=100), "asks for "
     "25,600 digits"),
    (lambda w: w.digit_morph(styles=64, frames_per_digit=100), "asks for 64,000"),
    (lambda w: w.digit_morph(frames_per_digit=0), "`frames_per_digit`"),
])
def test_bad_api_arguments_are_writer_errors(w, call, words):
    with pytest.raises(WriterError, match=words):
        call(w)


def test_whole_numbers_are_the_same_seed_whatever_their_type(w):
    """An int, a numpy int and a whole float (the web page and JSON send
    floats) are one seed, and the same request draws the same pixels."""
    want = w.number("42", styles=2, seed=5).images
    for seed in (np.int64(5), np.uint32(5), 5.0):
        np.testing.assert_array_equal(w.number("42", styles=2.0, seed=seed).images,
                                      want)
    assert not np.array_equal(w.number("42", styles=2, seed=6).images, want)


def test_load_errors_have_kinds_a_caller_can_catch(tmp_path):
    from gan.errors import CheckpointError
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DigitWriter.load(str(tmp_path / "missing.msgpack"))
    (tmp_path / "bad.msgpack").write_bytes(b"not msgpack")
    with pytest.raises(ValueError, match="not a generator weights file"):
        DigitWriter.load(str(tmp_path / "bad.msgpack"))
    for path in ("", 7):
        with pytest.raises(CheckpointError):      # a ValueError too
            DigitWriter.load(path)
    with pytest.raises(WriterError, match="`raw` must be True or False"):
        DigitWriter.load(raw="yes")
