"""Scores every generator a run keeps (G's own weights, each weight average with
each BatchNorm mode) at evaluate.py's full size, and exports the best average.

    python benchmarks/device/averages.py WORKDIR --data-dir DIR --classifier FILE \
        --out DIR

For a run trained with `--ema-compare` (issue 13): which decay and BatchNorm
mode to ship is chosen on 10,000 samples (seed 0, as evaluate.py), not on the
1,000 that `--eval-every` scores each epoch. Writes `averages.json` (one entry
per generator: evaluate.py's figures) and generator files
(`generator_ema<decay>_<mode>.msgpack`, loadable by sample.py and evaluate.py)
for the run's own average and for the one of lowest Frechet ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from gan import checkpoint, classifier, data, ema, quality, record, sampling, weights  # noqa: E402
from gan.config import EMA_BATCH_STATS  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workdir")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--classifier", default=None)
    p.add_argument("--out", required=True, help="folder for the JSON and the files")
    p.add_argument("--num-samples", type=int, default=quality.NUM_SAMPLES)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)

    restored = checkpoint.restore(args.workdir)
    config = record.load_config(args.workdir)
    g_state, step = restored.g_state, int(restored.g_state.step)
    clf = classifier.load_or_train(args.classifier or classifier.SHIPPED,
                                   args.data_dir)
    reference = quality.make_reference(
        clf.params, data.load_mnist(args.data_dir, "train"),
        data.load_mnist(args.data_dir, "test"), args.num_samples)

    # name -> (variables to sample with, decay or None, mode or None)
    candidates = {"raw": (sampling.g_variables(g_state), None, None)}
    for decay, average in zip(g_state.ema_decays, g_state.ema):
        for mode in EMA_BATCH_STATS:
            candidates[ema.label(decay, mode)] = (ema.for_sampling(average, mode),
                                                  decay, mode)
    results = {}
    for name, (variables, _, _) in candidates.items():
        r = quality.evaluate_generator(variables, clf.params, reference,
                                        args.num_samples, seed=0)
        results[name] = quality.json_ready(r)
        print(f"{name:24s} accuracy {100 * r['conditional_accuracy']:.2f}%  worst "
              f"{r['worst_digit']} {100 * r['worst_digit_accuracy']:.1f}%  Frechet "
              f"ratio {r['frechet_ratio']:.3f}  precision {r['precision']:.3f}  "
              f"recall {r['recall']:.3f}", flush=True)
    with open(os.path.join(args.out, "averages.json"), "w") as f:
        json.dump({"workdir": args.workdir, "step": step, "config": dataclasses.asdict(
            config), "num_samples": args.num_samples, "results": results}, f, indent=1)

    averages = [n for n in results if n != "raw"]
    if not averages:
        return 0
    best = min(averages, key=lambda n: results[n]["frechet_ratio"])
    own = ema.label(config.ema_decay, config.ema_batch_stats)
    print(f"lowest Frechet ratio: {best}; the run's own average: {own}")
    for name in dict.fromkeys([own, best]):
        variables, decay, mode = candidates[name]
        recipe = dataclasses.replace(config, ema_decay=decay, ema_compare=(),
                                     ema_batch_stats=mode)
        weights.save(os.path.join(args.out, f"generator_{name}.msgpack"),
                                  variables, step, recipe, averaged=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
