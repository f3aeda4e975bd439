"""Measure sample quality: conditional accuracy, Frechet distance, precision/recall.

    python evaluate.py                                   # the pretrained generator
    python evaluate.py --checkpoint runs/x --json x.json # your own run
"""

from __future__ import annotations

import json
import os
import sys

from gan import cli

# Precision/recall compare every sample with every real digit; this keeps the
# pairwise work (and a typo's cost) bounded.
MAX_SAMPLES = 60_000  # the floor needs as many real training digits
MIN_SAMPLES = 20  # at least two per digit for a covariance


def make_parser() -> cli.argparse.ArgumentParser:
    """The command line, one flag per setting (docs/cli.md lists them)."""
    p = cli.ArgumentParser(
        prog="evaluate.py",
        description="Score a generator's samples with an MNIST classifier "
        "(trained once on the MNIST train split and cached).",
        formatter_class=cli.argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help="a train.py --workdir or a generator.msgpack file "
                   "(default: the pretrained generator in weights/)")
    p.add_argument("--num-samples", type=int, default=10_000,
                   help="samples drawn, digits 0-9 in turn (1,000 per digit)")
    p.add_argument("--raw", action="store_true",
                   help="score G's own weights, not their average (EMA); "
                   "needs a train.py workdir as --checkpoint")
    p.add_argument("--seed", type=cli.seed, default=0, help="noise seed of the samples")
    p.add_argument("--classifier", default=None,
                   help="the judging classifier's file, trained on MNIST there when "
                   "missing (to retrain: a new path); default: the one shipped in "
                   "weights/")
    p.add_argument("--data-dir", default=None,
                   help="MNIST: TFDS data dir or IDX folder (as train.py)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    return p


def parse_args(argv: list[str] | None):
    return make_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not MIN_SAMPLES <= args.num_samples <= MAX_SAMPLES:
        cli.fail(f"--num-samples must be between {MIN_SAMPLES} and {MAX_SAMPLES}, "
                 f"got {args.num_samples}")
    if args.json:
        if not args.json.lower().endswith(".json"):
            cli.fail(f"--json {args.json}: the name must end in .json")
        from gan.data import source_files  # noqa: PLC0415 - light, no JAX
        cli.check_writable(args.json, "--json", reads=[
            args.checkpoint, args.classifier, *source_files(args.data_dir)])
    cli.set_up_process()
    cli.check_xla_flags()
    cli.enable_compile_cache()

    from gan import classifier, data, files, quality, weights
    from gan.errors import CheckpointError, one_line

    checkpoint_path = args.checkpoint or weights.SHIPPED
    classifier_path = args.classifier or classifier.SHIPPED
    try:
        generator = weights.load(checkpoint_path, raw=args.raw)
        train = data.load_mnist(args.data_dir, "train")
        test = data.load_mnist(args.data_dir, "test")
        if args.num_samples > len(train[1]):
            cli.fail(f"--num-samples {args.num_samples} exceeds the {len(train[1])} "
                     "training digits the Frechet floor is computed from")
        clf = classifier.load_or_train(
            classifier_path, args.data_dir,
            progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (CheckpointError, classifier.ClassifierError, data.DataError) as e:
        cli.fail(str(e))
    reference = quality.make_reference(clf.params, train, test, args.num_samples)
    result = quality.evaluate_generator(generator.variables, clf.params, reference,
                                        args.num_samples, args.seed)
    result = {"checkpoint": os.path.abspath(checkpoint_path), "step": generator.step,
              "averaged": generator.averaged, "seed": args.seed, **result}
    which = "weight average (EMA)" if generator.averaged else "G's own weights"
    print(f"generator              {checkpoint_path} (step {generator.step}, {which})")
    print(quality.format_table(result))
    if args.json:
        text = json.dumps(quality.json_ready(result), indent=2, allow_nan=False)
        try:
            files.write_bytes(args.json, text.encode())
        except OSError as e:
            cli.fail(f"cannot write {args.json}: {one_line(e)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
