"""Train the conditional DCGAN on MNIST: `python train.py --workdir runs/x`."""

from __future__ import annotations

import os
import signal
import sys
import threading

from gan import cli
from gan.config import Config, RunOptions


def make_parser() -> cli.argparse.ArgumentParser:
    """The command line: one flag per field of `Config` and `RunOptions`."""
    p = cli.ArgumentParser(
        prog="train.py",
        description="Train the cDCGAN on MNIST. Running again with the same "
        "--workdir resumes from its latest checkpoint.")
    cli.add_flags(p.add_argument_group(
        "training (a run resumes only with its own 'recipe' settings)"), Config)
    cli.add_flags(p.add_argument_group("run"), RunOptions)
    return p


def parse_args(argv: list[str] | None) -> tuple[Config, RunOptions]:
    """The recipe and the run options."""
    args = make_parser().parse_args(argv)
    return cli.settings(args, Config), cli.settings(args, RunOptions)


# Set by Ctrl-C and SIGTERM. The handlers only record the request, and the
# training loop acts on it at the next step boundary: an exception raised from a
# handler could strike inside a callback that swallows it (JAX's garbage
# collector hook did, and the run went on to the end).
STOP = threading.Event()


def _request_stop(signum, frame):
    STOP.set()


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C and SIGTERM (also in background jobs, where shells ignore SIGINT)
    # stop training after saving a checkpoint. Set first: the imports below take
    # seconds. (Before this line, a few hundred ms after start, nothing has been
    # written, and the signals end the process as Python's defaults do.)
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    try:
        return _main(argv)
    except KeyboardInterrupt as e:
        step = getattr(e, "saved_step", None)
        if step is None:  # before the first step, or a multi-process run
            print("train.py: interrupted; no checkpoint written now (any earlier "
                  "one is kept)", file=sys.stderr)
        else:
            print(f"train.py: interrupted; checkpoint saved at step {step}, run "
                  "again to resume", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    config, options = parse_args(argv)
    cli.set_up_process()
    cli.check_xla_flags()
    cli.enable_compile_cache()
    # Imported after parsing so --help is instant.
    from gan import data, loop, parallel
    from gan.errors import CheckpointError, TrainError
    try:
        parallel.initialize(options.coordinator, options.num_processes,
                            options.process_id, options.coordinator_timeout, STOP)
        result = loop.train_and_evaluate(config, options, STOP)
    except parallel.JoinInterrupted as e:
        # At once (os._exit): JAX's thread waiting for the coordinator cannot
        # be joined, so a normal exit would hang on it.
        print(f"train.py: error: {e}", file=sys.stderr, flush=True)
        os._exit(130)
    except (parallel.ParallelError, TrainError, data.DataError, CheckpointError) as e:
        cli.fail(str(e))
    if not parallel.is_primary():
        return 0
    if result.steps_run == 0:
        print(f"step {result.step}: nothing to train, the run in {options.workdir} "
              "already reached its last step (raise --epochs or --max-steps to go on)")
        return 0
    rate = result.steps_run * config.batch_size / max(result.train_seconds, 1e-9)
    print(f"step {result.step}: ran {result.steps_run} steps in "
          f"{result.train_seconds:.1f} s ({rate:.0f} img/s, compile included; "
          f"first step after {result.first_step_s:.1f} s), "
          f"peak RSS {result.peak_rss_mb:.0f} MB; outputs in {options.workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
