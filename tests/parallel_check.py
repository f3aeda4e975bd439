"""Run as a script with N host devices: one step split over N devices vs one device.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m tests.parallel_check

Prints one JSON line: the largest differences per state tree, and what the
compiled program does across devices.
"""

from __future__ import annotations

import json

import jax
import numpy as np

from gan import parallel
from gan.config import Config
from gan.training import create_train_states, train_step_on_data
from tests.synthetic import block_digits



def _leaves(tree):
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def run(mesh, config, images, labels):
    g, d = create_train_states(config, jax.random.key(0))
    g, d, key = parallel.replicate((g, d, jax.random.key(1)), mesh)
    x, y = parallel.shard_dataset(images, labels, config.data_shards, mesh)
    step = train_step_on_data.lower(g, d, x, y, key, batch_size=config.batch_size,
                                    mesh=mesh).compile()
    hlo = step.as_text()
    g, d, metrics = step(g, d, x, y, key)
    devices = len(g.params["deconv1"]["kernel"].sharding.device_set)
    return parallel.to_host((g, d, metrics)), hlo, devices


def compare(one, many) -> dict[str, float]:
    """Largest differences between two (g_state, d_state) pairs after one step."""
    out = {}
    for name, a, b in (("g", one[0], many[0]), ("d", one[1], many[1])):
        out[f"{name}.batch_stats"] = max(float(np.max(np.abs(u - v))) for u, v in
                                         zip(_leaves(a.batch_stats), _leaves(b.batch_stats)))
        # Adam's first moment after one step is (1 - beta1) * gradient.
        mu_a = _leaves(a.opt_state[0].mu)
        mu_b = _leaves(b.opt_state[0].mu)
        scale = max(float(np.max(np.abs(u))) for u in mu_a)
        out[f"{name}.grad_rel"] = max(float(np.max(np.abs(u - v))) for u, v in
                                      zip(mu_a, mu_b)) / scale
        # Adam's first step moves a weight by lr * g / (|g| + eps): lr * sign(g)
        # where g is clear of round-off (above 1% of the largest), so there the
        # two must agree to float32 rounding; elsewhere the sign is noise.
        sure = [np.abs(u) > 1e-2 * scale for u in mu_a]
        out[f"{name}.params_sure"] = _largest_where(_leaves(a.params),
                                                    _leaves(b.params), sure)
        if name == "g":  # G's weight average, kept on every device too
            out["g.ema_leaves"] = len(jax.tree.leaves(many[0].ema))
            out["g.ema_sure"] = _largest_where(_leaves(a.ema[0]["params"]),
                                               _leaves(b.ema[0]["params"]), sure)
    return out


def _largest_where(a, b, masks) -> float:
    return max(float(np.max(np.abs(u - v)[m], initial=0.0))
               for u, v, m in zip(a, b, masks))


def main() -> None:
    config = Config(batch_size=20, data_shards=1)
    images, labels = block_digits(200, seed=3)
    (g1, d1, m1), _, one_devices = run(parallel.make_mesh(1), config, images, labels)
    (g4, d4, m4), hlo, many_devices = run(parallel.make_mesh(), config, images, labels)
    out = {"devices": jax.device_count(), "one_devices": one_devices,
           "many_devices": many_devices, "all_reduce": "all-reduce" in hlo,
           "loss_rel_diff": float(max(abs(m1[k] - m4[k]) / abs(m1[k]) for k in m1)),
           **compare((g1, d1), (g4, d4))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
