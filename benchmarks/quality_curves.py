"""Quality per epoch of a `train.py --eval-every` run: table, chart, goal.

    python benchmarks/quality_curves.py runs/x/metrics.jsonl --out docs/quality.png
    python benchmarks/quality_curves.py runs/x/metrics.jsonl --all   # every decay

Prints a markdown table (epoch, training time without the scoring, conditional
accuracy / Frechet ratio of each generator scored) and the first epoch at which
each meets the README's goal (accuracy >= 99%, ratio <= 3).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gan import cli, report  # noqa: E402


def main() -> int:
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", help="a run's metrics.jsonl")
    p.add_argument("--out", default=None, help="chart PNG (raw G against EMA)")
    p.add_argument("--all", action="store_true",
                   help="table every generator scored (--ema-compare runs)")
    args = p.parse_args()
    try:
        rows = report.quality_rows(report.read_log(args.log))
    except OSError as e:
        cli.fail(f"cannot read {args.log}: {e.strerror or e}")
    except (ValueError, KeyError, TypeError) as e:
        cli.fail(f"{args.log} is not a train.py metrics.jsonl ({type(e).__name__})")
    if not rows:
        cli.fail(f"{args.log} holds no --eval-every records")
    suffixes = report.series_names(rows) if args.all else [
        s for s in ("", "_ema") if f"fd_ratio{s}" in rows[0]]
    print(report.table(rows, suffixes))
    print()
    for s in suffixes:
        row = report.first_meeting(rows, s)
        print(f"{report.series_label(s)}: " + (f"goal first met at epoch {row['epoch']}, after "
                             f"{row['train_s'] / 3600:.2f} h of training" if row
                             else "goal not met"))
    if args.out:
        report.plot(rows, args.out, [s for s in ("", "_ema") if f"fd_ratio{s}" in rows[0]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
