"""Writing in the user's handwriting (gan/handwriting.py): MNIST's preparation
of a drawn digit, the inversion that finds its noise vector, and the API and
CLI on top."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageDraw

from gan import handwriting, models, sampling
from gan.classifier import Classifier
from gan.digit_writer import DigitWriter, WriterError
from gan.handwriting import HandwritingError, centre_of_mass, prepare
from tests.test_cli import run


def _stroke_picture(width=300, height=200, dark_on_light=True) -> np.ndarray:
    """A thick, off-centre diagonal stroke: uint8 `[height, width]`."""
    im = Image.new("L", (width, height), 255 if dark_on_light else 0)
    ImageDraw.Draw(im).line([(40, 30), (140, 170)], fill=0 if dark_on_light else 255,
                            width=18)
    return np.asarray(im)


def _ink_box(image: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(image > 0.25 * 255)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


# ---------------------------------------------------------------------------
# Preparation, as MNIST's digits were prepared
# ---------------------------------------------------------------------------


def test_a_stroke_is_scaled_to_the_20_pixel_box_and_centred_by_its_mass():
    """Strokes of several lengths, angles and places: each one's longer side
    becomes 20 px and its centre of mass lands within half a pixel (whole-pixel
    shifts) of (14, 14), where MNIST's digits have theirs (measured 13.99, 14.00
    on the test set); on average within 0.2 px."""
    centres = []
    rng = np.random.default_rng(0)
    for _ in range(12):
        im = Image.new("L", (320, 240), 255)
        points = [tuple(int(v) for v in rng.integers((10, 10), (310, 230)))
                  for _ in range(3)]
        ImageDraw.Draw(im).line(points, fill=0, width=int(rng.integers(6, 30)))
        out = prepare(np.asarray(im))
        assert out.shape == (28, 28) and out.dtype == np.uint8
        assert max(_ink_box(out)) in (19, 20, 21)        # the longer side, 20 px
        cy, cx = centre_of_mass(out)
        assert abs(cy - 14) <= 0.55 and abs(cx - 14) <= 0.55, (cy, cx)
        assert out[0].max() == out[-1].max() == out[:, 0].max() == 0
        centres.append((cy, cx))
    assert np.abs(np.mean(centres, axis=0) - 14).max() < 0.2, np.mean(centres, axis=0)


def test_dark_on_light_and_light_on_dark_give_the_same_digit():
    dark = prepare(_stroke_picture(dark_on_light=True))
    light = prepare(_stroke_picture(dark_on_light=False))
    np.testing.assert_array_equal(dark, light)
    assert dark.max() == 255 and dark[0, 0] == 0          # light ink on black


def test_pictures_of_every_kind_give_the_same_digit():
    """uint8, float [0, 1], bool arrays and PIL images (grey, RGB, and RGBA
    whose transparent background counts as white paper)."""
    u8 = _stroke_picture()
    want = prepare(u8)
    rgba = Image.new("RGBA", (300, 200), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).line([(40, 30), (140, 170)], fill=(0, 0, 0, 255), width=18)
    for picture in (u8.astype(np.float32) / 255, Image.fromarray(u8),
                    Image.fromarray(u8).convert("RGB"), rgba, u8 < 128):
        got = prepare(picture)
        assert np.abs(got.astype(int) - want).mean() < 2, type(picture)


def test_a_prepared_digit_is_left_as_it_is():
    """A digit already in MNIST's shape comes back unchanged (so MNIST's own
    digits are: measured on 1,000 test digits, docs/handwriting.md)."""
    digit = prepare(_stroke_picture())
    np.testing.assert_array_equal(prepare(digit), digit)


@pytest.mark.parametrize("picture,words", [
    (np.zeros((40, 40)), "blank"),
    (np.full((40, 40), 255, np.uint8), "blank"),
    (np.zeros((3, 40, 40)), "2-D picture"),
    (np.zeros((0, 5)), "2-D picture"),
    (np.full((10, 10), np.nan), "NaN"),
    (np.array([["a"]]), "holds numbers"),
    (Image.new("L", (5000, 4000)), "at most 16,777,216"),
])
def test_a_picture_without_a_digit_is_one_clear_error(picture, words):
    with pytest.raises(HandwritingError, match=words):
        prepare(picture)


def test_picture_files_that_cannot_be_read_are_one_clear_error(tmp_path):
    (tmp_path / "text.png").write_text("not a picture")
    (tmp_path / "big.png").write_bytes(b"\0" * (handwriting.MAX_FILE_BYTES + 1))
    for name, words in (("text.png", "not a picture pillow can read"),
                        ("big.png", "a picture of at most"),
                        ("missing.png", "No such file")):
        with pytest.raises(HandwritingError, match=words):
            handwriting.read_picture(str(tmp_path / name))


# ---------------------------------------------------------------------------
# Inversion
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def writer():
    return DigitWriter.load()


def _plain_inversion_loss(z, g_variables, clf_params, target, label):
    """The loss written out plainly, on the seed's plain generator."""
    drawn = models.PlainGenerator().apply(g_variables, z, jnp.full(len(z), label),
                                          train=False)
    _, feats = Classifier().apply({"params": clf_params}, drawn)
    _, target_feats = Classifier().apply({"params": clf_params}, target[None])
    pixel = jnp.mean(jnp.abs(drawn - target), axis=(1, 2, 3))
    feature = jnp.mean((feats - target_feats) ** 2, axis=1)
    prior = (jnp.linalg.norm(z, axis=1) - 10.0) ** 2 / 100.0
    return pixel + 0.05 * feature + 0.05 * prior


