"""The training loop's safety: divergence stops it, checkpoints stay intact."""

from __future__ import annotations

import gc
import json
import os
import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan import loop, weights
from gan.config import Config, RunOptions
from tests.synthetic import block_digits, write_idx_arrays

# Left out of the quick loop (`pytest -m "not slow"`): training runs.
pytestmark = pytest.mark.slow


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
    config = Config(batch_size=10)
    with pytest.raises(loop.TrainError, match="non-finite loss at step 4"):
        loop.train_and_evaluate(config, RunOptions(
            workdir=str(workdir), data_dir=str(data_dir), max_steps=5,
            checkpoint_every=2, log_every=1, progress=False))
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3                      # steps 1-3 logged, NaN step not


def test_batch_larger_than_the_data_is_refused(tmp_path):
    write_idx_arrays(tmp_path, *block_digits(20))
    with pytest.raises(loop.TrainError, match="larger than the 20 training images"):
        loop.train_and_evaluate(Config(batch_size=21), RunOptions(
            workdir=str(tmp_path / "run"), data_dir=str(tmp_path), progress=False))


def test_many_steps_per_call_log_and_save_as_single_steps(tmp_path, monkeypatch):
    """`steps_per_call` changes only how steps are dispatched: a call never runs
    past a log point, epoch end, checkpoint or the end, and the log and the
    checkpoints are those of single steps.

    The many-step call is replaced by single steps stacked into its `[K]` metric
    rows, so this checks the loop's bookkeeping exactly (the compiled loop itself
    is checked against single steps in tests/test_training.py).
    """
    data_dir = tmp_path / "mnist"
    data_dir.mkdir()
    write_idx_arrays(data_dir, *block_digits(60))           # 6 steps per epoch
    counts = []

    def stacked_single_steps(g, d, images, labels, key, num_steps, *, batch_size,
                             max_steps, mesh=None):
        counts.append(int(num_steps))
        rows = []
        for _ in range(int(num_steps)):
            g, d, m = loop.train_step_on_data(g, d, images, labels, key,
                                              batch_size=batch_size, mesh=mesh)
            rows.append(m)
        rows += [jax.tree.map(jnp.zeros_like, rows[0])] * (max_steps - len(rows))
        return g, d, jax.tree.map(lambda *r: jnp.stack(r), *rows)

    monkeypatch.setattr(loop, "train_steps_on_data", stacked_single_steps)
    logs, generators = {}, {}
    for k in (1, 3):
        workdir = tmp_path / f"run{k}"
        config = Config(batch_size=10, learning_rate=1e-3, decay_steps=3)
        result = loop.train_and_evaluate(config, RunOptions(
            workdir=str(workdir), data_dir=str(data_dir), max_steps=8,
            checkpoint_every=5, log_every=4, steps_per_call=k, progress=False))
        assert result.step == 8
        assert sorted(os.listdir(workdir / "checkpoints"), key=int) == ["5", "6", "8"]
        # Every field but the wall clock ("t", "started").
        logs[k] = [{f: v for f, v in json.loads(line).items()
                    if f not in ("t", "started")}
                   for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        generators[k] = weights.load(str(workdir)).variables
    # The first call runs one step (its time is the start-up figure); then calls
    # end at log point 4, checkpoint 5, epoch end 6, and the stop (and log point) 8.
    assert counts == [1, 3, 1, 1, 2]
    assert [record["step"] for record in logs[3]] == list(range(1, 9))
    # Step s uses the step size of optax's count s - 1: 1e-3 * 0.95^((s-1) // 3).
    np.testing.assert_allclose([record["lr"] for record in logs[1]],
                               [1e-3] * 3 + [9.5e-4] * 3 + [9.025e-4] * 2, rtol=1e-6)
    assert logs[3] == logs[1]
    for a, b in zip(jax.tree.leaves(generators[1]), jax.tree.leaves(generators[3])):
        np.testing.assert_array_equal(a, b)


def test_interrupt_during_a_step_saves_that_step(tmp_path, monkeypatch):
    """A KeyboardInterrupt (Ctrl-C with Python's own handler, as when the loop
    is called from Python) arriving inside a step's dispatch, after its states
    were donated, is held until the results are stored: training stops with a
    checkpoint of that step and its log line. (Unheld, the interrupt left only
    deleted arrays to save: a traceback.)"""
    data_dir = tmp_path / "mnist"
    data_dir.mkdir()
    write_idx_arrays(data_dir, *block_digits(60))
    real_step = loop.train_step_on_data

    def interrupted_step(g, d, *args, **kwargs):
        out = real_step(g, d, *args, **kwargs)     # g and d are donated now
        if int(out[1].step) == 3:
            signal.raise_signal(signal.SIGTERM)
        return out

    def stop(signum, frame):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train_step_on_data", interrupted_step)
    previous = signal.signal(signal.SIGTERM, stop)
    workdir = tmp_path / "run"
    try:
        with pytest.raises(loop.Interrupted) as stopped:
            loop.train_and_evaluate(Config(batch_size=10), RunOptions(
                workdir=str(workdir), data_dir=str(data_dir), max_steps=5,
                log_every=1, progress=False))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped.value.saved_step == 3
    assert os.listdir(workdir / "checkpoints") == ["3"]
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]


