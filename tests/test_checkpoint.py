"""Checkpoints: round trip, and a clear error for one of another model."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from gan import checkpoint, record, weights
from gan.config import Config
from gan.training import create_train_states


def test_round_trip_restores_states_and_key(tmp_path):
    config = Config(batch_size=10)
    record.save(str(tmp_path), config)
    g, d = create_train_states(config, jax.random.key(3))
    d = d.replace(step=d.step + 7)
    key = jax.random.key(42)
    mngr = checkpoint.manager(str(tmp_path))
    checkpoint.save(mngr, g, d, key)
    mngr.close()
    restored = checkpoint.restore(str(tmp_path))
    assert restored.step == 7 and restored.config == config
    np.testing.assert_array_equal(jax.random.key_data(restored.key),
                                  jax.random.key_data(key))
    for a, b in zip(jax.tree.leaves((g, d)),
                    jax.tree.leaves((restored.g_state, restored.d_state))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("change, message", [
    ("shape", r"g\.params\.deconv1\.kernel is float32\[7, 7, 110, 300\], the model "
              r"has float32\[7, 7, 110, 256\]"),
    ("dtype", r"g\.params\.deconv1\.kernel is float16"),
    ("missing", r"arrays differ \(g\.params\.deconv1\.bias\)"),
])
def test_checkpoint_of_another_model_is_refused(tmp_path, change, message):
    config = Config()
    record.save(str(tmp_path), config)
    g, d = create_train_states(config, jax.random.key(0))
    params = jax.tree.map(lambda x: x, g.params)
    if change == "shape":  # a wider first layer
        params["deconv1"]["kernel"] = np.zeros((7, 7, 110, 300), np.float32)
    elif change == "dtype":
        params["deconv1"]["kernel"] = np.zeros((7, 7, 110, 256), np.float16)
    else:
        del params["deconv1"]["bias"]
    mngr = checkpoint.manager(str(tmp_path))
    checkpoint.save(mngr, g.replace(params=params), d, jax.random.key(0))
    mngr.close()
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"checkpoint 0 in .* does not fit this model: " + message):
        checkpoint.restore(str(tmp_path))


def _g_variables(g):
    return {"params": g.params, "batch_stats": g.batch_stats}


def test_generator_weights_round_trip(tmp_path):
    config = Config(batch_size=10, seed=5)
    g, _ = create_train_states(config, jax.random.key(1))
    path = str(tmp_path / "g.msgpack")
    weights.save(path, _g_variables(g), 123, config)
    loaded = weights.load(path)
    assert loaded.step == 123 and loaded.config == config
    for a, b in zip(jax.tree.leaves(_g_variables(g)), jax.tree.leaves(loaded.variables)):
        np.testing.assert_array_equal(a, b)
    assert not (tmp_path / "g.msgpack.tmp").exists()


def test_damaged_or_foreign_generator_weights_are_refused(tmp_path):
    config = Config()
    g, _ = create_train_states(config, jax.random.key(1))
    path = tmp_path / "g.msgpack"
    weights.save(str(path), _g_variables(g), 1, config)
    data = path.read_bytes()
    path.write_bytes(data[:1000])
    with pytest.raises(checkpoint.CheckpointError, match="not a generator weights"):
        weights.load(str(path))
    variables = _g_variables(g)
    variables["params"] = dict(variables["params"])
    variables["params"].pop("deconv1")
    weights.save(str(path), variables, 1, config)
    with pytest.raises(checkpoint.CheckpointError, match="names or shapes"):
        weights.load(str(path))
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        weights.load(str(tmp_path / "missing.msgpack"))


def test_an_empty_path_is_not_the_shipped_generator():
    """None means the shipped generator; "" is a mistake, not a default."""
    with pytest.raises(checkpoint.CheckpointError, match="empty path"):
        weights.load("")
    assert weights.load(None).step == weights.read_file(weights.SHIPPED).step