def test_the_inversion_loss_and_its_gradient_equal_a_plain_reference(writer):
    """Same parameters, the fast generator against the plain one: the loss to
    1e-5 and the gradient w.r.t. z to 1e-4 of its largest entry (float32
    round-off of two summation orders through a 4-layer network)."""
    z = jax.random.normal(jax.random.key(0), (3, models.NOISE_DIM))
    target = jnp.asarray(prepare(_stroke_picture()), jnp.float32)[..., None] / 127.5 - 1
    _, target_feats = Classifier().apply({"params": writer.classifier_params},
                                         target[None])
    fast = lambda z: handwriting.inversion_loss(  # noqa: E731
        z, writer.variables, writer.classifier_params, target, target_feats,
        jnp.full(3, 7))
    plain = lambda z: _plain_inversion_loss(  # noqa: E731
        z, writer.variables, writer.classifier_params, target, 7)
    np.testing.assert_allclose(fast(z), plain(z), rtol=1e-5)
    g_fast = jax.grad(lambda z: fast(z).sum())(z)
    g_plain = jax.grad(lambda z: plain(z).sum())(z)
    largest = float(jnp.abs(g_plain).max())
    assert float(jnp.abs(g_fast - g_plain).max()) <= 1e-4 * largest


@pytest.mark.slow
def test_inverting_a_generated_digit_redraws_it(writer):
    """G(z0, y) is a digit G can draw exactly; the fit must come close: mean
    absolute pixel error under 3% of the range (measured 0.5-2% over these
    digits), and under a third of a random noise vector's error."""
    z0 = np.asarray(jax.random.normal(jax.random.key(5), (4, models.NOISE_DIM)),
                    np.float32)
    labels = np.array([3, 7, 0, 8], np.int32)
    targets = sampling.generate_uint8(writer.variables, z0, labels)
    randoms = sampling.generate_uint8(writer.variables, z0[::-1].copy(), labels)
    for target, random_draw, label in zip(targets, randoms, labels):
        style = writer.style_from(target, label=int(label))
        random_error = np.abs(random_draw.astype(float) - target).mean() / 255
        assert style.pixel_error < 0.03, style.pixel_error
        assert style.pixel_error < random_error / 3, (style.pixel_error, random_error)
        assert abs(np.linalg.norm(style.z) - math.sqrt(models.NOISE_DIM)) < 3


