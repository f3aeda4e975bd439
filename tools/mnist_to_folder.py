"""Writes MNIST digits out as a folder dataset (`train.py --dataset folder:DIR`),
the way a user's own scans would look: dark ink on white paper, bigger than
28x28, PNG and JPEG, a subfolder per class named by a word. docs/datasets.md
trains on it.

    python tools/mnist_to_folder.py --data-dir ../shared/data/mnist-idx --out /tmp/words
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gan import data  # noqa: E402

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="MNIST IDX folder or TFDS dir")
    p.add_argument("--out", required=True, help="folder to write (must not exist)")
    p.add_argument("--digits", default="01234", help="digits to write, a class each")
    p.add_argument("--per-class", type=int, default=6000, help="pictures per class")
    args = p.parse_args()
    if os.path.exists(args.out):
        p.error(f"--out {args.out} exists")
    if not args.digits.isdigit() or len(set(args.digits)) != len(args.digits):
        p.error(f"--digits must be different digits 0-9, got {args.digits!r}")
    if args.per_class < 6:
        p.error("--per-class must be at least 6 (a class keeps one in 6 for testing)")
    rng = np.random.default_rng(0)
    try:
        splits = [data.load_mnist(args.data_dir, s) for s in data.SPLITS]
    except data.DataError as e:
        p.error(str(e))
    images = np.concatenate([split[0] for split in splits])
    labels = np.concatenate([split[1] for split in splits])
    for digit in map(int, args.digits):
        folder = os.path.join(args.out, WORDS[digit])
        os.makedirs(folder)
        for i, index in enumerate(np.flatnonzero(labels == digit)[:args.per_class]):
            size = int(rng.integers(32, 65))  # a scan: bigger, dark on light
            picture = Image.fromarray(255 - images[index]).resize(
                (size, size), Image.Resampling.BICUBIC)
            name = f"{WORDS[digit]}_{i:05d}"
            if i % 4 == 3:
                picture.save(os.path.join(folder, name + ".jpg"), quality=95)
            else:
                picture.save(os.path.join(folder, name + ".png"))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
