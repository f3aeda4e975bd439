"""Per-layer forward and backward time: ours against the peers' same layer.

    python benchmarks/layers.py --vs-tf --vs-torch --torch-python ../venv-torch/bin/python

Each of the model's six layers, alone, at the batch the train step gives it:
forward, and forward plus backward (the gradients the step needs: the weights',
and the input's except for D's first layer, whose input is the data), so
`backward = both - forward`. Ours is the fast form the model runs
(`gan.layers`, jitted); TensorFlow's the Keras layer (oneDNN, `tf.function`);
PyTorch's the `torch.nn` layer of `peer_torch.py`. Each framework runs in its
own long-lived worker process, and the workers take turns, one at a time, for
`--rounds` rounds, so machine drift falls on all of them alike; the table shows
medians. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# name: (input shape NHWC at batch 1, output channels, kernel, stride, kind,
#        batch multiple, input gradient needed)
# kind: "conv" ('SAME' conv), "deconv" ('SAME' transposed conv), "dense_in"
# (G's 1x1 -> 7x7 'VALID' transposed conv), "dense_out" (D's 7x7 'VALID' conv).
# D's layers see real and fake images in one call in the D update (batch 2B)
# and the fakes alone in the G update (B); they are timed at 2B here.
LAYERS = {
    "G deconv1 (110 -> 7x7x256)": ((1, 1, 110), 256, 7, 1, "dense_in", 1, False),
    "G deconv2 (7x7x256 -> 14x14x128)": ((7, 7, 256), 128, 5, 2, "deconv", 1, True),
    "G deconv3 (14x14x128 -> 28x28x1)": ((14, 14, 128), 1, 5, 2, "deconv", 1, True),
    "D conv1 (28x28x11 -> 14x14x128)": ((28, 28, 11), 128, 5, 2, "conv", 2, False),
    "D conv2 (14x14x128 -> 7x7x256)": ((14, 14, 128), 256, 5, 2, "conv", 2, True),
    "D conv3 (7x7x256 -> 1)": ((7, 7, 256), 1, 7, 1, "dense_out", 2, True),
}


def _median_ms(fn, reps: int) -> float:
    fn()                                          # warm-up (and compile)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def jax_cases(batch: int):
    """{layer: (forward(), forward_and_backward())} with our fast forms."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gan import layers, models

    chunked = layers.in_batch_chunks
    ops = {
        "dense_in": lambda x, k: layers.conv_transpose_from_1x1(x.reshape(x.shape[0], -1), k),
        "deconv": lambda x, k: (chunked(layers.conv_transpose_phases, models.CONV_CHUNK)(x, k)
                                if k.shape[-1] > 1 else layers.conv_transpose_subpixel(x, k)),
        "conv": lambda x, k: (chunked(lambda a, b: layers.conv_same(a, b, 2),
                                      models.CONV_CHUNK)(x, k) if x.shape[-1] > 11
                              else layers.conv_with_onehot_channels(
                                  x[..., :1], k, jnp.argmax(x[..., 1:], -1)[:, 0, 0])),
        "dense_out": layers.conv_valid_full,
    }
    cases = {}
    rng = np.random.default_rng(0)
    for name, (shape, c_out, k, _, kind, mult, input_grad) in LAYERS.items():
        b = batch * mult
        x = jnp.asarray(rng.standard_normal((b,) + shape, np.float32))
        if kind == "conv" and shape[-1] == 11:    # image plus one-hot label maps
            onehot = np.eye(10, dtype=np.float32)[rng.integers(0, 10, b)]
            x = x.at[..., 1:].set(jnp.broadcast_to(onehot[:, None, None], (b,) + shape[:2] + (10,)))
        kern = jnp.asarray(rng.standard_normal((k, k, shape[-1], c_out), np.float32) * 0.02)
        op = ops[kind]
        fwd = jax.jit(op)
        argnums = (0, 1) if input_grad else (1,)

        def loss(x, kern, op=op):
            return jnp.sum(op(x, kern) ** 2)

        both = jax.jit(jax.grad(loss, argnums=argnums))
        cases[name] = (lambda f=fwd, x=x, kern=kern: jax.block_until_ready(f(x, kern)),
                       lambda f=both, x=x, kern=kern: jax.block_until_ready(f(x, kern)))
    return cases


