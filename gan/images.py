"""Turning generator outputs into pictures: sample grids and GIFs (pillow;
charts are `gan.charts`).

Every writer goes through `gan.files.write_atomically`, so a crash or a full disk in the
middle of a save never leaves a truncated PNG/GIF behind and never destroys the
previous version of the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gan import files

# Gray separator between grid tiles: dark enough not to look like a digit stroke,
# light enough to be distinguished from the black (0) MNIST background.
GRID_PAD_VALUE = 64

# How many times longer the last GIF frame is shown, so the final result can be
# looked at before the animation loops back to epoch 1.
_GIF_LAST_FRAME_FACTOR = 3


def to_uint8(images: Any) -> np.ndarray:
    """Converts generator outputs in [-1, 1] to uint8 grayscale images.

    Args:
        images: Float array (numpy or jax) of shape [N, H, W, 1] or [N, H, W]
            with values in [-1, 1] (the generator's tanh range).

    Returns:
        uint8 array [N, H, W] with round((x + 1) * 127.5), clipped to 0..255, so
        -1 is black (the MNIST background) and 1 is white (the digit strokes).
        NaN values become 0 rather than undefined garbage.
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(f"expected [N, H, W] or [N, H, W, 1] images, got shape {x.shape}")
    # NaN -> -1 (black): a diverged generator should show up as blank tiles, not noise.
    x = np.nan_to_num(x, nan=-1.0, posinf=1.0, neginf=-1.0)
    # Clip before the cast: out-of-range floats cast to uint8 would wrap around.
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def grid_image(images: np.ndarray, rows: int, cols: int, scale: int = 1, pad: int = 2) -> Image.Image:
    """Tiles images into one grayscale grid picture.

    Args:
        images: uint8 array [rows * cols, H, W] (a trailing channel of 1 is also
            accepted), in row-major order: row r is images[r * cols:(r + 1) * cols].
        rows: Number of tile rows.
        cols: Number of tile columns.
        scale: Integer nearest-neighbour upscaling factor for each tile.
        pad: Width in pixels of the gray separator between tiles and around the border.

    Returns:
        An 'L' image of height rows * (H * scale + pad) + pad and width
        cols * (W * scale + pad) + pad.

    Raises:
        ValueError: If the number of images is not rows * cols, the array is not
            uint8 [N, H, W], or scale / pad are out of range.
    """
    arr = np.asarray(images)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"expected uint8 [N, H, W] images, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        # Refuse to guess the value range: floats must go through to_uint8 first.
        raise ValueError(f"expected uint8 images (use to_uint8), got dtype {arr.dtype}")
    if rows < 1 or cols < 1 or len(arr) != rows * cols:
        raise ValueError(f"got {len(arr)} images for a {rows}x{cols} grid")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")

    if scale > 1:
        # Exact nearest-neighbour upscaling: every pixel becomes a scale x scale block.
        arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = arr.shape[1:]
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), GRID_PAD_VALUE, dtype=np.uint8)
    for k, tile in enumerate(arr):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y : y + h, x : x + w] = tile
    return Image.fromarray(canvas, mode="L")


# Past this many classes a grid is wrapped into blocks of this many rows, and
# each row is named (a row per class would make too tall a picture).
ROWS_PER_BLOCK = 10
# Width of the names left of each block's rows, in pixels before scaling.
NAME_WIDTH = 72
NAME_VALUE = 255
NAME_SIZE = 12  # font size in pixels before scaling


