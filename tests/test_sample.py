"""sample.py as a user runs it, with the shipped generator: numbers, grids,
morph GIFs, verified digits, and its one-line refusals."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gan import classifier, images
from gan.digit_writer import DigitWriter
from tests.test_cli import ROOT, SHARED_CACHE

# Left out of the quick loop (`pytest -m "not slow"`): runs of sample.py.
pytestmark = pytest.mark.slow


def sample(cwd, *args):
    env = dict(os.environ, GAN_COMPILE_CACHE=SHARED_CACHE, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"),
                           *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)


def test_number_lines_png_and_npz_equal_the_python_api(tmp_path):
    result = sample(tmp_path, "--number", "2026 11", "--styles", 3, "--scale", 1,
                    "--out", "n.png", "--npz", "n.npz")
    assert result.returncode == 0, result.stderr
    assert "'2026 11' in 3 handwriting(s)" in result.stdout
    want = DigitWriter.load().number("2026 11", styles=3)
    with Image.open(tmp_path / "n.png") as png:
        assert png.size == (7 * 28 + 6 * images.DIGIT_GAP + 2 * images.LINE_GAP,
                            3 * (28 + images.LINE_GAP) + images.LINE_GAP)
        np.testing.assert_array_equal(np.asarray(png), np.asarray(
            images.number_image(want.images)))
    mode = os.stat(tmp_path / "n.png").st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask                      # not mkstemp's 0600
    data = np.load(tmp_path / "n.npz")
    assert data["images"].shape == (18, 28, 28) and data["images"].dtype == np.uint8
    for name, value in want.digits().items():
        np.testing.assert_array_equal(data[name], value, err_msg=name)


def test_npz_alone_writes_no_picture(tmp_path):
    result = sample(tmp_path, "--digits", "0123456789", "--per-digit", 300,
                    "--npz", "set.npz")
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path) == ["set.npz"]
    data = np.load(tmp_path / "set.npz")
    assert data["images"].shape == (3000, 28, 28)
    np.testing.assert_array_equal(data["labels"], np.repeat(np.arange(10), 300))


def test_a_grid_wider_than_a_screen_shows_its_first_columns(tmp_path):
    result = sample(tmp_path, "--digits", "01", "--per-digit", 100, "--out", "w.png",
                    "--npz", "w.npz")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "w.png") as png:
        assert png.width <= 3840
        columns = (png.width - 2) // (2 * 28 + 2)
    assert f"the picture shows the first {columns} columns" in result.stdout
    assert np.load(tmp_path / "w.npz")["images"].shape == (200, 28, 28)


@pytest.mark.parametrize("args,frames", [
    (["--interpolate", "digits", "--styles", 2], 80),
    (["--interpolate", "styles", "--number", "26", "--styles", 3], 36),
])
def test_interpolation_gifs(tmp_path, args, frames):
    result = sample(tmp_path, *args, "--out", "m.gif")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "m.gif") as gif:
        assert gif.n_frames == frames


def test_verified_number_is_read_right_by_the_classifier(tmp_path):
    result = sample(tmp_path, "--number", "5555 8", "--styles", 8, "--verify",
                    "--npz", "v.npz")
    assert result.returncode == 0, result.stderr
    assert "redrawn after the classifier misread them" in result.stdout
    data = np.load(tmp_path / "v.npz")
    logits, _ = classifier.predict(classifier.load(classifier.SHIPPED).params,
                                   data["images"])
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert (logits.argmax(1) == data["labels"]).all()
    assert probs.max(1).min() >= 0.9


@pytest.mark.parametrize("args,words", [
    (["--number", "20a6"], "'a'"),
    (["--number", ""], "at least one digit"),
    (["--number", "1" * 65], "at most 64"),
    (["--number", "26", "--styles", 0], "--styles must be a whole number between 1 "
                                        "and 64, got 0"),
    (["--number", "26", "--seed", -1], "--seed must be a whole number between 0 and "
                                       "4294967295, got -1"),
    (["--number", "26", "--seed", 2**32], "got 4294967296"),
    (["--digits", "1", "--per-digit", 10**6], "--per-digit must be a whole number "
                                              "between 1 and 10000"),
    (["--digits", "0123456789", "--per-digit", 1001], "one call draws at most 10,000"),
    (["--number", "26", "--out", "x.jpg"], "must end in .png"),
    (["--interpolate", "styles"], "needs --number"),
    (["--interpolate", "digits", "--number", "2026"], "--number is for --interpolate styles"),
    (["--interpolate", "digits", "--out", "m.png"], "must end in .gif"),
    (["--interpolate", "digits", "--npz", "m.npz"], "not --interpolate"),
    (["--digits", "12a"], "--digits must be 1 to 64 digits 0-9"),
    (["--scale", 0], "--scale"),
    (["--number", "26", "--npz", "digits.msgpack"], "must end in .npz"),
])
def test_bad_requests_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys,
                                                      args, words):
    """In this process (the exit path itself is run end to end in
    tests/test_outputs.py and tests/test_cli.py): each fails in its checks."""
    import sample as sample_py
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        sample_py.main([str(a) for a in args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(lines) == 1, lines
    assert words in lines[0]
    assert os.listdir(tmp_path) == []

