"""A run's folder (`--workdir`) as one object: `with Workdir(...) as workdir:`.

Entering takes the lock (one train.py per run), checks the run's record
against the one saved there (or writes it), restores the newest good
checkpoint (setting damaged ones aside), clears the temp files of a killed
run, trims the log past the restored step, and opens the Orbax manager that
saves the checkpoints. Leaving releases the manager and the lock, on every
path, a failure half-way through entering included.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
from typing import Any, Iterator, Sequence

import jax

from gan import checkpoint, classifier, files, parallel, record
from gan.errors import CheckpointError, TrainError, one_line
from gan.reporting import GRID_DIR, METRICS_FILE
from gan.training import TrainState

# Held (flock) by the train.py writing the run; holds its PID.
LOCK_FILE = ".lock"


class Workdir:
    """A run's folder, open for training (a context manager).

    Args:
      path: the folder, made when missing.
      run_record: this run's record (`gan.record.make`).
      keep: checkpoints kept.
      reads: files or folders the run reads (its data, its classifier): no
        file of the run may be one of them, nor the shipped weights, by any
        name (`gan.files.overwrite_problem`), since the run writes over its own.

    Attributes (once entered):
      restored: the newest good checkpoint, or None for a fresh run.
    """

    def __init__(self, path: str, run_record: dict[str, Any], keep: int = 3,
                 reads: Sequence[str | None] = ()):
        self.path, self.record, self.keep, self.reads = path, run_record, keep, reads
        self.restored: checkpoint.Restored | None = None
        self._mngr: Any = None
        self._resources = contextlib.ExitStack()

    def __enter__(self) -> Workdir:
        primary = parallel.is_primary()
        with contextlib.ExitStack() as opened:  # closed again if a step fails
            _make_folder(self.path, primary)
            if primary:
                _check_no_file_is_an_input(self.path, self.reads)
                opened.enter_context(locked(self.path))
            _check_and_write_record(self.path, self.record, primary)
            self.restored = restore_newest_good(self.path)
            if primary:
                remove_stale_temps(self.path)
                trim_log(os.path.join(self.path, METRICS_FILE),
                         self.restored.step if self.restored else 0)
            self._mngr = opened.enter_context(contextlib.closing(
                checkpoint.manager(self.path, self.keep)))
            self._resources = opened.pop_all()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._resources.close()

    def save(self, g_state: TrainState, d_state: TrainState, key: jax.Array) -> None:
        """Saves a checkpoint at `d_state.step` (every process takes part)."""
        checkpoint.save(self._mngr, g_state, d_state, key, self.record)


def _make_folder(path: str, primary: bool) -> None:
    if os.path.lexists(path) and not os.path.isdir(path):
        raise TrainError(f"`workdir` {path} is {_what_is(path)}, not a folder")
    if primary:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise TrainError(f"cannot write to workdir {path}: {one_line(e)}") from None


def _check_no_file_is_an_input(path: str, reads: Sequence[str | None]) -> None:
    """Raises TrainError when a file the run would write (the workdir's own
    files and its grids; a link or hard link put there, say) is the shipped
    weights or a file the run reads. Checked before anything is written."""
    for folder in (path, os.path.join(path, GRID_DIR)):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            if folder == path and name == classifier.RUN_FILE:  # written only when missing
                continue
            problem = files.overwrite_problem(os.path.join(folder, name), reads)
            if problem:
                raise TrainError(f"`workdir` {path}: {os.path.join(folder, name)} "
                                 f"{problem}; the run would write over it")


def _what_is(path: str) -> str:
    """What a path that is not a folder is: "a file", "a link to a file", "a
    dangling link", "a link loop" or "not a regular file"."""
    if not os.path.islink(path):
        return "a file" if os.path.isfile(path) else "not a regular file"
    try:
        os.stat(path)
    except OSError as e:
        return "a link loop" if e.errno == errno.ELOOP else "a dangling link"
    return "a link to a file" if os.path.isfile(path) else "a link to something else"


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Holds the workdir's lock (one train.py per run); the OS releases it when
    the process ends, however it ends."""
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            raise TrainError(f"{path} is in use by another train.py (PID {holder}); "
                             "wait for it to end or use another `workdir`") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def _check_and_write_record(path: str, run_record: dict[str, Any],
                            primary: bool) -> None:
    """Refuses a run of another recipe or other data in `path`; writes config.json."""
    saved = _saved_record(path)
    if saved is not None:
        record.check_continues(path, saved, run_record)
    if primary:
        try:
            record.save(path, run_record)
        except OSError as e:
            raise TrainError(f"cannot write to workdir {path}: {one_line(e)}") from None


def _saved_record(path: str) -> dict[str, Any] | None:
    """The run's record from config.json, or, when that is missing or damaged,
    from its newest checkpoint (saying so); None for a new run."""
    try:
        saved, problem = record.load(path), None
    except CheckpointError as e:
        saved, problem = None, e
    if saved is not None:
        return saved
    kept = checkpoint.kept_record(path)
    if kept is None:
        if problem is not None:
            raise TrainError(str(problem))
        return None
    state = "damaged" if problem else "missing"
    print(f"{record.CONFIG_FILE} in {path} is {state}; restored from "
          f"checkpoint {kept[0]}", file=sys.stderr, flush=True)
    return kept[1]


def restore_newest_good(path: str) -> checkpoint.Restored | None:
    """The newest checkpoint that loads (None when there is none). Newer ones
    that fail are set aside (renamed `damaged-<step>`), saying so in one line
    each; when none loads, the newest one's error is raised and nothing moves."""
    failed: list[tuple[int, CheckpointError]] = []
    for step in sorted(checkpoint.steps(path), reverse=True):
        try:
            restored = checkpoint.restore(path, step)
        except CheckpointError as e:
            failed.append((step, e))
            continue
        folder = os.path.join(path, checkpoint.CHECKPOINT_DIR)
        for bad, error in failed:
            if parallel.is_primary():
                os.replace(os.path.join(folder, str(bad)),
                           os.path.join(folder, f"damaged-{bad}"))
            print(f"checkpoint {bad} is damaged ({error}); set aside as damaged-{bad}, "
                  f"resuming from {step}", file=sys.stderr, flush=True)
        return restored
    if failed:
        raise failed[0][1]
    return None


def remove_stale_temps(path: str) -> None:
    """Deletes temp files a killed run left (`.<name>.<random>.tmp`, `*.tmp`)."""
    for folder in (path, os.path.join(path, GRID_DIR)):
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.endswith(".tmp") and os.path.isfile(os.path.join(folder, name)):
                    os.remove(os.path.join(folder, name))


def trim_log(path: str, step: int) -> None:
    """Drops log lines past `step` (work after the last checkpoint is redone)
    and a partial last line (a write cut short by a kill or a full disk)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    kept = []
    for i, line in enumerate(lines):
        try:
            logged = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                break  # the partial last line
            raise TrainError(f"{path} line {i + 1} is damaged; remove it to resume")
        if logged["step"] <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if kept != lines:
        try:
            files.write_bytes(path, "".join(kept).encode())
        except OSError as e:
            raise TrainError(f"cannot rewrite {path}: {one_line(e)}") from None
