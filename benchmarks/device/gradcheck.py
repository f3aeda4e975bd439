"""Does this backend's jitted train-mode gradient of G equal the op-by-op one?

    python benchmarks/device/gradcheck.py

With the leaky ReLU as a maximum (its form before 2026-11-30) XLA:CPU's jitted
gradient dropped many entries (README "Fixed: dropped gradients on the CPU");
as a select (today's `gan.layers.leaky_relu`) it must match. Prints the relative
error of the BatchNorm bias gradients for both forms.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from gan import layers, models  # noqa: E402
from gan.config import Config  # noqa: E402
from gan.training import create_train_states  # noqa: E402

g, _ = create_train_states(Config(), jax.random.key(0))
B = 100
z = jax.random.normal(jax.random.key(8), (B, 100)); labels = jnp.arange(B) % 10
w = jax.random.normal(jax.random.key(9), (B, 28, 28, 1))
def f(p):
    out, _ = models.Generator().apply({"params": p, "batch_stats": g.batch_stats}, z,
                                      labels, train=True, mutable=["batch_stats"])
    return jnp.sum(w * out)
fixed = layers.leaky_relu
for name, fn in (("max", lambda x, a=0.2: jnp.maximum(x, a * x)), ("select", fixed)):
    layers.leaky_relu = fn
    a = jax.grad(f)(g.params); b = jax.jit(jax.grad(f))(g.params)
    for k in ("bn1", "bn2"):
        e = float(jnp.linalg.norm(a[k]["bias"] - b[k]["bias"])); n = float(jnp.linalg.norm(a[k]["bias"]))
        print(jax.default_backend(), name, k, "bias grad rel err jit vs eager", round(e / n, 6), flush=True)
