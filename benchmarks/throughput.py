"""Training and sampling throughput of the real model and train step.

    python benchmarks/throughput.py --vs-tf --repeats 3

Synthetic data (the train step does not care what the digits look like). Prints
compile time, median ms per full D+G iteration, images/s, the analytic FLOPs of
an iteration and the achieved GFLOP/s, the generator's sampling throughput, peak
host memory (and peak device memory where the backend reports it). With `--vs-tf`
/ `--vs-torch` the peers in `../shared/peers` (or `--peers-dir`) run between our
repeats, in the same invocation, and the ratios of the medians are printed. The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gan import parallel, sampling  # noqa: E402
from gan.config import COMPUTE_DTYPES, Config  # noqa: E402
from gan.loop import peak_rss_mb  # noqa: E402
from gan.data import NUM_CLASSES
from gan.models import NOISE_DIM  # noqa: E402
from gan.training import (create_train_states, train_step_on_data,  # noqa: E402
                          train_steps_on_data)

PEER_DIR = os.path.join(os.path.dirname(ROOT), "shared", "peers")


def conv_flops(b: int, h_out: int, w_out: int, k: int, c_in: int, c_out: int) -> int:
    """Multiply-adds x 2 of a conv producing `[b, h_out, w_out, c_out]`."""
    return 2 * b * h_out * w_out * k * k * c_in * c_out


def layer_flops(b: int) -> tuple[list[int], list[int]]:
    """Forward FLOPs of each G and D layer at batch b, as the seed's plain layers.

    A transposed conv counts its non-zero products: each input pixel meets every tap.
    """
    g = [conv_flops(b, 1, 1, 7, NOISE_DIM + NUM_CLASSES, 256),   # 1x1 -> 7x7
         conv_flops(b, 7, 7, 5, 256, 128),                        # 7 -> 14
         conv_flops(b, 14, 14, 5, 128, 1)]                        # 14 -> 28
    d = [conv_flops(b, 14, 14, 5, 1 + NUM_CLASSES, 128),          # 28 -> 14
         conv_flops(b, 7, 7, 5, 128, 256),                        # 14 -> 7
         conv_flops(b, 1, 1, 7, 256, 1)]                          # 7x7 -> logit
    return g, d


def iteration_flops(b: int) -> int:
    """FLOPs of one D+G iteration (a backward pass costs its forward per gradient:
    one for the weights, one for the inputs where those are needed)."""
    g, d = layer_flops(b)
    d_step = sum(g) + 2 * (sum(d) + sum(d) + sum(d[1:]))        # D on real + fake
    g_step = sum(g) + sum(d) + sum(d) + sum(g) + sum(g[1:])      # D input grads only
    return d_step + g_step


def time_ours(config: Config, iters: int, n: int, mesh=None, steps_per_call: int = 1
              ) -> tuple[float, list[float]]:
    """Returns (compile seconds, per-iteration seconds of `iters` synced steps).

    Steps are timed in synced blocks, as `train.py` runs them: with
    `steps_per_call` K > 1 a block is one call of K steps, else up to 10
    steps dispatched one by one without waiting (train.py syncs only to log).
    Each block's time counts as that many equal iterations; `iters` is rounded up
    to whole blocks. With a mesh, the batch is split over its devices as in
    `train.py`.
    """
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
    g, d = create_train_states(config, jax.random.key(0))
    key = jax.random.key(1)
    if mesh is not None:
        g, d, key = parallel.replicate((g, d, key), mesh)
        images, labels = parallel.shard_dataset(images, labels, 1, mesh)
    else:
        images, labels = jnp.asarray(images), jnp.asarray(labels)
    k = steps_per_call
    t = time.perf_counter()
    if k == 1:
        step = train_step_on_data.lower(g, d, images, labels, key,
                                        batch_size=config.batch_size,
                                        mesh=mesh).compile()
        args = (images, labels, key)
    else:
        count = np.int32(k)
        step = train_steps_on_data.lower(g, d, images, labels, key, count,
                                         batch_size=config.batch_size, max_steps=k,
                                         mesh=mesh).compile()
        args = (images, labels, key, count)
    compile_s = time.perf_counter() - t
    g, d, m = step(g, d, *args)                                  # warm-up
    jax.block_until_ready(m)
    calls = 1 if k > 1 else min(iters, 10)       # dispatches per synced block
    block = k * calls                            # steps per block
    times = []
    for _ in range(-(-iters // block)):
        t = time.perf_counter()
        for _ in range(calls):
            g, d, m = step(g, d, *args)
        jax.block_until_ready(m)
        times += [(time.perf_counter() - t) / block] * block
    return compile_s, times


def time_sampling(config: Config, batch: int = 1000, iters: int = 5) -> float:
    """Images/s of eval-mode generation in batches of `batch`."""
    g, _ = create_train_states(config, jax.random.key(0))
    variables = sampling.g_variables(g)
    z = jax.random.normal(jax.random.key(2), (batch, NOISE_DIM))
    labels = jnp.arange(batch) % NUM_CLASSES
    jax.block_until_ready(sampling.generate(variables, z, labels))
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        jax.block_until_ready(sampling.generate(variables, z, labels))
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def run_peer(script: str, python: str, batch: int, iters: int,
             peer_dir: str = PEER_DIR) -> float:
    """ms/iter reported by a peer script."""
    peer_dir = os.path.abspath(peer_dir)  # the peer runs with it as working dir
    out = subprocess.run([python, os.path.join(peer_dir, script), str(batch),
                          str(iters)], capture_output=True, text=True, check=True,
                         cwd=peer_dir)
    match = re.search(r"([\d.]+) ms/iter", out.stdout)
    if not match:
        raise RuntimeError(f"{script} printed no timing: {out.stdout} {out.stderr}")
    print("  " + out.stdout.strip().splitlines()[-1], flush=True)
    return float(match.group(1))


def device_peak_mb() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batch-size", type=int, default=Config().batch_size)
    p.add_argument("--iters", type=int, default=10, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3,
                   help="our timing and each peer's alternate this many times")
    p.add_argument("--vs-tf", action="store_true", help="also run peer_tf.py")
    p.add_argument("--vs-torch", action="store_true", help="also run peer_torch.py")
    p.add_argument("--torch-python", default=sys.executable,
                   help="python with torch installed, for --vs-torch")
    p.add_argument("--peers-dir", default=PEER_DIR,
                   help="folder holding peer_tf.py and peer_torch.py")
    p.add_argument("--steps-per-call", type=int, default=1,
                   help="train steps per dispatch, as train.py --steps-per-call")
    p.add_argument("--compute-dtype", default="float32", choices=COMPUTE_DTYPES,
                   help="precision of the convolutions, as train.py --compute-dtype")
    p.add_argument("--ema-decay", type=float, default=Config().ema_decay,
                   help="the generator's weight average, as train.py (0: off, "
                   "the seed's step, which the peers run)")
    p.add_argument("--json", default=None, help="also write the JSON result here")
    p.add_argument("--devices", type=int, default=None,
                   help="split each batch over this many local devices, as train.py "
                   "(default: unsharded, one device)")
    args = p.parse_args()
    if args.steps_per_call <= 0:
        p.error(f"--steps-per-call must be positive, got {args.steps_per_call}")
    if not 0 <= args.ema_decay < 1:
        p.error(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    mesh = parallel.make_mesh(args.devices) if args.devices else None
    n_dev = mesh.size if mesh is not None else 1

    config = Config(batch_size=args.batch_size, compute_dtype=args.compute_dtype,
                    ema_decay=args.ema_decay)
    b = config.batch_size
    flops = iteration_flops(b)
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), "
          f"jax {jax.__version__}, batch {b}, {n_dev} device(s), "
          f"{args.steps_per_call} step(s) per call, {config.compute_dtype} "
          f"convolutions, EMA decay {config.ema_decay:g}, {os.cpu_count()} CPUs",
          flush=True)
    ours, tf_ms, torch_ms, compile_s = [], [], [], None
    for r in range(args.repeats):
        c, times = time_ours(config, args.iters, n=max(10 * b, 1000), mesh=mesh,
                             steps_per_call=args.steps_per_call)
        compile_s = c if compile_s is None else compile_s
        ours.append(statistics.median(times) * 1e3)
        print(f"repeat {r + 1}: ours {ours[-1]:.1f} ms/iter "
              f"(min {min(times) * 1e3:.1f})", flush=True)
        if args.vs_tf:
            tf_ms.append(run_peer("peer_tf.py", sys.executable, b, args.iters,
                                   args.peers_dir))
        if args.vs_torch:
            torch_ms.append(run_peer("peer_torch.py", args.torch_python, b, args.iters,
                                      args.peers_dir))

    ms = statistics.median(ours)
    result = {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
              "batch_size": b, "devices": n_dev,
              "steps_per_call": args.steps_per_call,
              "compute_dtype": config.compute_dtype, "compile_s": round(compile_s, 2),
              "ms_per_iter": round(ms, 1), "img_per_s": round(b / ms * 1e3, 1),
              "img_per_s_per_device": round(b / ms * 1e3 / n_dev, 1),
              "gflop_per_iter": round(flops / 1e9, 2),
              "gflop_per_s": round(flops / ms / 1e6, 1),
              "sample_img_per_s": round(time_sampling(config), 0),
              "peak_rss_mb": round(peak_rss_mb(), 0)}
    if (dev := device_peak_mb()) is not None:
        result["peak_device_mb"] = round(dev, 0)
    for name, peer in (("tf", tf_ms), ("torch", torch_ms)):
        if peer:
            peer_ms = statistics.median(peer)
            result[f"{name}_ms_per_iter"] = round(peer_ms, 1)
            result[f"{name}_img_per_s"] = round(b / peer_ms * 1e3, 1)
            result[f"speedup_vs_{name}"] = round(peer_ms / ms, 2)
    print(f"compile {result['compile_s']} s; {ms:.1f} ms/iter, "
          f"{result['img_per_s']} img/s ({result['img_per_s_per_device']} per device); "
          f"{result['gflop_per_iter']} GFLOP/iter, "
          f"{result['gflop_per_s']} GFLOP/s; sampling {result['sample_img_per_s']:.0f} "
          f"img/s; peak RSS {result['peak_rss_mb']:.0f} MB")
    for name in ("tf", "torch"):
        if f"speedup_vs_{name}" in result:
            print(f"vs {name}: {result[f'{name}_ms_per_iter']} ms/iter -> ours is "
                  f"{result[f'speedup_vs_{name}']}x its images/s")
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
