"""Train the conditional DCGAN on MNIST: `python train.py --workdir runs/x`."""

from __future__ import annotations

import signal
import sys

from gan import cli
from gan.config import COMPUTE_DTYPES, EMA_BATCH_STATS, Config


def parse_args(argv: list[str] | None):
    defaults = Config()
    p = cli.ArgumentParser(
        description="Train the cDCGAN on MNIST. Running again with the same "
        "--workdir resumes from its latest checkpoint.",
        formatter_class=cli.argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workdir", default="runs/cdcgan",
                   help="folder for checkpoints, logs and sample grids")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                   help="Adam's initial step size (x0.95 every 500 steps)")
    p.add_argument("--seed", type=cli.seed, default=defaults.seed)
    p.add_argument("--data-dir", default=None,
                   help="TFDS data dir (default: $TFDS_DATA_DIR, then "
                   "~/tensorflow_datasets, downloading if needed) or a folder "
                   "holding the four MNIST IDX .gz files")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many steps in total (smoke runs)")
    p.add_argument("--log-every", type=int, default=defaults.log_every,
                   help="steps between pulls of the losses to the host")
    p.add_argument("--compute-dtype", default=defaults.compute_dtype,
                   choices=COMPUTE_DTYPES,
                   help="precision of the convolutions (bfloat16 for GPUs: "
                   "parameters, BatchNorm and losses stay float32)")
    p.add_argument("--steps-per-call", type=int, default=defaults.steps_per_call,
                   help="train steps per dispatch to the device, in one compiled "
                   "loop (for GPUs; XLA:CPU runs such loops far slower)")
    p.add_argument("--ema-decay", type=float, default=defaults.ema_decay,
                   help="decay of the generator's weight average, which grids, "
                   "generator.msgpack, sample.py and evaluate.py use (0: off)")
    p.add_argument("--ema-compare", type=cli.decays, default=defaults.ema_compare,
                   help="more decays to average beside --ema-decay, e.g. "
                   "0.99,0.9999, each scored by --eval-every (for choosing one)")
    p.add_argument("--ema-batch-stats", default=defaults.ema_batch_stats,
                   choices=EMA_BATCH_STATS,
                   help="BatchNorm statistics of the average: measured for its "
                   "weights, or an average of the running statistics")
    p.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="also checkpoint every N steps (default: at epoch ends only)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="every N epochs score 1,000 samples (conditional accuracy, "
                   "Frechet ratio; see evaluate.py) and log them beside the losses")
    p.add_argument("--classifier", default=None,
                   help="the --eval-every classifier file, trained there when "
                   "missing (default: ~/.cache/cdcgan-jax/mnist_classifier.msgpack)")
    p.add_argument("--devices", type=int, default=None,
                   help="devices (per process) to split each batch over "
                   "(default: all local devices)")
    p.add_argument("--data-shards", type=int, default=None,
                   help="cut the training set into this many independently "
                   "shuffled shards (default: one per process)")
    p.add_argument("--coordinator", default=None,
                   help="multi-process runs: host:port of process 0 (see README)")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--process-id", type=int, default=None)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p.parse_args(argv)


def _stop(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
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
    args = parse_args(argv)
    # Ctrl-C and SIGTERM (also in background jobs, where shells ignore SIGINT)
    # stop training after saving a checkpoint.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    cli.enable_compile_cache()
    # Imported after parsing so --help is instant.
    from gan import checkpoint, data, loop, parallel
    try:
        parallel.initialize(args.coordinator, args.num_processes, args.process_id)
    except parallel.ParallelError as e:
        cli.fail(str(e))
    import jax
    config = Config(epochs=args.epochs, batch_size=args.batch_size,
                    learning_rate=args.learning_rate, seed=args.seed,
                    log_every=args.log_every, steps_per_call=args.steps_per_call,
                    compute_dtype=args.compute_dtype, ema_decay=args.ema_decay,
                    ema_compare=args.ema_compare,
                    ema_batch_stats=args.ema_batch_stats,
                    data_shards=(jax.process_count() if args.data_shards is None
                                 else args.data_shards))
    try:
        result = loop.fit(config, args.workdir, args.data_dir, args.max_steps,
                          keep=args.keep, checkpoint_every=args.checkpoint_every,
                          progress=not args.no_progress,
                          eval_every=args.eval_every, classifier_path=args.classifier,
                          devices=args.devices)
    except (loop.TrainError, data.DataError, checkpoint.CheckpointError) as e:
        cli.fail(str(e))
    if jax.process_index() != 0:
        return 0
    rate = result.steps_run * config.batch_size / max(result.train_seconds, 1e-9)
    print(f"step {result.step}: ran {result.steps_run} steps in "
          f"{result.train_seconds:.1f} s ({rate:.0f} img/s, compile included; "
          f"first step after {result.first_step_s:.1f} s), "
          f"peak RSS {result.peak_rss_mb:.0f} MB; outputs in {args.workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
