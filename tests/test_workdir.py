"""A run's folder as one object (gan.workdir): the lock and the Orbax manager
are released on every path, and the library leaves the process as it found
it (no hooks, filters, environment or backend changes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gan import loop
from tests.test_cli import ROOT, SHARED_CACHE
from tests.test_reliability import _train

# Left out of the quick loop (`pytest -m "not slow"`): training runs.
pytestmark = pytest.mark.slow


def test_a_failure_half_way_through_set_up_releases_the_workdir(tmp_path, data_dir):
    """Once inside the workdir's set-up (a damaged log found after the lock is
    taken) and once after it (a classifier file that is not one): each time a
    second run in the same process starts, not refused as "in use by" itself."""
    workdir = tmp_path / "run"
    _train(workdir, data_dir, 2)
    log = workdir / "metrics.jsonl"
    good = log.read_text()
    log.write_text("not json\n" + good)                    # a damaged middle line
    with pytest.raises(loop.TrainError, match="line 1 is damaged"):
        _train(workdir, data_dir, 3)
    log.write_text(good)
    assert _train(workdir, data_dir, 3).step == 3           # the lock was released

    bad = tmp_path / "classifier.msgpack"
    bad.write_bytes(b"not a classifier")
    with pytest.raises(loop.TrainError, match="not a classifier file"):
        _train(workdir, data_dir, 6, eval_every=1, classifier=str(bad))
    assert _train(workdir, data_dir, 4).step == 4
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [
        1, 2, 3, 4]


# Runs in a fresh process: pytest itself swaps hooks around each test. The
# libraries gan uses are imported first, so what they do on import is not
# counted; then gan is imported, trains, samples and writes, and every piece of
# process-wide state is compared with before.
STATE_SCRIPT = r"""
import json, logging, os, signal, sys, threading, warnings
import absl.logging, flax, jax, matplotlib, numpy, optax, orbax.checkpoint, PIL
import tensorboardX, tqdm

def state():
    loggers = [logging.getLogger(n) for n in ("", "absl", "asyncio", "jax", "orbax")]
    return {
        "unraisablehook": repr(sys.unraisablehook),
        "excepthook": repr(sys.excepthook),
        "threading.excepthook": repr(threading.excepthook),
        "environ": dict(os.environ),
        "filters": [repr(l.filters) for l in loggers],
        "levels": [l.level for l in loggers],
        "handlers": [repr(l.handlers) for l in loggers],
        "warnings": repr(warnings.filters),
        "signals": [repr(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)],
        "matplotlib backend": repr(matplotlib.rcParams._get("backend")),
        "pyplot imported": "matplotlib.pyplot" in sys.modules,
    }

before = state()
import gan
from gan import DigitWriter, loop, weights
from gan.config import Config, RunOptions
result = loop.train_and_evaluate(Config(batch_size=10, epochs=1), RunOptions(
    workdir=sys.argv[1], data_dir=sys.argv[2], progress=False))
writer = DigitWriter.load(os.path.join(sys.argv[1], weights.GENERATOR_FILE))
writer.number("2026", styles=2)
after = state()
print(json.dumps({k: [before[k], after[k]] for k in before if before[k] != after[k]}))
"""


def test_the_library_changes_no_process_wide_state(tmp_path, data_dir):
    workdir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", STATE_SCRIPT, str(workdir), data_dir], cwd=ROOT,
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, GAN_COMPILE_CACHE=SHARED_CACHE, JAX_PLATFORMS="cpu"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {}
    assert (workdir / "grids" / "epoch_001.png").exists()  # it did train an epoch
