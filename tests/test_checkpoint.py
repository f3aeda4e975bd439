"""Checkpoints: round trip, and a clear error for one of another model."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from gan import checkpoint
from gan.config import Config
from gan.training import create_train_states


def test_round_trip_restores_states_and_key(tmp_path):
    config = Config(batch_size=10)
    checkpoint.save_config(str(tmp_path), config)
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


def test_checkpoint_of_another_model_is_refused(tmp_path):
    config = Config()
    checkpoint.save_config(str(tmp_path), config)
    g, d = create_train_states(config, jax.random.key(0))
    # A generator with a wider first layer: same tree, other shapes.
    params = jax.tree.map(lambda x: x, g.params)
    params["deconv1"]["kernel"] = np.zeros((7, 7, 110, 300), np.float32)
    mngr = checkpoint.manager(str(tmp_path))
    checkpoint.save(mngr, g.replace(params=params), d, jax.random.key(0))
    mngr.close()
    with pytest.raises(checkpoint.CheckpointError, match="cannot be loaded|match"):
        checkpoint.restore(str(tmp_path))