def class_grid(images: np.ndarray, classes: Sequence[str], scale: int = 1,
               pad: int = 2) -> Image.Image:
    """A row per class: uint8 `[len(classes) * cols, H, W]`, row-major.

    Up to ROWS_PER_BLOCK classes this is `grid_image` (the seed's digit grid).
    More are wrapped into blocks of ROWS_PER_BLOCK rows side by side, each row
    named on its left (names longer than the space are cut).
    """
    arr = np.asarray(images)
    count = len(classes)
    if count <= ROWS_PER_BLOCK:
        return grid_image(arr, count, len(arr) // max(count, 1), scale, pad)
    cols = len(arr) // count
    if cols * count != len(arr):
        raise ValueError(f"got {len(arr)} images for {count} class rows")
    blocks = -(-count // ROWS_PER_BLOCK)
    rows = arr.reshape(count, cols, *arr.shape[1:])
    blank = np.zeros((blocks * ROWS_PER_BLOCK - count, cols, *arr.shape[1:]), np.uint8)
    rows = np.concatenate([rows, blank])
    font = ImageFont.load_default(size=NAME_SIZE * scale)
    pictures = []
    for b in range(blocks):
        part = rows[b * ROWS_PER_BLOCK:(b + 1) * ROWS_PER_BLOCK]
        tiles = grid_image(part.reshape(-1, *arr.shape[1:]), ROWS_PER_BLOCK, cols,
                           scale, pad)
        names = Image.new("L", (NAME_WIDTH * scale, tiles.height), 0)
        draw = ImageDraw.Draw(names)
        tile_h = (tiles.height - pad) // ROWS_PER_BLOCK
        for r, name in enumerate(classes[b * ROWS_PER_BLOCK:(b + 1) * ROWS_PER_BLOCK]):
            text = name
            while text and draw.textlength(text, font=font) > names.width - 8:
                text = text[:-1]
            draw.text((4, pad + r * tile_h + tile_h // 2), text, fill=NAME_VALUE,
                      font=font, anchor="lm")
        pictures += [names, tiles]
    canvas = Image.new("L", (sum(p.width for p in pictures), pictures[1].height), 0)
    x = 0
    for picture in pictures:
        canvas.paste(picture, (x, 0))
        x += picture.width
    return canvas


def save_gif(frame_paths: Sequence[str | os.PathLike[str]], path: str | os.PathLike[str], duration_ms: int = 300) -> None:
    """Writes an endlessly looping animated GIF from image files, atomically.

    The last frame is held _GIF_LAST_FRAME_FACTOR times longer. Note that GIF
    encoders (pillow included) merge consecutive identical frames into one.

    Args:
        frame_paths: Image files (e.g. the per-epoch PNG grids), in display order.
            Frames of a different size are resized (nearest) to the first one.
        path: Destination .gif file.
        duration_ms: Display time of each frame in milliseconds.

    Raises:
        ValueError: If frame_paths is empty.
    """
    if not frame_paths:
        raise ValueError("save_gif needs at least one frame")
    frames: list[Image.Image] = []
    for p in frame_paths:
        with Image.open(p) as im:
            # Load eagerly (convert copies) so the files are closed before writing.
            frames.append(im.convert("L" if im.mode in ("L", "1", "I;16") else "RGB"))
    # GIF frames share one mode and size; grids from one run already match, this
    # only guards against a stray differently-shaped file.
    mode, size = frames[0].mode, frames[0].size
    frames = [f.convert(mode).resize(size, Image.Resampling.NEAREST) if (f.mode, f.size) != (mode, size) else f for f in frames]
    durations = [duration_ms] * len(frames)
    durations[-1] = duration_ms * _GIF_LAST_FRAME_FACTOR

    def write(tmp: str) -> None:
        frames[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=frames[1:],
            duration=durations if len(frames) > 1 else durations[0],
            loop=0,  # 0 = loop forever
        )

    files.write_atomically(path, write)


# Black gap between the digits of a number, and between its lines (pixels at
# scale 1): a written number, not a grid.
DIGIT_GAP = 2
LINE_GAP = 8


def number_image(cells: np.ndarray, scale: int = 1) -> Image.Image:
    """Lines of digits left to right, uint8 `[lines, L, 28, 28]` (blank cells
    black), on black with DIGIT_GAP between digits and LINE_GAP between lines."""
    lines, length, h, w = cells.shape
    canvas = np.zeros((lines * (h + LINE_GAP) + LINE_GAP,
                       length * (w + DIGIT_GAP) - DIGIT_GAP + 2 * LINE_GAP), np.uint8)
    for r in range(lines):
        for c in range(length):
            y, x = LINE_GAP + r * (h + LINE_GAP), LINE_GAP + c * (w + DIGIT_GAP)
            canvas[y:y + h, x:x + w] = cells[r, c]
    image = Image.fromarray(canvas, mode="L")
    return image.resize((image.width * scale, image.height * scale),
                        Image.Resampling.NEAREST) if scale > 1 else image


def beside(left: Image.Image, right: Image.Image) -> Image.Image:
    """Two grayscale pictures side by side, top-aligned, on black."""
    canvas = Image.new("L", (left.width + right.width, max(left.height, right.height)))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    return canvas


def save_png(path: str | os.PathLike[str], image: Image.Image) -> None:
    """Writes a picture atomically as a PNG."""
    files.write_atomically(path, lambda tmp: image.save(tmp, format="PNG"))


def save_frames_gif(frames: Sequence[Image.Image], path: str | os.PathLike[str],
                    duration_ms: int = 80) -> None:
    """Writes pictures of one size as an endlessly looping GIF, atomically."""
    if not frames:
        raise ValueError("save_frames_gif needs at least one frame")
    files.write_atomically(path, lambda tmp: frames[0].save(
        tmp, format="GIF", save_all=True, append_images=list(frames[1:]),
        duration=duration_ms, loop=0))