@pytest.mark.slow
def test_a_number_in_a_style_is_every_digit_drawn_with_its_noise(writer):
    """... and the same picture and seed give the same style, another seed
    another."""
    style = writer.style_from(_stroke_picture(), label=1)
    np.testing.assert_array_equal(writer.style_from(_stroke_picture(), 1).z, style.z)
    assert not np.array_equal(writer.style_from(_stroke_picture(), 1, seed=1).z,
                              style.z)
    number = writer.number("2026", style=style)
    want = sampling.generate_uint8(writer.variables, np.tile(style.z, (4, 1)),
                                   np.array([2, 0, 2, 6], np.int32))
    np.testing.assert_array_equal(number.images[0], want)
    cells, _ = writer.grid("59", per_digit=1, style=style)
    np.testing.assert_array_equal(cells[:, 0], sampling.generate_uint8(
        writer.variables, np.tile(style.z, (2, 1)), np.array([5, 9], np.int32)))


@pytest.mark.slow
def test_the_label_is_read_or_asked_for(writer):
    """A clear digit needs no label; a picture the classifier is unsure of (G's
    0 and 6 in one handwriting, averaged: read as a 6 with 62% confidence)
    makes style_from ask for one rather than guess."""
    seven = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(seven).line([(60, 60), (240, 60), (120, 260)], fill=0, width=22)
    assert writer.style_from(seven).label == 7
    z = np.asarray(jax.random.normal(jax.random.key(0), (1, models.NOISE_DIM)),
                   np.float32)
    zero, six = writer.draw(z, np.array([0])), writer.draw(z, np.array([6]))
    blend = ((zero.astype(float) + six) / 2).astype(np.uint8)[0]
    with pytest.raises(HandwritingError, match="reads as a 6 with only 62% "
                       "confidence; say which digit it is"):
        writer.style_from(blend)
    for label in (10, -1, "7", 2.5):
        with pytest.raises(WriterError, match="`label` must be a whole number "
                           "between 0 and 9"):
            writer.style_from(seven, label=label)
    with pytest.raises(WriterError, match="`style` must come from"):
        writer.number("12", style=np.zeros(100))


@pytest.mark.slow
def test_sample_writes_a_number_in_the_style_of_a_picture(tmp_path, writer, capsys):
    seven = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(seven).line([(60, 60), (240, 60), (120, 260)], fill=0, width=22)
    seven.save(tmp_path / "my7.png")
    result = run("sample.py", "--number", "2026", "--style-from", tmp_path / "my7.png",
                 "--style-label", 7, "--show-fit", "--scale", 1, "--out",
                 tmp_path / "mine.png", "--npz", tmp_path / "mine.npz")
    assert result.returncode == 0, result.stderr
    assert "in the handwriting of" in result.stdout and "(a 7)" in result.stdout
    style = writer.style_from(seven, label=7)
    np.testing.assert_array_equal(np.load(tmp_path / "mine.npz")["images"],
                                  writer.number("2026", style=style).digits()["images"])
    with Image.open(tmp_path / "mine.png") as png:
        picture = np.asarray(png)
    from gan import images
    fit = np.asarray(images.number_image(np.stack([[style.source, style.fit]])))
    np.testing.assert_array_equal(picture[:fit.shape[0], :fit.shape[1]], fit)
    # Bad pictures and labels: one line, exit 2, nothing written (in this
    # process: the exit path itself ran end to end above and in test_sample).
    import sample
    Image.new("L", (50, 50), 255).save(tmp_path / "blank.png")
    (tmp_path / "text.png").write_text("hello")
    for args, words in (
            (["--style-from", tmp_path / "blank.png"], "the picture is blank"),
            (["--style-from", tmp_path / "text.png"], "not a picture pillow can read"),
            (["--style-from", tmp_path / "my7.png", "--style-label", 12],
             "--style-label must be a whole number between 0 and 9"),
            (["--show-fit"], "go with --style-from")):
        with pytest.raises(SystemExit) as exited:
            sample.main(["--number", "12", *map(str, args), "--out",
                         str(tmp_path / "bad.png")])
        lines = capsys.readouterr().err.strip().splitlines()
        assert exited.value.code == 2 and len(lines) == 1 and words in lines[0], lines
        assert not os.path.exists(tmp_path / "bad.png")
