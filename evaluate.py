"""Measure sample quality: conditional accuracy, Frechet distance, precision/recall.

    python evaluate.py                                   # the pretrained generator
    python evaluate.py --checkpoint runs/x --json x.json # your own run (on its data)
"""

from __future__ import annotations

import json
import os
import sys

from gan import cli

# Precision/recall compare every sample with every real image; this keeps the
# pairwise work (and a typo's cost) bounded.
MAX_SAMPLES = 60_000  # the floor needs as many real training images
MIN_SAMPLES_PER_CLASS = 2  # a covariance needs two


def make_parser() -> cli.argparse.ArgumentParser:
    """The command line, one flag per setting (docs/cli.md lists them)."""
    p = cli.ArgumentParser(
        prog="evaluate.py",
        description="Score a generator's samples with a classifier of its dataset "
        "(MNIST's is shipped; another dataset's is trained once on its train split "
        "and cached beside the run).",
        formatter_class=cli.argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help="a train.py --workdir or a generator.msgpack file "
                   "(default: the pretrained generator in weights/)")
    p.add_argument("--num-samples", type=int, default=10_000,
                   help="samples drawn, classes in turn (1,000 per digit for MNIST)")
    p.add_argument("--raw", action="store_true",
                   help="score G's own weights, not their average (EMA); "
                   "needs a train.py workdir as --checkpoint")
    p.add_argument("--seed", type=cli.seed, default=0, help="noise seed of the samples")
    p.add_argument("--classifier", default=None,
                   help="the judging classifier's file, trained on the dataset there "
                   "when missing (to retrain: a new path); default: for mnist the one "
                   "shipped in weights/, else classifier.msgpack beside --checkpoint")
    p.add_argument("--dataset", default=None,
                   help="the real data to compare with, as train.py --dataset "
                   "(default: the one the generator was trained on)")
    p.add_argument("--data-dir", default=None,
                   help="TFDS data dir or IDX folder (as train.py)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    return p


def parse_args(argv: list[str] | None):
    return make_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not 2 * MIN_SAMPLES_PER_CLASS <= args.num_samples <= MAX_SAMPLES:
        cli.fail(f"--num-samples must be between {2 * MIN_SAMPLES_PER_CLASS} and "
                 f"{MAX_SAMPLES}, got {args.num_samples}")
    from gan import datasets  # noqa: PLC0415 - light, no JAX
    if args.json:
        if not args.json.lower().endswith(".json"):
            cli.fail(f"--json {args.json}: the name must end in .json")
        cli.check_writable(args.json, "--json", reads=[
            args.checkpoint, args.classifier,
            *datasets.source_files(args.dataset or datasets.MNIST, args.data_dir)])
    cli.set_up_process()
    cli.check_xla_flags()
    cli.enable_compile_cache()

    from gan import classifier, files, quality, weights
    from gan.errors import CheckpointError, one_line

    checkpoint_path = args.checkpoint or weights.SHIPPED
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    try:
        generator = weights.load(checkpoint_path, raw=args.raw)
        dataset = datasets.check_name(args.dataset or generator.dataset)
        if args.json:  # the generator named its data only now
            cli.check_writable(args.json, "--json",
                               reads=datasets.source_files(dataset, args.data_dir))
        train = datasets.load(dataset, args.data_dir, "train")
        if train.classes != generator.classes:
            cli.fail(f"{checkpoint_path} draws other classes "
                     f"({datasets.describe(generator.classes)}) than dataset {dataset} "
                     f"has ({datasets.describe(train.classes)})")
        least = MIN_SAMPLES_PER_CLASS * len(train.classes)
        if args.num_samples < least:
            cli.fail(f"--num-samples must be at least {least}: {MIN_SAMPLES_PER_CLASS} "
                     f"per class for {len(train.classes)} classes")
        if args.num_samples > len(train.labels):
            cli.fail(f"--num-samples {args.num_samples} exceeds the "
                     f"{len(train.labels)} training images the Frechet floor is "
                     "computed from")
        test = datasets.load(dataset, args.data_dir, "test")
        clf = classifier.load_or_train(
            args.classifier or classifier.path_for(dataset, checkpoint_path),
            args.data_dir, say, dataset, train, test)
    except (CheckpointError, classifier.ClassifierError, datasets.DataError) as e:
        cli.fail(str(e))
    reference = quality.make_reference(clf.params, train.arrays, test.arrays,
                                       args.num_samples)
    result = quality.evaluate_generator(generator.variables, clf.params, reference,
                                        args.num_samples, args.seed)
    result = {"checkpoint": os.path.abspath(checkpoint_path), "step": generator.step,
              "averaged": generator.averaged, "seed": args.seed, "dataset": dataset,
              "classes": list(train.classes), **result}
    which = "weight average (EMA)" if generator.averaged else "G's own weights"
    print(f"generator              {checkpoint_path} (step {generator.step}, {which})")
    print(quality.format_table(result, train.classes))
    if args.json:
        text = json.dumps(quality.json_ready(result), indent=2, allow_nan=False)
        try:
            files.write_bytes(args.json, text.encode())
        except OSError as e:
            cli.fail(f"cannot write {args.json}: {one_line(e)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
