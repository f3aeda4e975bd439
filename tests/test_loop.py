"""The training loop's safety: divergence stops it, checkpoints stay intact."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
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
                                         ("learning_rate", -1e-3),
                                         ("steps_per_call", 0)])
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


def test_many_steps_per_call_log_and_save_as_single_steps(tmp_path, monkeypatch):
    """`steps_per_call` changes only how steps are dispatched: a call never runs
    past a log point, epoch end, checkpoint or the end, and the log, checkpoints
    and losses are those of single steps (rtol 1e-4 at a tiny learning rate, see
    test_training.test_steps_in_one_call_equal_single_steps)."""
    data_dir = tmp_path / "mnist"
    data_dir.mkdir()
    write_idx_arrays(data_dir, *block_digits(60))           # 6 steps per epoch
    counts = []
    real_steps = loop.train_steps_on_data

    def counting_steps(*args, **kwargs):
        counts.append(int(args[5]))
        return real_steps(*args, **kwargs)

    monkeypatch.setattr(loop, "train_steps_on_data", counting_steps)
    logs = {}
    for k in (1, 3):
        workdir = tmp_path / f"run{k}"
        config = Config(batch_size=10, log_every=3, learning_rate=1e-7,
                        steps_per_call=k)
        result = loop.fit(config, str(workdir), str(data_dir), max_steps=7,
                          checkpoint_every=4, progress=False)
        assert result.step == 7
        assert sorted(os.listdir(workdir / "checkpoints"), key=int) == ["4", "6", "7"]
        logs[k] = [json.loads(line) for line in
                   (workdir / "metrics.jsonl").read_text().splitlines()]
    # Calls end at log point 3, checkpoint 4, epoch end (and log point) 6, stop 7.
    assert counts == [3, 1, 2, 1]
    assert [r["step"] for r in logs[3]] == list(range(1, 8))
    for a, b in zip(logs[1], logs[3]):
        assert (a["step"], a["epoch"], a["lr"]) == (b["step"], b["epoch"], b["lr"])
        np.testing.assert_allclose([b[k] for k in ("d_loss", "g_loss")],
                                   [a[k] for k in ("d_loss", "g_loss")], rtol=1e-4)
