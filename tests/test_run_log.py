"""Quality per epoch from a run's log (gan.report): training time and goals."""

from __future__ import annotations

import json
import pathlib

import pytest
from PIL import Image

from gan import run_log


def _log(tmp_path):
    """Two epochs of 4 steps, logged every 2; the run stopped after step 6 and
    resumed in a new process (its clock starts again); scoring took 100 s."""
    lines = [
        {"step": 1, "t": 10.0}, {"step": 2, "t": 10.0},       # start-up + 2 steps
        {"step": 3, "t": 14.0}, {"step": 4, "t": 14.0},
        {"step": 4, "epoch": 1, "cond_acc": 0.95, "fd_ratio": 5.0,
         "cond_acc_ema": 0.991, "fd_ratio_ema": 2.9, "eval_s": 100.0},
        {"step": 5, "t": 118.0}, {"step": 6, "t": 118.0},     # 4 s of steps + eval
        {"step": 7, "t": 7.0}, {"step": 8, "t": 9.0},         # resumed
        {"step": 8, "epoch": 2, "cond_acc": 0.992, "fd_ratio": 2.5,
         "cond_acc_ema": 0.995, "fd_ratio_ema": 2.0, "eval_s": 100.0},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(l) + "\n" for l in lines))
    return str(path)


def test_training_time_leaves_out_scoring_and_counts_resumes(tmp_path):
    seconds = run_log.training_seconds(run_log.read_log(_log(tmp_path)))
    assert seconds == {1: 10.0, 2: 10.0, 3: 14.0, 4: 14.0, 5: 18.0, 6: 18.0,
                       7: 25.0, 8: 27.0}


def test_a_new_process_is_told_by_its_start_even_when_its_clock_is_later():
    """The first process ran 20 s; the resumed one logs t = 30, 40: both count."""
    records = [{"step": 1, "t": 10.0, "started": 100}, {"step": 2, "t": 20.0, "started": 100},
               {"step": 3, "t": 30.0, "started": 500}, {"step": 4, "t": 40.0, "started": 500}]
    assert run_log.training_seconds(records) == {1: 10.0, 2: 20.0, 3: 50.0, 4: 60.0}


def test_first_epoch_meeting_the_goal_per_generator(tmp_path):
    rows = run_log.quality_rows(run_log.read_log(_log(tmp_path)))
    assert [(r["epoch"], r["train_s"]) for r in rows] == [(1, 14.0), (2, 27.0)]
    assert run_log.first_meeting(rows)["epoch"] == 2           # raw: 95% at epoch 1
    assert run_log.first_meeting(rows, "_ema")["epoch"] == 1
    assert run_log.first_meeting(rows, "_ema", ratio=1.5) is None
    assert run_log.series_names(rows) == ["", "_ema"]
    text = run_log.table(rows)
    assert "| 1 | 0.00 h | 95.0% / 5.00 | 99.1% / 2.90 |" in text
    out = tmp_path / "q.png"
    run_log.plot(rows, str(out))
    with Image.open(out) as im:
        assert im.size == (1200, 450)                            # two panels side by side
        colors = {c for _, c in im.convert("RGB").getcolors(1 << 20)}
    # matplotlib's first two series colours: a curve each for raw G and EMA.
    assert (0x1F, 0x77, 0xB4) in colors and (0xFF, 0x7F, 0x0E) in colors


@pytest.mark.parametrize("names,want", [
    (["_ema0.999_recompute", "", "_ema0.99_average", "_ema", "_ema0.99_recompute"],
     ["", "_ema", "_ema0.99_average", "_ema0.99_recompute", "_ema0.999_recompute"]),
])
def test_series_order(names, want):
    rows = [{f"fd_ratio{n}": 1.0 for n in names}]
    assert run_log.series_names(rows) == want


def test_quality_curves_cli_series_and_unknown_names(tmp_path):
    """`--series` picks the generators tabled and charted; a name the log has
    no scores for is one line on stderr, exit 2, and no chart."""
    import subprocess
    import sys
    log = tmp_path / "metrics.jsonl"
    log.write_text(json.dumps({"step": 1, "t": 5.0}) + "\n" + json.dumps(
        {"step": 1, "epoch": 1, "cond_acc": 0.9, "fd_ratio": 4.0,
         "cond_acc_ema0.99_average": 0.93, "fd_ratio_ema0.99_average": 3.5,
         "cond_acc_ema0.999_average": 0.95, "fd_ratio_ema0.999_average": 3.0}) + "\n")
    script = str(pathlib.Path(__file__).parents[1] / "benchmarks" / "quality_curves.py")
    ok = subprocess.run([sys.executable, script, str(log), "--series",
                         "ema0.999_average,raw", "--out", str(tmp_path / "c.png")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "| epoch | training time | ema0.999_average | raw G |" in ok.stdout
    assert "| 1 | 0.00 h | 95.0% / 3.00 | 90.0% / 4.00 |" in ok.stdout
    assert (tmp_path / "c.png").exists()
    bad = subprocess.run([sys.executable, script, str(log), "--series", "raw,ema0.5_x",
                          "--out", str(tmp_path / "d.png")], capture_output=True, text=True)
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "ema0.5_x" in bad.stderr
    assert not (tmp_path / "d.png").exists()
