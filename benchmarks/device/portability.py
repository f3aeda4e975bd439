"""Does a checkpoint written on one backend load, sample and resume on another?

    python benchmarks/device/portability.py WORKDIR --write-reference   # where it was trained
    python benchmarks/device/portability.py WORKDIR --data-dir DIR       # anywhere else

`--write-reference` saves the latest checkpoint's sample grid (float, before
rounding) as `WORKDIR/portability_reference.npz`, with the backend that made it.
Without it, the checkpoint is restored here (Orbax, every state: params, Adam,
BatchNorm statistics, step, key), the same grid is sampled and compared with the
reference, and a copy of the run is resumed for one training step. Prints one
JSON line; exit 1 if anything fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from gan import checkpoint, loop, record, run_setup, sampling  # noqa: E402
from gan.config import RunOptions  # noqa: E402

REFERENCE_FILE = "portability_reference.npz"


def grid(workdir: str) -> tuple[int, np.ndarray]:
    """(step, float grid `[100, 28, 28, 1]`) of the latest checkpoint's generator."""
    restored = checkpoint.restore(workdir)
    config = record.load_config(workdir)
    z, labels = sampling.grid_inputs(run_setup.run_keys(config.seed)[2])
    images = sampling.generate(sampling.g_variables(restored.g_state), z, labels)
    return int(restored.g_state.step), np.asarray(images)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workdir")
    p.add_argument("--write-reference", action="store_true")
    p.add_argument("--data-dir", help="training data, to resume one step")
    args = p.parse_args()
    backend = f"{jax.default_backend()} ({jax.devices()[0].device_kind})"
    step, images = grid(args.workdir)
    ref_path = os.path.join(args.workdir, REFERENCE_FILE)
    if args.write_reference:
        np.savez(ref_path, images=images, step=step, backend=backend)
        print(json.dumps({"reference": ref_path, "step": step, "backend": backend}))
        return 0
    ref = np.load(ref_path)
    result = {"written_on": str(ref["backend"]), "loaded_on": backend, "step": step,
              "same_step": step == int(ref["step"]),
              "grid_max_abs_diff": float(np.max(np.abs(images - ref["images"])))}
    with jax.default_matmul_precision("highest"):
        result["grid_max_abs_diff_highest_precision"] = float(
            np.max(np.abs(grid(args.workdir)[1] - ref["images"])))
    if args.data_dir:
        with tempfile.TemporaryDirectory() as tmp:
            copy = os.path.join(tmp, "run")
            shutil.copytree(args.workdir, copy)
            # One step per dispatch (the default): XLA:CPU runs the many-step
            # loop slowly.
            config = record.load_config(copy)
            options = RunOptions(workdir=copy, data_dir=args.data_dir,
                                 max_steps=step + 1, progress=False)
            fit = loop.train_and_evaluate(config, options)
            result["resumed_to_step"] = fit.step
            result["resumed_losses"] = fit.last_metrics
    # At full precision: GPUs may use TF32 for fp32 matmuls by default.
    ok = (result["same_step"] and result["grid_max_abs_diff_highest_precision"] < 0.05
          and result.get("resumed_to_step", step + 1) == step + 1)
    result["ok"] = bool(ok)
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
