"""gan.charts: panels, curves, log scale, bad points, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from gan import charts

# matplotlib's first two series colours (its default cycle: "C0", "C1").
BLUE, ORANGE = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)


def _pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def _has(pixels: np.ndarray, color) -> int:
    return int((pixels == np.array(color, np.uint8)).all(axis=-1).sum())


def test_panels_stack_with_a_curve_per_series(tmp_path):
    path = tmp_path / "c.png"
    xs = np.arange(200.0)
    charts.plot([charts.Panel("losses", {"d": list(zip(xs, np.sin(xs / 9) + 1)),
                                         "g": list(zip(xs, xs / 100))}),
                 charts.Panel("ratio", {"r": [(1, 30.0), (2, 3.0), (3, 1.2)]},
                              log_y=True, threshold=3.0)], path)
    pixels = _pixels(path)
    assert pixels.shape == (600, 800, 3)                       # two 800 x 300 panels
    top, bottom = pixels[:300], pixels[300:]
    assert _has(top, BLUE) > 200 and _has(top, ORANGE) > 200  # both curves, not a swatch
    assert _has(bottom, BLUE) > 100 and _has(bottom, ORANGE) == 0


def test_columns_put_panels_side_by_side(tmp_path):
    path = tmp_path / "c.png"
    charts.plot([charts.Panel("a", {"x": [(0, 1), (1, 2)]}),
                 charts.Panel("b", {"y": [(0, 2), (1, 1)]}),
                 charts.Panel("c", {"z": [(0, 2), (1, 1)]})], path, columns=2)
    assert _pixels(path).shape == (600, 1600, 3)               # 2 x 2, the fourth blank


@pytest.mark.parametrize("series", [
    {}, {"a": []}, {"a": [(3.0, 2.0)]}, {"a": [(0.0, 0.0), (0.0, 0.0)]},
    {"a": [(0.0, 1.0), (1.0, float("nan")), (2.0, float("inf")), (3.0, 2.0)]},
    {"a": [(0.0, float("nan"))]},
])
def test_odd_series_still_draw_a_chart(tmp_path, series):
    """Empty, single, constant and non-finite series: a chart, never an error
    (a diverged loss must not stop the run's outputs)."""
    path = tmp_path / "c.png"
    charts.plot([charts.Panel("t", series), charts.Panel("log", series, log_y=True)], path)
    assert (_pixels(path).min(axis=-1) < 100).sum() > 500       # axes and labels drawn


def test_a_failed_write_keeps_the_old_chart_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "c.png"
    charts.plot([charts.Panel("t", {"a": [(0, 1), (1, 2)]})], path)
    before = path.read_bytes()

    def fail(*args):
        raise OSError("disk full")
    monkeypatch.setattr(charts.os, "replace", fail)
    with pytest.raises(OSError):
        charts.plot([charts.Panel("t", {"a": [(0, 5), (1, 6)]})], path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.png"]
