"""TensorBoard event files (gan.reporting, written by the training loop), read
back with TensorBoard's own reader."""

from __future__ import annotations

import json
import shutil

import pytest
from tensorboard.backend.event_processing import event_accumulator

from gan import loop
from gan.config import Config, RunOptions
from tests.synthetic import block_digits, write_idx_arrays

# Left out of the quick loop (`pytest -m "not slow"`): training runs.
pytestmark = pytest.mark.slow

# 60 digits at batch 10: 6 steps per epoch; log every 4 steps.
CONFIG = Config(batch_size=10, epochs=2)
# metrics.jsonl field -> its TensorBoard tag (written out, not imported).
TAGS = {"d_loss": "loss/d_loss", "d_loss_real": "loss/d_loss_real",
        "d_loss_fake": "loss/d_loss_fake", "g_loss": "loss/g_loss", "lr": "train/lr"}


def _events(workdir):
    acc = event_accumulator.EventAccumulator(
        str(workdir), size_guidance={event_accumulator.SCALARS: 0,
                                     event_accumulator.IMAGES: 0})
    acc.Reload()
    return acc


def _records(workdir):
    return {r["step"]: r for r in map(json.loads, open(workdir / "metrics.jsonl"))
            if "d_loss" in r}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One 12-step run (checkpoints at 6, 8, 12) read back straight, then, as
    if it had been killed after logging steps 9-12 but before checkpoint 12
    was written, resumed from 8 to 12 and read back again."""
    data_dir = tmp_path_factory.mktemp("mnist")
    write_idx_arrays(data_dir, *block_digits(60))
    workdir = tmp_path_factory.mktemp("run")
    loop.train_and_evaluate(CONFIG, RunOptions(
        workdir=str(workdir), data_dir=str(data_dir), progress=False,
        checkpoint_every=8, keep=5, log_every=4))
    straight = _events(workdir), _records(workdir)
    shutil.rmtree(workdir / "checkpoints" / "12")
    loop.train_and_evaluate(CONFIG, RunOptions(
        workdir=str(workdir), data_dir=str(data_dir), progress=False, log_every=4))
    return straight, (_events(workdir), _records(workdir))


def test_scalars_and_grids_equal_the_run_log(run):
    """Losses and learning rate at every log point, epoch end and checkpoint,
    equal to metrics.jsonl (float32 in the events); images/s; a grid per epoch."""
    acc, records = run[0]
    for name, tag in TAGS.items():
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [4, 6, 8, 12], tag
        for e in events:
            assert e.value == pytest.approx(records[e.step][name], rel=1e-6), tag
    assert all(e.value > 0 for e in acc.Scalars("train/img_per_s"))
    grids = acc.Images("samples")
    assert [g.step for g in grids] == [6, 12]
    assert (grids[0].width, grids[0].height) == (10 * 28 + 11 * 2,) * 2


def test_a_resumed_run_continues_the_curves_without_duplicate_steps(run):
    """The resumed run repeats steps 9-12; TensorBoard shows each step once,
    with the resumed run's values, and each epoch's grid once."""
    acc, records = run[1]
    for tag in TAGS.values():
        assert [e.step for e in acc.Scalars(tag)] == [4, 6, 8, 12], tag
    for e in acc.Scalars("loss/g_loss"):
        assert e.value == pytest.approx(records[e.step]["g_loss"], rel=1e-6)
    assert [g.step for g in acc.Images("samples")] == [6, 12]
