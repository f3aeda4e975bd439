"""Turning generator outputs into pictures: sample grids, GIFs and loss charts.

Only numpy and pillow are used, so the pictures can be produced on any machine
(no matplotlib, no display). Every writer goes through `_atomic_save`, so a crash
or a full disk in the middle of a save never leaves a truncated PNG/GIF behind
and never destroys the previous version of the file.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Gray separator between grid tiles: dark enough not to look like a digit stroke,
# light enough to be distinguished from the black (0) MNIST background.
GRID_PAD_VALUE = 64

# Line colors for `plot_curves`, in series order (matplotlib's "tab10" palette,
# chosen because it stays distinguishable for the common color-blindnesses).
SERIES_COLORS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)

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


def _atomic_save(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Calls write(tmp_path) on a temp file next to path, then renames it onto path.

    The temp file lives in the same directory so os.replace is an atomic rename on
    the same filesystem; on any failure the temp file is removed and an existing
    file at path is left untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        # BaseException too: a Ctrl-C mid-save should not leave .tmp litter behind.
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def save_grid(
    path: str | os.PathLike[str], images_uint8: np.ndarray, rows: int, cols: int, scale: int = 1, pad: int = 2
) -> None:
    """Writes grid_image(images_uint8, rows, cols, scale, pad) atomically as a PNG.

    Args:
        path: Destination file.
        images_uint8: uint8 [rows * cols, H, W] images in row-major order.
        rows: Number of tile rows.
        cols: Number of tile columns.
        scale: Integer nearest-neighbour upscaling factor.
        pad: Separator width in pixels.
    """
    img = grid_image(images_uint8, rows, cols, scale=scale, pad=pad)
    # format= is required: the temp file's .tmp suffix tells PIL nothing.
    _atomic_save(path, lambda tmp: img.save(tmp, format="PNG"))


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

    _atomic_save(path, write)


# ---------------------------------------------------------------------------
# Line charts
# ---------------------------------------------------------------------------


def _clean_series(points: Sequence[tuple[float, float]], max_points: int) -> np.ndarray:
    """Returns finite points sorted by x, bucket-averaged down to <= max_points rows."""
    arr = np.asarray(list(points), dtype=np.float64).reshape(-1, 2)
    arr = arr[np.isfinite(arr).all(axis=1)]
    if len(arr) == 0:
        return arr
    # Stable sort keeps the logging order for equal x values.
    arr = arr[np.argsort(arr[:, 0], kind="stable")]
    if len(arr) > max_points:
        # Mean over consecutive buckets: smooths noisy per-step losses and keeps
        # the polyline at about one vertex per horizontal pixel.
        buckets = np.array_split(arr, max_points)
        arr = np.array([b.mean(axis=0) for b in buckets])
    return arr


def _max_vertices(plot_w: int) -> int:
    """Bucket count for long series: one vertex per 2 px reads as a smooth curve."""
    return max(1, plot_w // 2)


def _nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Returns about `target` round-numbered tick values (1, 2, 2.5, 5 x 10^k) in [lo, hi]."""
    span = hi - lo
    if not (span > 0 and math.isfinite(span)):
        return [lo]
    raw = span / target
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        # Snap to 0 so the label is "0", not "-2.7e-17".
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return ticks


def _fmt(v: float, step: float) -> str:
    """Formats a tick value with just enough decimals for the tick step.

    Plain digits (e.g. 12500, not 1.25e+04) up to 1e6, since step counts and
    loss values are read more easily that way; scientific beyond.
    """
    if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-4):
        return f"{v:.2e}"
    # Decimals needed so that consecutive ticks (multiples of step) differ.
    decimals = 0
    while decimals < 6 and abs(round(step, decimals) - step) > step * 1e-6:
        decimals += 1
    return f"{v:.{decimals}f}"


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: Any) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def plot_curves(
    series: dict[str, Sequence[tuple[float, float]]],
    path: str | os.PathLike[str],
    title: str = "",
    xlabel: str = "step",
    width: int = 800,
    height: int = 400,
) -> None:
    """Draws a line chart of (x, y) series and writes it atomically as an RGB PNG.

    Series may have different x ranges and lengths; non-finite points are
    skipped; long series (e.g. per-step losses) are averaged into at most about
    one point per 2 horizontal pixels, which also smooths them. Empty input, a
    single point or constant values produce a valid (if uneventful) chart.

    Args:
        series: Mapping from legend name to a sequence of (x, y) points.
        path: Destination PNG file.
        title: Text drawn centred above the plot.
        xlabel: Label under the x axis.
        width: Image width in pixels.
        height: Image height in pixels.
    """
    img = _chart(series, title, xlabel, width, height)
    _atomic_save(path, lambda tmp: img.save(tmp, format="PNG"))


