"""Crash safety, round 2 (issue 17): one writer per run, logs and grids that
survive a kill, damaged checkpoints set aside, and one-line refusals."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from gan import checkpoint, checksum, loop, parallel, record, reporting, weights
from gan.config import Config, RunOptions
from gan.workdir import locked as workdir_lock
from tests.synthetic import block_digits, write_idx_arrays
from tests.test_cli import ROOT, SHARED_CACHE, one_line_error, run

# Left out of the quick loop (`pytest -m "not slow"`): training runs and subprocesses.
pytestmark = pytest.mark.slow

CONFIG = Config(batch_size=10)


def _train(workdir, data_dir, max_steps, **kwargs):
    return loop.train_and_evaluate(CONFIG, RunOptions(
        workdir=str(workdir), data_dir=data_dir, max_steps=max_steps, progress=False,
        **{"log_every": 1, **kwargs}))


def _steps(workdir):
    return [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")
            if "d_loss" in line]


def test_a_second_train_py_on_a_locked_workdir_is_refused(tmp_path, data_dir):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with workdir_lock(str(workdir)):                      # this process holds it
        result = run("train.py", "--workdir", workdir, "--data-dir", data_dir,
                     "--batch-size", 10, "--max-steps", 1)
        line = one_line_error(result)
        assert "in use by another train.py" in line and f"PID {os.getpid()}" in line
        assert not (workdir / "checkpoints").exists()
        assert not (workdir / "config.json").exists()      # the lock comes first


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from gan.workdir import locked; "
         "held = locked(sys.argv[1]); held.__enter__(); print('locked', flush=True); "
         "time.sleep(120)",
         str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(loop.TrainError, match=f"PID {holder.pid}"):
        with workdir_lock(str(tmp_path)):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with workdir_lock(str(tmp_path)):                     # free again
        pass


def test_a_partial_last_log_line_is_dropped_on_resume(tmp_path, data_dir):
    """A write cut short (kill, full disk) leaves half a line; the resumed run
    drops it and logs every step once."""
    workdir = tmp_path / "run"
    _train(workdir, data_dir, 3)
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "d_lo')
    _train(workdir, data_dir, 5)
    assert _steps(workdir) == [1, 2, 3, 4, 5]


def test_a_damaged_middle_log_line_is_one_line(tmp_path, data_dir):
    workdir = tmp_path / "run"
    _train(workdir, data_dir, 3)
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:10]
    (workdir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(loop.TrainError, match="metrics.jsonl line 2 is damaged"):
        _train(workdir, data_dir, 4)


def test_grid_frames_are_found_by_name_in_epoch_order(tmp_path, data_dir):
    """Stray files in grids/ (a .DS_Store, a temp file from a kill) are not GIF
    frames, and temp files go at start; frames past epoch 999 sort by number."""
    workdir = tmp_path / "run"
    grids = workdir / "grids"
    grids.mkdir(parents=True)
    (grids / ".DS_Store").write_bytes(b"\0junk")
    (grids / ".epoch_002.png.x1y2.tmp").write_bytes(b"half a png")
    _train(workdir, data_dir, 6)                          # one epoch end
    assert sorted(os.listdir(grids)) == [".DS_Store", "epoch_001.png"]
    for epoch in (1000, 2, 999):
        (grids / f"epoch_{epoch:03d}.png").write_bytes(b"")
    assert [os.path.basename(p) for p in reporting.grid_frames(str(workdir))] == [
        "epoch_001.png", "epoch_002.png", "epoch_999.png", "epoch_1000.png"]


def test_a_damaged_newest_checkpoint_is_set_aside(tmp_path, data_dir, capsys):
    workdir = tmp_path / "run"
    _train(workdir, data_dir, 4, checkpoint_every=2)      # checkpoints 2 and 4
    (workdir / "checkpoints" / "99").mkdir()               # a stray, empty step
    result = _train(workdir, data_dir, 5)
    assert result.step == 5 and result.steps_run == 1      # resumed from 4
    err = capsys.readouterr().err
    assert "checkpoint 99 is damaged" in err and "resuming from 4" in err
    assert (workdir / "checkpoints" / "damaged-99").is_dir()
    assert _steps(workdir) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("content", ["[]", "null", "3"])
def test_a_config_json_that_is_not_a_config_is_one_line(tmp_path, content):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(checkpoint.CheckpointError, match="not a config"):
        record.load_config(str(tmp_path))


@pytest.mark.parametrize("address", ["garbage", "127.0.0.1", ":80", "host:99999"])
def test_a_malformed_coordinator_is_refused_before_any_wait(address):
    with pytest.raises(parallel.ParallelError, match="must be host:port"):
        parallel.initialize(address, 2, 1)


def _closed_port() -> int:
    with socket.socket() as s:       # bound, never listening: connections refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_absent_coordinator_ends_the_wait_in_one_line(tmp_path, data_dir):
    port = _closed_port()
    result = run("train.py", "--workdir", tmp_path / "run", "--data-dir", data_dir,
                 "--coordinator", f"127.0.0.1:{port}", "--num-processes", 2,
                 "--process-id", 1, "--coordinator-timeout", 3)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    waiting, line = result.stderr.strip().splitlines()     # the wait is announced
    assert waiting == f"waiting up to 3 s for the coordinator at 127.0.0.1:{port}"
    assert line.startswith("train.py: error: waited 3 s for the coordinator at "
                           f"127.0.0.1:{port} (--coordinator-timeout)")


def test_sigterm_while_waiting_for_the_coordinator_ends_the_run(tmp_path, data_dir):
    proc = subprocess.Popen(
        [sys.executable, "train.py", "--workdir", str(tmp_path / "run"), "--data-dir",
         data_dir, "--coordinator", f"127.0.0.1:{_closed_port()}", "--num-processes",
         "2", "--process-id", "1"], cwd=ROOT, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"})
    try:
        # (A process that dies first ends the line: readline cannot hang.)
        assert proc.stderr.readline().startswith("waiting up to 120 s")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 130
        assert "interrupted while waiting for the coordinator" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_paths_with_a_tilde_are_expanded():
    options = RunOptions(workdir="~/w", data_dir="~/d", classifier="~/c.msgpack")
    home = os.path.expanduser("~")
    assert (options.workdir, options.data_dir, options.classifier) == (
        f"{home}/w", f"{home}/d", f"{home}/c.msgpack")


@pytest.mark.parametrize("kind", ["file", "dangling link", "link to a file",
                                  "link loop"])
def test_a_workdir_that_is_not_a_folder_is_named(tmp_path, data_dir, kind):
    workdir = tmp_path / "run"
    if kind == "file":
        workdir.write_text("x")
    elif kind == "dangling link":
        workdir.symlink_to(tmp_path / "nowhere")
    elif kind == "link to a file":
        (tmp_path / "file").write_text("x")
        workdir.symlink_to(tmp_path / "file")
    else:
        workdir.symlink_to(workdir)
    with pytest.raises(loop.TrainError, match=f"is a {kind}, not a folder"):
        _train(workdir, data_dir, 1)


def test_evaluate_json_must_be_a_json_name(tmp_path):
    result = run("evaluate.py", "--json", tmp_path / "g.msgpack", "--num-samples", 100)
    assert "must end in .json" in one_line_error(result)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("target", ["/dev/null", "/dev/full", "/proc/version", "fifo"])
def test_outputs_never_replace_devices_pipes_or_kernel_files(tmp_path, target):
    if target == "fifo":
        target = str(tmp_path / "q.json")
        os.mkfifo(target)
    before = os.stat(target)
    result = run("evaluate.py", "--json", target, "--num-samples", 100)
    assert target in one_line_error(result)
    after = os.stat(target)
    assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(before.st_mode)
    assert after.st_ino == before.st_ino


def test_a_finished_run_started_again_says_so(tmp_path, data_dir):
    workdir = tmp_path / "run"
    _train(workdir, data_dir, 2)
    result = run("train.py", "--workdir", workdir, "--data-dir", data_dir,
                 "--batch-size", 10, "--log-every", 1, "--max-steps", 2)
    assert result.returncode == 0, result.stderr
    assert "nothing to train" in result.stdout and "nan" not in result.stdout
    # The start line does not count backwards ("steps 3-2").
    assert "no steps left (at step 2) of 180" in result.stderr, result.stderr


# ---------------------------------------------------------------------------
# Integrity: checksums in checkpoints and generator files
# ---------------------------------------------------------------------------


def test_a_checkpoint_whose_arrays_fail_their_checksum_is_damaged(tmp_path, data_dir,
                                                                 monkeypatch):
    """Saved with a wrong checksum (as if its arrays changed on disk after the
    save): refused as damaged, never trained on; an older good one is used."""
    workdir = tmp_path / "run"
    _train(workdir, data_dir, 2, checkpoint_every=2)
    real_save, real_digest = checkpoint.save, checksum.digest

    def save_with_a_wrong_sum(*args, **kwargs):
        checksum.digest = lambda tree: "00" * 32
        try:
            return real_save(*args, **kwargs)
        finally:
            checksum.digest = real_digest

    monkeypatch.setattr(checkpoint, "save", save_with_a_wrong_sum)
    _train(workdir, data_dir, 4, checkpoint_every=2)           # checkpoint 4: bad sum
    monkeypatch.undo()
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint 4 .* is damaged"):
        checkpoint.restore(str(workdir), step=4)
    result = _train(workdir, data_dir, 4)
    assert result.steps_run == 2                                 # from 2, not from 4


def test_flipped_bytes_in_a_checkpoint_are_a_damaged_checkpoint(tmp_path, data_dir):
    workdir = tmp_path / "run"
    _train(workdir, data_dir, 2)
    chunks = [p for p in (workdir / "checkpoints" / "2").rglob("*")
              if p.is_file() and p.stat().st_size > 4096]
    biggest = max(chunks, key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    for i in range(64):
        data[len(data) // 2 + i] ^= 0xFF
    biggest.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint 2"):
        checkpoint.restore(str(workdir))


def test_a_generator_file_that_fails_its_checksum_is_damaged(tmp_path, capsys):
    import numpy as np
    from flax import serialization
    raw = serialization.msgpack_restore(open(weights.SHIPPED, "rb").read())
    kernel = np.array(raw["variables"]["params"]["deconv3"]["kernel"])
    kernel.flat[7] += 1.0                                        # one weight changed
    raw["variables"]["params"]["deconv3"]["kernel"] = kernel
    path = tmp_path / "g.msgpack"
    path.write_bytes(serialization.msgpack_serialize(raw))
    with pytest.raises(checkpoint.CheckpointError, match="is damaged"):
        weights.load(str(path))
    del raw[checkpoint.DIGEST]                                   # as before checksums
    path.write_bytes(serialization.msgpack_serialize(raw))
    for _ in range(2):
        assert np.asarray(weights.load(str(path)).variables["params"][
            "deconv3"]["kernel"]).flat[7] == kernel.flat[7]
    assert capsys.readouterr().err.count("no checksum to verify") == 1


def test_a_failed_orbax_save_is_one_line(tmp_path, data_dir, monkeypatch):
    """Orbax reports a full disk as ValueError(RESOURCE_EXHAUSTED), not OSError
    (injected here): one CheckpointError line, the previous checkpoint kept."""
    workdir = tmp_path / "run"
    _train(workdir, data_dir, 2)

    def full_disk(self, *args, **kwargs):
        raise ValueError("RESOURCE_EXHAUSTED: No space left on device\n  (details)")

    monkeypatch.setattr(checkpoint.ocp.CheckpointManager, "save", full_disk)
    with pytest.raises(checkpoint.CheckpointError,
                       match="cannot save checkpoint 3 .*RESOURCE_EXHAUSTED") as info:
        _train(workdir, data_dir, 3)
    assert "\n" not in str(info.value)
    monkeypatch.undo()
    assert checkpoint.restore(str(workdir)).step == 2


def test_a_lost_config_json_is_restored_from_the_newest_checkpoint(
        tmp_path, data_dir, capsys):
    workdir = tmp_path / "run"
    _train(workdir, data_dir, 4, checkpoint_every=2)
    original = json.loads((workdir / "config.json").read_text())
    assert original["training_data"]["examples"] == 60
    (workdir / "config.json").unlink()
    # sample.py and evaluate.py read the checkpoint's copy as well.
    assert checkpoint.restore(str(workdir)).config == CONFIG.with_shards(1)
    assert _train(workdir, data_dir, 5).step == 5
    assert "config.json in" in capsys.readouterr().err
    assert json.loads((workdir / "config.json").read_text()) == original


@pytest.mark.parametrize("damage", ["missing", "damaged"])
def test_a_lost_config_json_still_refuses_another_recipe(tmp_path, data_dir, damage):
    workdir = tmp_path / "run"
    _train(workdir, data_dir, 2, checkpoint_every=2)
    if damage == "missing":
        (workdir / "config.json").unlink()
    else:
        (workdir / "config.json").write_text('{"batch_size": 10, "ep')
    with pytest.raises(loop.TrainError, match="holds a run with `seed` 0"):
        loop.train_and_evaluate(dataclasses.replace(CONFIG, seed=7), RunOptions(
            workdir=str(workdir), data_dir=data_dir, max_steps=3, progress=False))
    assert not (workdir / "config.json").exists() or damage == "damaged"


@pytest.mark.parametrize("other", ["more images", "same count, other labels"])
def test_resuming_on_other_training_data_is_refused(tmp_path, data_dir, other):
    workdir = tmp_path / "run"
    _train(workdir, data_dir, 2)
    folder = tmp_path / "other"
    folder.mkdir()
    write_idx_arrays(folder, *block_digits(80 if other == "more images" else 60, seed=3))
    with pytest.raises(loop.TrainError, match="trained on other data .60 images, "
                       "labels sha256 [0-9a-f]{16}; `data_dir` gives"):
        _train(workdir, str(folder), 3)
    assert _steps(workdir) == [1, 2]
    _train(workdir, data_dir, 3)                         # its own data resumes
    assert _steps(workdir) == [1, 2, 3]


@pytest.mark.parametrize("flags,says", [
    ("garbage", "XLA_FLAGS holds 'garbage', not a flag"),
    ("--xla_no_such_flag=1", "XLA refuses XLA_FLAGS='--xla_no_such_flag=1': "),
])
def test_xla_flags_that_xla_refuses_are_one_line(tmp_path, data_dir, flags, says):
    result = subprocess.run(
        [sys.executable, "train.py", "--workdir", str(tmp_path / "run"), "--data-dir",
         data_dir, "--max-steps", "1"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"})
    assert says in one_line_error(result)
    assert not (tmp_path / "run").exists()


def test_sampling_a_live_run_that_deletes_its_checkpoints(tmp_path, data_dir):
    """`--keep 1 --checkpoint-every 1`: every step replaces the last checkpoint,
    yet each read of the workdir gets a whole one."""
    workdir = tmp_path / "run"
    trainer = subprocess.Popen(
        [sys.executable, "train.py", "--workdir", str(workdir), "--data-dir", data_dir,
         "--batch-size", "10", "--max-steps", "400", "--keep", "1",
         "--checkpoint-every", "1", "--no-progress"], cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "GAN_COMPILE_CACHE": str(SHARED_CACHE)},
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "stderr.txt", "w"))
    try:
        steps = []
        while len(steps) < 6 and trainer.poll() is None:
            folder = workdir / "checkpoints"
            if not folder.is_dir() or not any(n.isdigit() for n in os.listdir(folder)):
                time.sleep(0.2)                      # no checkpoint yet
                continue
            steps.append(weights.load(str(workdir)).step)
        assert len(steps) == 6, (tmp_path / "stderr.txt").read_text()
        assert steps == sorted(steps) and steps[-1] > steps[0]   # it was moving
    finally:
        trainer.kill()
        trainer.wait()


def test_a_missing_data_chunk_is_one_line_without_stray_tracebacks(tmp_path, data_dir):
    """Orbax's abandoned reads used to print hundreds of traceback lines from
    other threads (in most runs), around the one line."""
    workdir = tmp_path / "run"
    _train(workdir, data_dir, 2)
    chunks = workdir / "checkpoints" / "2" / "default" / "ocdbt.process_0" / "d"
    for chunk in chunks.iterdir():                          # the arrays' data
        chunk.unlink()
    for _ in range(3):
        line = one_line_error(run("sample.py", "--checkpoint", workdir, "--out",
                                  tmp_path / "s.png"))
        assert "checkpoint 2 in" in line and "cannot be loaded" in line


class _FullDisk:
    """A file whose writes fail with ENOSPC after `ok` of them."""

    def __init__(self, f, ok: int):
        self._f, self._ok = f, ok

    def write(self, text):
        if self._ok <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._ok -= 1
        return self._f.write(text)

    def __getattr__(self, name):
        return getattr(self._f, name)


def test_a_full_disk_while_logging_is_one_line_and_resumes(tmp_path, data_dir,
                                                           monkeypatch):
    workdir = tmp_path / "run"
    real_open = open

    def log_fills_the_disk(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return _FullDisk(f, ok=3) if mode == "a" else f

    monkeypatch.setattr(reporting, "open", log_fills_the_disk, raising=False)
    with pytest.raises(loop.TrainError,
                       match="cannot write metrics.jsonl in `workdir`.*No space left"):
        _train(workdir, data_dir, 6)
    monkeypatch.undo()
    assert _train(workdir, data_dir, 6).step == 6          # the space is back
    assert _steps(workdir) == [1, 2, 3, 4, 5, 6]


def test_a_full_disk_while_writing_events_is_one_line(tmp_path, data_dir,
                                                      monkeypatch):
    """The TensorBoard events are written on the training thread, so a failure
    is one line where it happens (tensorboardX's own writer thread used to
    print a traceback and leave its queue to block training once full)."""
    from tensorboardX import record_writer
    real_write, calls = record_writer.RecordWriter.write, []

    def write(self, data):
        calls.append(1)
        if len(calls) > 2:                    # the file's header goes through
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", write)
    with pytest.raises(loop.TrainError, match="cannot write TensorBoard events in "
                       ".*No space left"):
        _train(tmp_path / "run", data_dir, 40)


def _mount_tmpfs(folder, size: str) -> None:
    folder.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                             str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"a real full disk needs a tmpfs mount (root): {result.stderr}")


def test_a_real_full_disk_keeps_the_last_checkpoint_and_resumes(tmp_path, data_dir):
    """On a 2 MB tmpfs the first checkpoint (about 20 MB) cannot be written."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "2m")
    try:
        args = ["--workdir", disk / "run", "--data-dir", data_dir, "--batch-size", 10,
                "--max-steps", 4, "--checkpoint-every", 2, "--log-every", 1]
        result = run("train.py", *args, "--no-progress")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        start, line = result.stderr.strip().splitlines()   # nothing from Orbax
        assert start.startswith("training on") and line.startswith(
            "train.py: error: cannot save checkpoint 2 (ValueError: RESOURCE_EXHAUSTED")
        assert os.listdir(disk / "run" / "checkpoints") == []   # no temp folder left
        subprocess.run(["mount", "-o", "remount,size=200m", str(disk)], check=True)
        result = run("train.py", *args, "--no-progress")
        assert result.returncode == 0, result.stderr
        assert _steps(disk / "run") == [1, 2, 3, 4]
    finally:
        subprocess.run(["umount", "-l", str(disk)])