def tf_cases(batch: int):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    cases = {}
    for name, (shape, c_out, k, s, kind, mult, input_grad) in LAYERS.items():
        b = batch * mult
        if kind in ("deconv", "dense_in"):
            layer = tf.keras.layers.Conv2DTranspose(
                c_out, k, s, padding="same" if kind == "deconv" else "valid")
        else:
            layer = tf.keras.layers.Conv2D(
                c_out, k, s, padding="same" if kind == "conv" else "valid")
        x = tf.random.normal((b,) + shape)
        layer(x)                                      # builds the weights

        @tf.function
        def fwd(x, layer=layer):
            return layer(x)

        @tf.function
        def both(x, layer=layer, input_grad=input_grad):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.square(layer(x)))
            wrt = ([x] if input_grad else []) + [layer.kernel]
            return tape.gradient(loss, wrt)

        cases[name] = (lambda f=fwd, x=x: f(x)[0, 0, 0, 0].numpy(),
                       lambda f=both, x=x: f(x)[-1][0, 0, 0, 0].numpy())
    return cases


def torch_cases(batch: int):
    import torch
    import torch.nn as nn
    torch.manual_seed(0)
    cases = {}
    for name, (shape, c_out, k, s, kind, mult, input_grad) in LAYERS.items():
        b = batch * mult
        h, w, c_in = shape
        if kind == "deconv":
            layer = nn.ConvTranspose2d(c_in, c_out, k, s, padding=2, output_padding=1)
        elif kind == "dense_in":
            layer = nn.ConvTranspose2d(c_in, c_out, k)
        elif kind == "conv":
            layer = nn.Conv2d(c_in, c_out, k, s, padding=2)
        else:
            layer = nn.Conv2d(c_in, c_out, k)
        x = torch.randn(b, c_in, h, w, requires_grad=input_grad)

        def fwd(layer=layer, x=x):
            with torch.no_grad():
                return float(layer(x)[0, 0, 0, 0])

        def both(layer=layer, x=x):
            layer.zero_grad()
            x.grad = None
            layer(x).square().sum().backward()
            return float(layer.weight.grad[0, 0, 0, 0])

        cases[name] = (fwd, both)
    return cases


def worker(framework: str, batch: int, reps: int) -> None:
    """Times all layers each time a line arrives on stdin; one JSON line back."""
    cases = {"ours": jax_cases, "tf": tf_cases, "torch": torch_cases}[framework](batch)
    print("ready", flush=True)
    for _ in sys.stdin:
        result = {name: (_median_ms(fwd, reps), _median_ms(both, reps))
                  for name, (fwd, both) in cases.items()}
        print(json.dumps(result), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3, help="turns each framework takes")
    p.add_argument("--reps", type=int, default=5, help="timed calls per layer per turn")
    p.add_argument("--vs-tf", action="store_true")
    p.add_argument("--vs-torch", action="store_true")
    p.add_argument("--torch-python", default=sys.executable)
    p.add_argument("--worker", choices=("ours", "tf", "torch"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.batch_size, args.reps)
        return
    frameworks = {"ours": sys.executable}
    if args.vs_tf:
        frameworks["tf"] = sys.executable
    if args.vs_torch:
        frameworks["torch"] = args.torch_python
    procs = {}
    for name, python in frameworks.items():
        procs[name] = subprocess.Popen(
            [python, os.path.abspath(__file__), "--worker", name, "--batch-size",
             str(args.batch_size), "--reps", str(args.reps)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if procs[name].stdout.readline().strip() != "ready":
            sys.exit(f"layers.py: the {name} worker did not start")
    runs = {name: [] for name in frameworks}
    for r in range(args.rounds):
        for name, proc in procs.items():
            proc.stdin.write("go\n")
            proc.stdin.flush()
            runs[name].append(json.loads(proc.stdout.readline()))
        print(f"round {r + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    table = {name: {layer: [round(statistics.median(run[layer][i] for run in results), 2)
                            for i in (0, 1)] for layer in LAYERS}
             for name, results in runs.items()}
    header = "| layer (batch) | " + " | ".join(
        f"{n} fwd | {n} bwd" for n in frameworks) + " |"
    print(header)
    print("|---" * (1 + 2 * len(frameworks)) + "|")
    totals = {n: [0.0, 0.0] for n in frameworks}
    for layer, (*_, mult, _) in LAYERS.items():
        cells = []
        for n in frameworks:
            fwd, both = table[n][layer]
            cells += [f"{fwd:.1f}", f"{both - fwd:.1f}"]
            totals[n][0] += fwd
            totals[n][1] += both - fwd
        print(f"| {layer} ({args.batch_size * mult}) | " + " | ".join(cells) + " |")
    print("| all six | " + " | ".join(f"{f:.1f} | {b:.1f}" for f, b in totals.values())
          + " |")
    print(json.dumps({"batch_size": args.batch_size, "ms_forward_and_both": table}))


if __name__ == "__main__":
    main()