def plot_panels(
    panels: Sequence[tuple[str, dict[str, Sequence[tuple[float, float]]]]],
    path: str | os.PathLike[str],
    xlabel: str = "step",
    width: int = 800,
    panel_height: int = 300,
) -> None:
    """Charts stacked top to bottom, one per (title, series) pair, in one PNG,
    all on the x range of the whole data so that the panels line up."""
    xs = [x for _, series in panels for pts in series.values() for x, _ in pts
          if math.isfinite(x)]
    x_range = (min(xs), max(xs)) if xs else None
    charts = [_chart(series, title, xlabel, width, panel_height, x_range)
              for title, series in panels]
    img = Image.new("RGB", (width, panel_height * len(charts)), "white")
    for i, chart in enumerate(charts):
        img.paste(chart, (0, i * panel_height))
    _atomic_save(path, lambda tmp: img.save(tmp, format="PNG"))


def _chart(
    series: dict[str, Sequence[tuple[float, float]]],
    title: str,
    xlabel: str,
    width: int,
    height: int,
    x_range: tuple[float, float] | None = None,
) -> Image.Image:
    """Draws the chart `plot_curves` describes (on `x_range` when given)."""
    font = ImageFont.load_default()
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    _, line_h = _text_size(draw, "Ag0", font)

    # --- layout: title, then a legend strip, then the plot box ---------------
    # The legend sits above the plot (not inside it) so it can never hide a curve.
    top = 8
    if title:
        tw, _ = _text_size(draw, title, font)
        draw.text(((width - tw) // 2, top), title, fill="black", font=font)
        top += line_h + 8

    names = list(series)
    swatch_w, gap = 18, 16
    legend_items: list[tuple[str, tuple[int, int, int], int]] = []
    for i, name in enumerate(names):
        nw, _ = _text_size(draw, str(name), font)
        legend_items.append((str(name), SERIES_COLORS[i % len(SERIES_COLORS)], swatch_w + 4 + nw))
    # Wrap legend entries into as many rows as the width needs.
    legend_rows: list[list[tuple[str, tuple[int, int, int], int]]] = []
    row_w = 0
    for item in legend_items:
        if legend_rows and row_w + gap + item[2] <= width - 20:
            legend_rows[-1].append(item)
            row_w += gap + item[2]
        else:
            legend_rows.append([item])
            row_w = item[2]
    for row in legend_rows:
        total = sum(it[2] for it in row) + gap * (len(row) - 1)
        x = max(4, (width - total) // 2)
        for name, color, w in row:
            cy = top + line_h // 2 + 1
            draw.rectangle([x, cy - 3, x + swatch_w, cy + 3], fill=color)
            draw.text((x + swatch_w + 4, top), name, fill="black", font=font)
            x += w + gap
        top += line_h + 6
    top += 4

    # --- data ranges ---------------------------------------------------------
    left_margin, right_margin = 64, 16
    bottom_margin = 2 * line_h + 20  # tick labels + xlabel
    plot_w = max(1, width - left_margin - right_margin)
    data = {name: _clean_series(pts, max_points=_max_vertices(plot_w)) for name, pts in series.items()}
    nonempty = [a for a in data.values() if len(a)]
    if nonempty:
        allp = np.concatenate(nonempty)
        x0, x1 = float(allp[:, 0].min()), float(allp[:, 0].max())
        y0, y1 = float(allp[:, 1].min()), float(allp[:, 1].max())
    else:
        x0, x1, y0, y1 = 0.0, 1.0, 0.0, 1.0
    if x_range is not None:
        x0, x1 = map(float, x_range)
    # Widen degenerate ranges so a single point or a constant curve has a scale
    # (and the coordinate mapping below never divides by zero).
    if x1 - x0 <= 0:
        d = max(abs(x0) * 0.05, 0.5)
        x0, x1 = x0 - d, x1 + d
    if y1 - y0 <= 0:
        d = max(abs(y0) * 0.05, 0.5)
        y0, y1 = y0 - d, y1 + d
    else:
        # 5% headroom so extreme points don't sit on the axes box.
        d = (y1 - y0) * 0.05
        y0, y1 = y0 - d, y1 + d

    # Left margin grows to fit the widest y tick label.
    yticks = _nice_ticks(y0, y1)
    ystep = yticks[1] - yticks[0] if len(yticks) > 1 else 1.0
    max_label = max(_text_size(draw, _fmt(t, ystep), font)[0] for t in yticks)
    left_margin = max(left_margin, max_label + 14)
    box = (left_margin, top, width - right_margin, height - bottom_margin)
    bx0, by0, bx1, by1 = box
    if bx1 <= bx0 + 1 or by1 <= by0 + 1:
        # Image too small for a plot area: still return what was drawn.
        return img
    plot_w = bx1 - bx0
    if _max_vertices(plot_w) < max((len(a) for a in data.values()), default=0):
        # Re-bucket to the final plot width (only matters when labels widened the margin).
        data = {name: _clean_series(pts, max_points=_max_vertices(plot_w)) for name, pts in series.items()}

    def px(x: float) -> float:
        return bx0 + (x - x0) / (x1 - x0) * (bx1 - bx0)

    def py(y: float) -> float:
        return by1 - (y - y0) / (y1 - y0) * (by1 - by0)

    # --- grid, ticks and labels ----------------------------------------------
    grid_color, tick_color = (225, 225, 225), (60, 60, 60)
    for t in yticks:
        yy = round(py(t))
        draw.line([(bx0, yy), (bx1, yy)], fill=grid_color)
        draw.line([(bx0 - 4, yy), (bx0, yy)], fill=tick_color)
        label = _fmt(t, ystep)
        lw, _ = _text_size(draw, label, font)
        draw.text((bx0 - 6 - lw, yy - line_h // 2 - 1), label, fill="black", font=font)
    xticks = _nice_ticks(x0, x1, target=max(2, min(8, plot_w // 90)))
    xstep = xticks[1] - xticks[0] if len(xticks) > 1 else 1.0
    for t in xticks:
        xx = round(px(t))
        draw.line([(xx, by0), (xx, by1)], fill=grid_color)
        draw.line([(xx, by1), (xx, by1 + 4)], fill=tick_color)
        label = _fmt(t, xstep)
        lw, _ = _text_size(draw, label, font)
        draw.text((xx - lw // 2, by1 + 6), label, fill="black", font=font)
    if xlabel:
        lw, _ = _text_size(draw, xlabel, font)
        draw.text(((bx0 + bx1 - lw) // 2, by1 + 10 + line_h), xlabel, fill="black", font=font)
    if not nonempty:
        msg = "no data"
        lw, _ = _text_size(draw, msg, font)
        draw.text(((bx0 + bx1 - lw) // 2, (by0 + by1 - line_h) // 2), msg, fill=(120, 120, 120), font=font)

    # --- curves (after the grid so they are drawn on top of it) --------------
    for i, (name, arr) in enumerate(data.items()):
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        pts = [(px(x), py(y)) for x, y in arr]
        if len(pts) == 1:
            # A one-vertex polyline draws nothing: mark the point instead.
            (cx, cy), r = pts[0], 3
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
        elif pts:
            draw.line(pts, fill=color, width=2, joint="curve")

    # Axes box last so curves touching the edge don't cover it.
    draw.rectangle(box, outline="black")
    return img
