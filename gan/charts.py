"""Charts of a run's figures (losses.png, the quality curves), drawn on
matplotlib `Figure`s without pyplot: PNG files only, never a window, and no
backend chosen for the process."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Sequence

from matplotlib import ticker
from matplotlib.figure import Figure

from gan import files

# One panel's size in inches at DPI dots per inch: 800 x 300 pixels.
PANEL_SIZE = (8.0, 3.0)
DPI = 100

Points = Sequence[tuple[float, float]]


@dataclasses.dataclass
class Panel:
    """One chart: a curve per named series of (x, y) points."""
    title: str
    series: dict[str, Points]
    log_y: bool = False               # for figures that fall by orders of magnitude
    threshold: float | None = None    # a goal, drawn as a dashed horizontal line


def plot(panels: Sequence[Panel], path: str | os.PathLike[str], xlabel: str = "step",
         columns: int = 1, panel_size: tuple[float, float] = PANEL_SIZE) -> None:
    """Draws `panels` in a grid of `columns` (`panel_size` inches each) into the PNG
    `path`, atomically: a failed write leaves an existing file as it was.

    Non-finite points are dropped (a diverged loss must not hide the rest);
    empty series are left out of the legend.
    """
    rows = max(1, math.ceil(len(panels) / columns))
    fig = Figure(dpi=DPI, figsize=(panel_size[0] * columns, panel_size[1] * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels):
        _draw(ax, panel, xlabel)
    fig.tight_layout()
    files.write_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))


def _draw(ax, panel: Panel, xlabel: str) -> None:
    for name, points in panel.series.items():
        pts = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)
               and (y > 0 or not panel.log_y)]
        if pts:
            xs, ys = zip(*pts)
            # Markers only where points are few enough to tell apart.
            ax.plot(xs, ys, label=name, marker="." if len(pts) <= 60 else None)
    if panel.threshold is not None:
        ax.axhline(panel.threshold, color="grey", linestyle="--", linewidth=1)
    if panel.log_y:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set(title=panel.title, xlabel=xlabel)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
