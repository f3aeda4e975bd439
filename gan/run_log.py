"""A run's quality per epoch from its `metrics.jsonl` (`train.py --eval-every`):
training time, raw against averaged (EMA) generator, when a goal is first met."""

from __future__ import annotations

import json
from typing import Any, Sequence

from gan import charts

# The goal the README reports against: accuracy at least, Frechet ratio at most.
GOAL_ACCURACY = 0.99
GOAL_RATIO = 3.0
# Inches per panel of the quality chart (600 x 450 pixels).
CHART_PANEL = (6.0, 4.5)


def read_log(path: str) -> list[dict[str, Any]]:
    """Every record of a metrics.jsonl, in file order."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def training_seconds(records: Sequence[dict[str, Any]]) -> dict[int, float]:
    """Cumulative training wall time at each logged step, resumes included.

    A step record's `t` counts seconds since its `train.py` process started
    training (compile included, data loading not) and `started` names that
    process (logs from before `started` existed: `t` going down marks a new
    one). The time of `--eval-every` scoring (`eval_s`) is left out: a run
    without it does not spend it.
    """
    out: dict[int, float] = {}
    total, previous, evaluating = 0.0, None, 0.0
    for record in records:
        if "eval_s" in record:
            evaluating += record["eval_s"]
            continue
        if "t" not in record:
            continue
        t, process = record["t"], record.get("started")
        if previous is None or process != previous[1] or t < previous[0]:
            delta, evaluating = t, 0.0                 # a new process, its own clock
        else:
            delta = t - previous[0]
        if delta > 0:  # the lines of one pull to the host share their t
            total += max(delta - evaluating, 0.0)
            evaluating = 0.0
        previous = (t, process)
        out[record["step"]] = total
    return out


def quality_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `--eval-every` records, each with `train_s`: training time to its step."""
    seconds = training_seconds(records)
    return [{**r, "train_s": seconds.get(r["step"], float("nan"))}
            for r in records if "cond_acc" in r]


def first_meeting(rows: Sequence[dict[str, Any]], suffix: str = "",
                  accuracy: float = GOAL_ACCURACY, ratio: float = GOAL_RATIO
                  ) -> dict[str, Any] | None:
    """The first row whose `cond_acc<suffix>` >= accuracy and `fd_ratio<suffix>`
    <= ratio, or None."""
    for row in rows:
        acc, fd = row.get("cond_acc" + suffix), row.get("fd_ratio" + suffix)
        if acc is not None and fd is not None and acc >= accuracy and fd <= ratio:
            return row
    return None


def series_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Suffixes of the generators scored: "" (raw), "_ema", "_ema<d>_<mode>"..."""
    names = {k[len("fd_ratio"):] for row in rows for k in row if k.startswith("fd_ratio")}

    def order(s: str) -> tuple[bool, bool, str, float]:  # raw, EMA, mode, decay
        decay, _, mode = s[len("_ema"):].partition("_")
        return (s != "", s != "_ema", mode, float(decay) if mode else 0.0)
    return sorted(names, key=order)


def series_label(suffix: str) -> str:
    """"raw G", "EMA", or the decay and mode ("ema0.999_recompute")."""
    return {"": "raw G", "_ema": "EMA"}.get(suffix, suffix.lstrip("_"))


def plot(rows: Sequence[dict[str, Any]], path: str,
         suffixes: Sequence[str] = ("", "_ema")) -> None:
    """Conditional accuracy and Frechet ratio per epoch side by side, one curve
    per suffix, the goal's thresholds dashed; the ratio on a log scale (it
    falls from ~35 to ~1.2 over a run)."""
    def series(field: str, scale: float = 1.0) -> dict[str, list[tuple[float, float]]]:
        return {series_label(s): [(r["epoch"], scale * r[field + s])
                                  for r in rows if field + s in r] for s in suffixes}
    charts.plot([
        charts.Panel("conditional accuracy (%), 1,000 samples", series("cond_acc", 100),
                     threshold=100 * GOAL_ACCURACY),
        charts.Panel("Frechet ratio to real digits (1 = as real)", series("fd_ratio"),
                     log_y=True, threshold=GOAL_RATIO),
    ], path, xlabel="epoch", columns=2, panel_size=CHART_PANEL)


def table(rows: Sequence[dict[str, Any]], suffixes: Sequence[str] = ("", "_ema")
          ) -> str:
    """A markdown table: epoch, training hours, then accuracy / ratio per suffix."""
    lines = ["| epoch | training time | "
             + " | ".join(series_label(s) for s in suffixes) + " |",
             "|---|---|" + "---|" * len(suffixes)]
    for r in rows:
        cells = [f"{100 * r['cond_acc' + s]:.1f}% / {r['fd_ratio' + s]:.2f}"
                 if "cond_acc" + s in r else "" for s in suffixes]
        lines.append(f"| {r['epoch']} | {r['train_s'] / 3600:.2f} h | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


# losses.png: (title, metrics.jsonl fields, log scale), one panel each.
PANELS = (("cDCGAN losses", ("d_loss", "g_loss"), False),
          ("conditional accuracy (train.py --eval-every)", ("cond_acc", "cond_acc_ema"),
           False),
          ("Frechet ratio to real digits (train.py --eval-every)",
           ("fd_ratio", "fd_ratio_ema"), True))


def plot_losses(metrics_path: str, out_path: str) -> None:
    """Draws the losses (and quality figures, when logged) of a run's log."""
    records = read_log(metrics_path)
    curves = {name: [(r["step"], r[name]) for r in records if name in r]
              for _, names, _ in PANELS for name in names}
    charts.plot([charts.Panel(title, {n: curves[n] for n in names}, log_y=log_y)
                 for title, names, log_y in PANELS if any(curves[n] for n in names)],
                out_path)
