"""Tests for gan.images: exact pixel mapping, grid layout, atomic writes, GIF."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image, ImageSequence

from gan.images import GRID_PAD_VALUE, grid_image, save_gif, save_png, to_uint8


def _tiles(n: int, h: int = 3, w: int = 4) -> np.ndarray:
    """Distinct uint8 tiles: tile k has values k*16 + 0..h*w-1 (all different from the pad)."""
    base = np.arange(h * w, dtype=np.uint8).reshape(h, w)
    out = np.stack([base + 16 * k + 100 for k in range(n)]).astype(np.uint8)
    assert not (out == GRID_PAD_VALUE).any()
    return out


# --- to_uint8 ----------------------------------------------------------------


def test_to_uint8_exact_mapping_and_shapes():
    x = np.array([-1.0, 0.0, 1.0, -0.5], dtype=np.float32).reshape(1, 1, 4, 1)
    out = to_uint8(x)
    assert out.dtype == np.uint8
    assert out.shape == (1, 1, 4)
    np.testing.assert_array_equal(out[0, 0], [0, 128, 255, round(0.5 * 127.5)])
    # [N, H, W] input works the same.
    np.testing.assert_array_equal(to_uint8(x[..., 0]), out)


def test_to_uint8_clips_out_of_range():
    x = np.array([[[-5.0, -1.01, 1.01, 7.0, np.nan]]])
    np.testing.assert_array_equal(to_uint8(x)[0, 0], [0, 0, 255, 255, 0])


def test_to_uint8_rejects_bad_shape():
    with pytest.raises(ValueError):
        to_uint8(np.zeros((28, 28)))


# --- grid_image ----------------------------------------------------------------


@pytest.mark.parametrize("rows,cols,scale,pad", [(2, 3, 1, 2), (3, 2, 2, 1), (1, 1, 3, 0), (2, 2, 1, 5)])
def test_grid_image_size_and_tile_placement(rows, cols, scale, pad):
    h, w = 3, 4
    tiles = _tiles(rows * cols, h, w)
    img = grid_image(tiles, rows, cols, scale=scale, pad=pad)
    assert img.mode == "L"
    arr = np.asarray(img)
    assert arr.shape == (rows * (h * scale + pad) + pad, cols * (w * scale + pad) + pad)
    th, tw = h * scale, w * scale
    mask = np.zeros(arr.shape, dtype=bool)
    for k in range(rows * cols):
        r, c = divmod(k, cols)  # row-major order
        y, x = pad + r * (th + pad), pad + c * (tw + pad)
        expected = np.kron(tiles[k], np.ones((scale, scale), dtype=np.uint8))
        np.testing.assert_array_equal(arr[y : y + th, x : x + tw], expected)
        mask[y : y + th, x : x + tw] = True
    # Everything that is not a tile is separator gray.
    assert (arr[~mask] == GRID_PAD_VALUE).all()


def test_grid_image_accepts_channel_axis():
    tiles = _tiles(4)
    np.testing.assert_array_equal(
        np.asarray(grid_image(tiles[..., None], 2, 2)), np.asarray(grid_image(tiles, 2, 2))
    )


@pytest.mark.parametrize("n,rows,cols", [(5, 2, 3), (7, 2, 3), (0, 1, 1)])
def test_grid_image_wrong_count_raises(n, rows, cols):
    with pytest.raises(ValueError):
        grid_image(np.zeros((n, 3, 3), np.uint8), rows, cols)


def test_grid_image_rejects_float():
    with pytest.raises(ValueError):
        grid_image(np.zeros((4, 3, 3), np.float32), 2, 2)


# --- save_png --------------------------------------------------------------------


def test_save_png_roundtrip(tmp_path):
    tiles = _tiles(6)
    path = tmp_path / "grid.png"
    save_png(str(path), grid_image(tiles, 2, 3, scale=2, pad=1))
    with Image.open(path) as im:
        assert im.format == "PNG"
        np.testing.assert_array_equal(np.asarray(im), np.asarray(grid_image(tiles, 2, 3, scale=2, pad=1)))
    assert os.listdir(tmp_path) == ["grid.png"]  # no temp files left behind


def test_save_png_failure_keeps_existing_file(tmp_path, monkeypatch):
    path = tmp_path / "grid.png"
    path.write_bytes(b"old contents")

    def boom(self, fp, *args, **kwargs):
        # Write part of a file first, like a crash mid-encode would.
        with open(fp, "wb") as f:
            f.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_png(str(path), grid_image(_tiles(4), 2, 2))
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["grid.png"]  # temp file cleaned up


def test_save_png_missing_dir_raises(tmp_path):
    with pytest.raises(OSError):
        save_png(str(tmp_path / "nope" / "grid.png"), grid_image(_tiles(1), 1, 1))


# --- save_gif ----------------------------------------------------------------------


def _write_frames(tmp_path, n):
    paths = []
    for i in range(n):
        p = tmp_path / f"epoch_{i:03d}.png"
        save_png(str(p), grid_image(_tiles(4) + i, 2, 2, scale=2))  # + i: frames must differ (GIF merges duplicates)
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("n", [1, 4])
def test_save_gif_frames_and_loop(tmp_path, n):
    frames = _write_frames(tmp_path, n)
    out = tmp_path / "progress.gif"
    save_gif(frames, str(out), duration_ms=200)
    with Image.open(out) as im:
        assert im.format == "GIF"
        assert im.info.get("loop") == 0
        durations = [f.info.get("duration") for f in ImageSequence.Iterator(im)]
        assert len(durations) == n
    if n > 1:
        assert durations[0] == 200
        assert durations[-1] == 600  # last frame held longer
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_save_gif_frames_match_pngs(tmp_path):
    frames = _write_frames(tmp_path, 3)
    out = tmp_path / "progress.gif"
    save_gif(frames, str(out))
    with Image.open(out) as im:
        for f, p in zip(ImageSequence.Iterator(im), frames):
            with Image.open(p) as ref:
                np.testing.assert_array_equal(np.asarray(f.convert("L")), np.asarray(ref))


def test_save_gif_empty_raises(tmp_path):
    with pytest.raises(ValueError):
        save_gif([], str(tmp_path / "x.gif"))
