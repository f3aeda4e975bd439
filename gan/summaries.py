"""TensorBoard event files in a run's workdir (`tensorboard --logdir runs/`),
written with tensorboardX: no TensorFlow in the training process."""

from __future__ import annotations

import threading
from typing import Any, Mapping

import numpy as np
from tensorboardX import SummaryWriter

# Tag of the epoch-end 10x10 sample grid.
GRID_TAG = "samples"


class SummaryError(Exception):
    """Events that could not be written (a full disk); the message is one line."""


# Events a writer's queue holds before `add_*` blocks (tensorboardX's default
# is 10); a call adds at most a few dozen, so a dead writer thread is found at
# the next call before its queue is full.
MAX_QUEUE = 1000

# The error that ended each tensorboardX writer thread, by thread.
_thread_errors: dict[threading.Thread, BaseException] = {}


def _keep_writer_thread_errors() -> None:
    """tensorboardX writes events on a thread of its own. An error there (a
    full disk) would print a traceback and end the thread, leaving the
    writer's queue to fill and block training for good; this keeps the error
    for the `Summaries` that owns the thread to raise instead."""
    if getattr(threading.excepthook, "keeps_event_writer_errors", False):
        return
    previous = threading.excepthook

    def hook(args: Any) -> None:
        if type(args.thread).__module__.startswith("tensorboardX"):
            _thread_errors[args.thread] = args.exc_value
        else:
            previous(args)

    hook.keeps_event_writer_errors = True
    threading.excepthook = hook


def tag(name: str) -> str:
    """The TensorBoard tag of a metrics.jsonl field, grouped so the scalars
    page shows one section each: `loss/g_loss`, `quality/fd_ratio_ema`,
    `train/lr`, `train/img_per_s`."""
    if "loss" in name:
        return f"loss/{name}"
    if name.startswith(("cond_acc", "fd_ratio")):
        return f"quality/{name}"
    return f"train/{name}"


class Summaries:
    """Scalars (tagged by `tag`) and sample grids of one training process.

    Every method raises SummaryError when events cannot be written, here or
    (found at the next call) on the writer's thread.
    """

    def __init__(self, workdir: str, start_step: int):
        _keep_writer_thread_errors()
        self._workdir, self._thread = workdir, None
        before = set(threading.enumerate())
        # A run stopped hard may have logged past its last checkpoint. The
        # resumed run repeats those steps; purge_step tells TensorBoard to drop
        # the old events from that step on, so curves go on without duplicates.
        self._writer = self._call(SummaryWriter, workdir, max_queue=MAX_QUEUE,
                                  purge_step=start_step + 1 if start_step else None)
        # The writer's thread: the one that was not there before.
        self._thread = next((t for t in set(threading.enumerate()) - before
                             if type(t).__module__.startswith("tensorboardX")), None)

    def _failed(self, error: BaseException) -> SummaryError:
        reason = getattr(error, "strerror", None) or error
        return SummaryError(f"cannot write TensorBoard events in {self._workdir}: "
                            f"{reason}")

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        if self._thread is not None and not self._thread.is_alive():
            raise self._failed(_thread_errors.pop(self._thread, "writer stopped"))
        try:
            return method(*args, **kwargs)
        except OSError as e:
            raise self._failed(e) from None

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self._call(self._writer.add_scalar, tag(name), value, step)

    def grid(self, step: int, image: np.ndarray) -> None:
        """A grid picture, uint8 `[H, W]`."""
        self._call(self._writer.add_image, GRID_TAG, image, step, dataformats="HW")

    def flush(self) -> None:
        self._call(self._writer.flush)

    def close(self) -> None:
        """Closes the event file; raises SummaryError if events were lost. (A
        dead writer is not closed, `_call` raises first: it would block.)"""
        self._call(self._writer.close)
        if self._thread in _thread_errors:  # it failed while writing the rest
            raise self._failed(_thread_errors.pop(self._thread))