# Where a stop request (train.py's SIGTERM handler, really raised) arrives, and
# the checkpoint the stopped run must have saved: 60 digits in batches of 10 are
# 6 steps per epoch; the runs go to step 8.
STOP_MOMENTS = {
    "loading the data": None,        # before any step: nothing new to save
    "the first step's compile": 1,
    "a step": 4,
    "a garbage-collector callback": 4,
    "the epoch-end checkpoint": 6,
    "the epoch-end pictures": 6,
}


@pytest.fixture(scope="module")
def stop_data(tmp_path_factory):
    """The data, and generator.msgpack of a run straight to step 8."""
    tmp = tmp_path_factory.mktemp("stops")
    data_dir = tmp / "mnist"
    data_dir.mkdir()
    write_idx_arrays(data_dir, *block_digits(60))
    _train_to_8(tmp / "straight", data_dir)
    return data_dir, (tmp / "straight" / weights.GENERATOR_FILE).read_bytes()


def _train_to_8(workdir, data_dir, stop=None):
    return loop.train_and_evaluate(Config(batch_size=10), RunOptions(
        workdir=str(workdir), data_dir=str(data_dir), max_steps=8, log_every=1,
        progress=False), stop)


@pytest.mark.parametrize("moment", list(STOP_MOMENTS))
def test_a_stop_request_at_any_moment_stops_the_run_resumably(
        tmp_path, monkeypatch, stop_data, moment):
    """train.py's handlers only record the request; the loop stops at the next
    step boundary, saves, and the resumed run ends as a straight one. (A handler
    raising KeyboardInterrupt lost the request inside a garbage-collector
    callback, which swallows exceptions, and the run trained to the end.)"""
    import train
    data_dir, straight_generator = stop_data
    stop = threading.Event()
    monkeypatch.setattr(train, "STOP", stop)
    request = lambda: signal.raise_signal(signal.SIGTERM)  # noqa: E731
    steps_dispatched = []

    def patch(owner, name, at):
        real = getattr(owner, name)

        def patched(*args, **kwargs):
            if at(args):
                request()
            return real(*args, **kwargs)
        monkeypatch.setattr(owner, name, patched)

    def from_gc_callback():
        def callback(phase, info):
            gc.callbacks.remove(callback)
            request()                # the handler runs inside the callback
        gc.callbacks.append(callback)
        gc.collect()

    # Counts dispatches after the moment's patch below has looked.
    patch(loop, "dispatch", lambda args: steps_dispatched.append(1) and False)
    first_dispatch = lambda args: not steps_dispatched  # noqa: E731
    if moment == "loading the data":
        patch(loop, "load", lambda args: True)
    elif moment == "the first step's compile":
        patch(loop, "dispatch", first_dispatch)
    elif moment == "a step":
        patch(loop, "dispatch", lambda args: int(args[1].step) == 3)
    elif moment == "a garbage-collector callback":
        # (Not inside a dispatch, where the loop holds signals itself.)
        patch(loop, "steps_in_next_call", lambda args: args[0] == 3
              and from_gc_callback() is None and False)
    elif moment == "the epoch-end checkpoint":
        patch(loop.Workdir, "save", lambda args: int(args[2].step) == 6)
    else:
        patch(loop.Reporting, "write_outputs", lambda args: args[1] == 6)
    previous = signal.signal(signal.SIGTERM, train._request_stop)
    try:
        with pytest.raises(loop.Interrupted) as stopped:
            _train_to_8(tmp_path / "run", data_dir, stop)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped.value.saved_step == STOP_MOMENTS[moment]
    monkeypatch.undo()
    result = _train_to_8(tmp_path / "run", data_dir)
    assert result.step == 8
    steps = [json.loads(line)["step"]
             for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))              # each step logged once
    assert (tmp_path / "run" / weights.GENERATOR_FILE).read_bytes() == straight_generator
