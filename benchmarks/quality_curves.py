"""Quality per epoch of a `train.py --eval-every` run: table, chart, goal.

    python benchmarks/quality_curves.py runs/x/metrics.jsonl --out docs/quality.png
    python benchmarks/quality_curves.py runs/x/metrics.jsonl --all   # every decay
    python benchmarks/quality_curves.py runs/x/metrics.jsonl --series raw,ema0.99_average

Prints a markdown table (epoch, training time without the scoring, conditional
accuracy / Frechet ratio of each generator scored) and the first epoch at which
each meets the README's goal (accuracy >= 99%, ratio <= 3).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gan import cli, run_log  # noqa: E402


def _series(text: str) -> list[str]:
    """"raw,EMA,ema0.99_average" -> the metrics suffixes "", "_ema", "_ema0.99_average"."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise cli.argparse.ArgumentTypeError("expected names such as raw,ema0.99_average")
    return [{"raw": "", "ema": "_ema"}.get(n.lower(), "_" + n) for n in names]


def main() -> int:
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", help="a run's metrics.jsonl")
    p.add_argument("--out", default=None, help="chart PNG (raw G against EMA)")
    p.add_argument("--all", action="store_true",
                   help="table every generator scored (--ema-compare runs)")
    p.add_argument("--series", type=_series, default=None,
                   help="generators to table and chart, e.g. raw,ema0.99_average "
                   "(default: raw,EMA, G's own weights and the run's average)")
    args = p.parse_args()
    try:
        rows = run_log.quality_rows(run_log.read_log(args.log))
    except OSError as e:
        cli.fail(f"cannot read {args.log}: {e.strerror or e}")
    except (ValueError, KeyError, TypeError) as e:
        cli.fail(f"{args.log} is not a train.py metrics.jsonl ({type(e).__name__})")
    if not rows:
        cli.fail(f"{args.log} holds no --eval-every records")
    scored = run_log.series_names(rows)
    chosen = args.series or [s for s in ("", "_ema") if s in scored]
    missing = [run_log.series_label(s) for s in chosen if s not in scored]
    if missing:
        cli.fail(f"{args.log} has no scores for {', '.join(missing)}; it has "
                 + ", ".join(run_log.series_label(s) for s in scored))
    suffixes = scored if args.all else chosen
    print(run_log.table(rows, suffixes))
    print()
    for s in suffixes:
        row = run_log.first_meeting(rows, s)
        print(f"{run_log.series_label(s)}: " + (f"goal first met at epoch {row['epoch']}, after "
                             f"{row['train_s'] / 3600:.2f} h of training" if row
                             else "goal not met"))
    if args.out:
        run_log.plot(rows, args.out, chosen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