@pytest.mark.parametrize("stopped_in", ["generator.msgpack", "epoch_001.png",
                                        "progress.gif"])
def test_a_stop_during_epoch_end_outputs_loses_nothing(tmp_path, data_dir,
                                                       monkeypatch, stopped_in):
    """Ctrl-C while writing the epoch-end outputs of step 6: the checkpoint of
    step 6 is saved first, so the run resumes after it; the outputs it missed
    are written on resume, and the finished run's files equal a straight run's."""
    from tensorboard.backend.event_processing import event_accumulator

    from gan import files
    real_write = files.write_atomically

    def interrupted(path, write):
        if os.path.basename(path) == stopped_in:
            raise KeyboardInterrupt
        return real_write(path, write)

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    _train(straight, data_dir, 12)
    monkeypatch.setattr(files, "write_atomically", interrupted)
    with pytest.raises(loop.Interrupted):
        _train(stopped, data_dir, 12)
    monkeypatch.undo()
    assert _train(stopped, data_dir, 12).steps_run == 6     # resumed after step 6

    def listing(root):
        return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                      if "checkpoints" not in p.parts and "events" not in p.name)
    assert listing(stopped) == listing(straight)
    for name in ("grids/epoch_001.png", "grids/epoch_002.png", "grid.png",
                 "progress.gif"):
        assert (stopped / name).read_bytes() == (straight / name).read_bytes(), name
    assert (weights.read_file(str(stopped / "generator.msgpack")).step == 12)
    for root in (straight, stopped):
        events = event_accumulator.EventAccumulator(
            str(root), size_guidance={event_accumulator.IMAGES: 0})
        events.Reload()
        assert [e.step for e in events.Images(reporting.GRID_TAG)] == [6, 12], root


