"""The training loop's safety: divergence stops it, checkpoints stay intact."""

from __future__ import annotations

import os

import jax.numpy as jnp
import pytest

from gan import loop
from gan.config import Config
from tests.synthetic import block_digits, write_idx_arrays


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                    monkeypatch):
    data_dir = tmp_path / "mnist"
    data_dir.mkdir()
    write_idx_arrays(data_dir, *block_digits(60))
    real_step = loop.train_step_on_data

    def diverging_step(g, d, *args, **kwargs):
        g, d, metrics = real_step(g, d, *args, **kwargs)
        # From step 4 on the loss is NaN, as after a blow-up.
        bad = jnp.where(d.step >= 4, jnp.nan, 0.0)
        return g, d, dict(metrics, g_loss=metrics["g_loss"] + bad)

    monkeypatch.setattr(loop, "train_step_on_data", diverging_step)
    workdir = tmp_path / "run"
    config = Config(batch_size=10, log_every=1)
    with pytest.raises(loop.TrainError, match="non-finite loss at step 4"):
        loop.fit(config, str(workdir), str(data_dir), max_steps=5,
                 checkpoint_every=2, progress=False)
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3                      # steps 1-3 logged, NaN step not


@pytest.mark.parametrize("field,value", [("epochs", 0), ("batch_size", 0),
                                         ("batch_size", -5), ("learning_rate", 0.0),
                                         ("learning_rate", -1e-3)])
def test_bad_config_is_refused_before_anything_is_written(tmp_path, field, value):
    config = Config(**{field: value})
    with pytest.raises(loop.TrainError, match=field.replace("_", "-")):
        loop.fit(config, str(tmp_path / "run"), str(tmp_path), progress=False)
    assert not (tmp_path / "run").exists()


def test_batch_larger_than_the_data_is_refused(tmp_path):
    write_idx_arrays(tmp_path, *block_digits(20))
    with pytest.raises(loop.TrainError, match="larger than the 20 training images"):
        loop.fit(Config(batch_size=21), str(tmp_path / "run"), str(tmp_path),
                 progress=False)
