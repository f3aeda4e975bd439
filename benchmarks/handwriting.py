"""How well a digit's handwriting carries over: `python benchmarks/handwriting.py
--data-dir ../shared/data/mnist-idx`.

For `--per-class` MNIST test digits of each class (the first ones), finds each
one's noise vector z* (`DigitWriter.style_from`, label given) and measures:

  (a) reconstruction: mean absolute pixel error (fraction of the range) and
      classifier-feature distance (Euclidean, 128-d) of G(z*, y) to the source,
      against a random z;
  (b) style carried over: with z*, the other nine digits are written; the slant
      (second-order moments: mu11 / mu02) and the stroke thickness (ink area
      over skeleton length) of the source are correlated (Pearson, over the
      sources) with the mean of its nine digits'; a random z per source gives
      the baseline;
  (c) the written digits read as requested by the shipped classifier (and
      with `verify=True`, what still is not);
  (d) the time of one `style_from` (prepare + inversion + redraw), median over
      the sources after the first (which compiles).

Prints a table, writes the figures as JSON (`--json`) and a picture of sources,
their redrawings and 0-9 in their handwriting (`--picture`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def slant(image):
    """Horizontal shear per row of the ink (mu11 / mu02 of the image moments):
    0 for upright strokes, positive when the top leans right."""
    import numpy as np
    x = np.asarray(image, np.float64)
    ys, xs = np.indices(x.shape)
    m = x.sum()
    cy, cx = (ys * x).sum() / m, (xs * x).sum() / m
    mu11 = ((xs - cx) * (ys - cy) * x).sum() / m
    mu02 = ((ys - cy) ** 2 * x).sum() / m
    return -mu11 / mu02  # rows grow downwards: a right lean has negative mu11


def thickness(image):
    """Stroke width in pixels: ink area over skeleton length (ink: > 50%)."""
    import numpy as np
    from skimage.morphology import skeletonize
    ink = np.asarray(image) > 127
    return ink.sum() / max(int(skeletonize(ink).sum()), 1)


def pearson(a, b):
    import numpy as np
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data",
                                                      "mnist-idx"))
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--json", default=None)
    p.add_argument("--picture", default=None)
    args = p.parse_args()

    import jax
    import numpy as np

    from gan import classifier, images
    from gan.data import load_mnist
    from gan.digit_writer import DigitWriter, classifier_reader
    from gan.models import NOISE_DIM

    writer = DigitWriter.load()
    clf = writer.classifier_params
    read = classifier_reader(clf)
    x, y = load_mnist(args.data_dir, "test")
    picks = np.concatenate([np.flatnonzero(y == d)[:args.per_class] for d in range(10)])
    rows = []
    seconds = []
    for n, i in enumerate(picks):
        source, label = x[i], int(y[i])
        t = time.perf_counter()
        style = writer.style_from(source, label=label)
        seconds.append(time.perf_counter() - t)
        random_z = np.asarray(jax.random.normal(jax.random.key(10_000 + n),
                                                (NOISE_DIM,)), np.float32)
        others = np.array([d for d in range(10) if d != label], np.int32)
        written = writer.draw(np.tile(style.z, (9, 1)), others)       # [9, 28, 28]
        random_written = writer.draw(np.tile(random_z, (9, 1)), others)
        random_fit = writer.draw(random_z[None], np.array([label]))[0]
        _, feats = classifier.predict(clf, np.stack([style.source, style.fit,
                                                     random_fit]))
        verified = writer.number("".join(map(str, others)), style=style, verify=True)
        read_as, _ = read(written)
        rows.append({
            "label": label,
            "pixel_error": style.pixel_error,
            "random_pixel_error": float(np.abs(random_fit.astype(float)
                                               - style.source).mean() / 255),
            "feature_distance": float(np.linalg.norm(feats[1] - feats[0])),
            "random_feature_distance": float(np.linalg.norm(feats[2] - feats[0])),
            "slant": slant(style.source),
            "slant_written": float(np.mean([slant(im) for im in written])),
            "slant_random": float(np.mean([slant(im) for im in random_written])),
            "thickness": thickness(style.source),
            "thickness_written": float(np.mean([thickness(im) for im in written])),
            "thickness_random": float(np.mean([thickness(im) for im in random_written])),
            "read_right": int((read_as == others).sum()),
            "unverified": verified.unverified,
        })
        if n % 50 == 0:
            print(f"{n + 1}/{len(picks)} digits, last inversion {seconds[-1]:.2f} s",
                  file=sys.stderr, flush=True)

    def mean(key):
        return float(np.mean([r[key] for r in rows]))

    figures = {
        "sources": len(rows),
        "pixel_error": mean("pixel_error"),
        "random_pixel_error": mean("random_pixel_error"),
        "feature_distance": mean("feature_distance"),
        "random_feature_distance": mean("random_feature_distance"),
        "slant_correlation": pearson([r["slant"] for r in rows],
                                     [r["slant_written"] for r in rows]),
        "slant_correlation_random": pearson([r["slant"] for r in rows],
                                            [r["slant_random"] for r in rows]),
        "thickness_correlation": pearson([r["thickness"] for r in rows],
                                         [r["thickness_written"] for r in rows]),
        "thickness_correlation_random": pearson(
            [r["thickness"] for r in rows], [r["thickness_random"] for r in rows]),
        "read_as_requested": sum(r["read_right"] for r in rows) / (9 * len(rows)),
        "lines_unverified_after_verify": sum(r["unverified"] for r in rows),
        "inversion_s_median": statistics.median(seconds[1:] or seconds),
        "inversion_s_p90": float(np.percentile(seconds[1:] or seconds, 90)),
        "first_inversion_s": seconds[0],
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{os.cpu_count()} cores, JAX {jax.__version__} "
                   f"({jax.devices()[0].platform})",
        "date": time.strftime("%Y-%m-%d"),
    }
    for key, value in figures.items():
        print(f"{key:32s} {value:.4f}" if isinstance(value, float) else
              f"{key:32s} {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"figures": figures, "per_source": rows}, f, indent=1)
    if args.picture:  # one source per class: source, fit, then 0-9 in its hand
        lines = []
        for d in range(10):
            i = int(np.flatnonzero(y == d)[0])
            style = writer.style_from(x[i], label=d)
            digits = writer.draw(np.tile(style.z, (10, 1)), np.arange(10, dtype=np.int32))
            blank = np.zeros((1, 28, 28), np.uint8)
            lines.append(np.concatenate([style.source[None], style.fit[None], blank,
                                         digits]))
        images.save_png(args.picture, images.number_image(np.stack(lines), 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
