"""Write digits on request from a trained generator.

    python sample.py --digits 2026 --out 2026.png          # pretrained generator
    python sample.py --checkpoint runs/x --digits 2026    # your own run
"""

from __future__ import annotations

import os
import sys

from gan import cli

# One generated image takes ~0.4 MB of activations in a chunk; this bounds the
# request so a typo cannot exhaust memory (the output alone is 784 bytes each).
MAX_IMAGES = 1_000_000


def parse_args(argv: list[str] | None):
    p = cli.ArgumentParser(
        description="Sample digit grids (and optionally an .npz dataset) from a "
        "train.py workdir.",
        formatter_class=cli.argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help="a train.py --workdir (its latest checkpoint is used) or a "
                   "generator.msgpack file (default: the pretrained generator in "
                   "weights/)")
    p.add_argument("--digits", default="0123456789",
                   help="digits to write, one grid row each, e.g. 2026")
    p.add_argument("--per-digit", type=int, default=10,
                   help="samples per requested digit (grid columns)")
    p.add_argument("--raw", action="store_true",
                   help="sample G's own weights, not their average (EMA); "
                   "needs a train.py workdir as --checkpoint")
    p.add_argument("--seed", type=cli.seed, default=0,
                   help="noise seed; column c uses the same noise in every row")
    p.add_argument("--out", default="samples.png", help="grid PNG to write")
    p.add_argument("--scale", type=int, default=2, help="grid upscaling factor")
    p.add_argument("--npz", default=None,
                   help="also write images (uint8 [N,28,28]) and labels (int [N])")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.digits or not args.digits.isdigit() or not args.digits.isascii():
        cli.fail(f"--digits must be digits 0-9, like 2026; got {args.digits!r}")
    if args.per_digit <= 0:
        cli.fail(f"--per-digit must be positive, got {args.per_digit}")
    if len(args.digits) * args.per_digit > MAX_IMAGES:
        cli.fail(f"{len(args.digits) * args.per_digit} images requested; the "
                 f"limit is {MAX_IMAGES}")
    if args.scale <= 0:
        cli.fail(f"--scale must be positive, got {args.scale}")
    cli.check_writable(args.out, "--out")
    if args.npz:
        cli.check_writable(args.npz, "--npz")
    cli.enable_compile_cache()

    import jax
    import numpy as np
    from gan import checkpoint, images, sampling

    try:
        weights = checkpoint.load_sampler(args.checkpoint or checkpoint.PRETRAINED,
                                          raw=args.raw)
    except checkpoint.CheckpointError as e:
        cli.fail(str(e))
    digits = [int(c) for c in args.digits]
    z, labels = sampling.digit_rows(jax.random.key(args.seed), digits, args.per_digit)
    out = sampling.generate_uint8(weights.variables, z, labels)
    try:
        images.save_grid(args.out, out, len(digits), args.per_digit, args.scale)
        if args.npz:
            tmp = args.npz + ".tmp.npz"
            np.savez_compressed(tmp, images=out, labels=labels)
            os.replace(tmp, args.npz)
    except OSError as e:
        cli.fail(f"cannot write output: {e}")
    which = " (EMA)" if weights.averaged else ""
    print(f"wrote {len(out)} digits ({args.digits} x {args.per_digit}) from step "
          f"{weights.step}{which} to {args.out}" + (f" and {args.npz}" if args.npz else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