def test_sigterm_at_any_moment_of_train_py_stops_it_resumably(tmp_path, data_dir):
    """SIGTERM while train.py sets up and compiles, and while it trains (two
    runs at once): each stops within a bounded time with exit 130 and its
    one-line message, and resumes. The moments are measured, not guessed: by
    the lines the run has written so far. (While it imports: its handlers are
    set first thing, and the loop's own test raises SIGTERM while loading.)"""
    args = ["--data-dir", str(data_dir), "--batch-size", "10", "--max-steps", "1000",
            "--log-every", "1", "--checkpoint-every", "2", "--no-progress"]
    env = dict(os.environ, GAN_COMPILE_CACHE=SHARED_CACHE, JAX_PLATFORMS="cpu")
    moments = {  # name -> has the run reached it (its stderr, its log)?
        "setting up": lambda err, log: "training on" in err,
        "training": lambda err, log: len(log) >= 3,
    }
    procs = {}
    for name in moments:
        err = open(tmp_path / f"{name}.err", "w")
        procs[name] = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "train.py"), "--workdir",
             str(tmp_path / name), *args], env=env, stdout=subprocess.DEVNULL,
            stderr=err)
        err.close()
    signalled = {}
    deadline = time.time() + 300
    try:
        while len(signalled) < len(procs) and time.time() < deadline:
            for name, proc in procs.items():
                log = tmp_path / name / "metrics.jsonl"
                if name not in signalled and moments[name](
                        (tmp_path / f"{name}.err").read_text(),
                        log.read_text().splitlines() if log.exists() else []):
                    proc.send_signal(signal.SIGTERM)
                    signalled[name] = time.time()
            time.sleep(0.02)
        for name, proc in procs.items():
            assert proc.wait(timeout=60) == 130, name
            took = time.time() - signalled[name]
            assert took < 60, (name, took)            # bounded (about 1-5 s seen)
            err = (tmp_path / f"{name}.err").read_text()
            assert "Traceback" not in err and "Exception ignored" not in err, err
            assert err.strip().splitlines()[-1].startswith("train.py: interrupted"), err
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    saved = checkpoint.newest_step(str(tmp_path / "training"))
    assert saved is not None and saved >= 3
    assert f"checkpoint saved at step {saved}" in (tmp_path / "training.err").read_text()
    # Stopped in set-up (record and lock written, no checkpoint) and in training,
    # each resumes and finishes.
    resumed = {name: subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train.py"), "--workdir",
         str(tmp_path / name), *args[:-5], "--max-steps", str(saved + 2),
         "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True) for name in ("setting up", "training")}
    for name, proc in resumed.items():
        assert proc.wait(timeout=300) == 0, (name, proc.stderr.read())
