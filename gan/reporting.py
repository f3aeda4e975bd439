"""What a training run reports, as one context manager: `metrics.jsonl`,
TensorBoard scalars and grids, the progress bar, and the epoch-end pictures
(grid.png, grids/epoch_NNN.png, progress.gif, losses.png).

TensorBoard events are written with tensorboardX's protobufs and its
`EventsWriter`, on the calling thread: its `SummaryWriter` writes on a thread
of its own, whose errors (a full disk) end that thread with a traceback and
leave training blocked on a full queue; a few hundred bytes per log point do
not need a thread. clu's metric writers were the alternative: they write
TensorBoard through TensorFlow, which the training process does not import.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import struct
import sys
import time
from typing import Any, Iterator

import jax
import numpy as np
from tensorboardX import summary as tb_summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tqdm import tqdm

from gan import images, parallel, run_log, sampling
from gan.config import Config
from gan.datasets import DIGITS, describe
from gan.errors import TrainError, one_line

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "losses.png"
GRID_FILE = "grid.png"
GRID_DIR = "grids"
GIF_FILE = "progress.gif"
GRID_SCALE = 2
# grids/epoch_NNN.png (three digits or more).
FRAME_NAME = re.compile(r"epoch_(\d{3,})\.png")
# TensorBoard tag of the epoch-end sample grid (a row per class).
GRID_TAG = "samples"
# TensorBoard tag of the class names, written once at a run's start.
CLASSES_TAG = "classes"


def tag(name: str) -> str:
    """The TensorBoard tag of a metrics.jsonl field, grouped so the scalars
    page shows one section each: `loss/g_loss`, `quality/fd_ratio_ema`,
    `train/lr`, `train/img_per_s`."""
    if "loss" in name:
        return f"loss/{name}"
    if name.startswith(("cond_acc", "fd_ratio")):
        return f"quality/{name}"
    return f"train/{name}"


def grid_frames(workdir: str) -> list[str]:
    """The epoch grids of a run (`grids/epoch_NNN.png`), in epoch order; other
    files there (temp files, .DS_Store) are not frames."""
    folder = os.path.join(workdir, GRID_DIR)
    epochs = sorted(int(m[1]) for name in os.listdir(folder)
                    if (m := FRAME_NAME.fullmatch(name)))
    return [os.path.join(folder, f"epoch_{e:03d}.png") for e in epochs]


class PendingMetrics:
    """Metrics of dispatched steps, still on the devices: pulled to the host
    only at log points, the loop's one sync."""

    def __init__(self):
        # (first step, steps, their metrics) of each dispatch.
        self.calls: list[tuple[int, int, dict[str, jax.Array]]] = []

    def add(self, first_step: int, count: int, metrics: dict[str, jax.Array]) -> None:
        self.calls.append((first_step, count, metrics))

    def pull(self) -> list[tuple[int, dict[str, float]]]:
        """(step, metrics) of every pending step; waits for the steps."""
        host = parallel.to_host([m for _, _, m in self.calls])
        return [(first + i, {k: float(np.reshape(v, -1)[i]) for k, v in m.items()})
                for (first, count, _), m in zip(self.calls, host) for i in range(count)]


class Reporting:
    """A run's reports, from `start_step` on (a context manager). On process 0
    it writes; the other processes only check that the losses are finite.

    Every method raises TrainError, one line, when a file cannot be written.
    """

    def __init__(self, workdir: str, config: Config, start_step: int, stop: int,
                 steps_per_epoch: int, schedule: Any, progress: bool,
                 classes: tuple[str, ...] = DIGITS):
        self.workdir, self.config, self.schedule = workdir, config, schedule
        self.classes = classes
        self.steps_per_epoch = steps_per_epoch
        self.primary = parallel.is_primary()
        self.start_step, self.stop, self.progress = start_step, stop, progress
        self.t0, self.started = time.perf_counter(), round(time.time())
        self.t_log, self.step_log, self.last = self.t0, start_step, {}
        self._log = self._events = self._bar = None

    def __enter__(self) -> Reporting:
        if self.primary:
            self._log = self._writing(METRICS_FILE, open, self._path(METRICS_FILE), "a")
            try:
                self._events = self._writing("TensorBoard events", _EventFile,
                                             self.workdir, self.start_step)
                if not self.start_step:  # what the grid's rows are
                    self._writing("TensorBoard events", self._events.text, 0,
                                  CLASSES_TAG, describe(self.classes, most=100))
            except BaseException:
                self._log.close()
                raise
        self._bar = tqdm(total=self.stop, initial=self.start_step, unit="step",
                         disable=not (self.progress and self.primary), dynamic_ncols=True)
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        """Closes the log and the event file; a failure to write their last
        bytes is raised only when nothing else is on its way."""
        self._bar.close()
        errors = []
        for closable in (self._log, self._events):
            try:
                if closable is not None:
                    closable.close()
            except OSError as e:
                errors.append(e)
        if errors and kind is None:
            raise TrainError(f"cannot finish writing {self._path(METRICS_FILE)} or "
                             f"the TensorBoard events: {one_line(errors[0])}")

    def _path(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def frame_path(self, epoch: int) -> str:
        """`grids/epoch_NNN.png`: the grid of an epoch's end."""
        return os.path.join(self.workdir, GRID_DIR, f"epoch_{epoch:03d}.png")

    def _writing(self, what: str, write: Any, *args: Any) -> Any:
        """`write(*args)`, an OSError (a full disk) turned into one line."""
        try:
            return write(*args)
        except OSError as e:
            raise TrainError(f"cannot write {what} in `workdir` {self.workdir}: "
                             f"{one_line(e)}") from None

    def log_steps(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        """One line per step; one TensorBoard point (the last step's) per call."""
        now, spe = time.perf_counter(), self.steps_per_epoch
        lines = []
        for step, values in rows:
            if not all(math.isfinite(v) for v in values.values()):
                raise TrainError(f"non-finite loss at step {step}; training "
                                 "stopped, the last checkpoint is kept")
            # t: seconds since this process started training (compile
            # included, data loading not); started: when (Unix time).
            logged = {"step": step, "epoch": (step - 1) // spe + 1, **values,
                      "lr": float(self.schedule(step - 1)),
                      "t": round(now - self.t0, 3), "started": self.started}
            lines.append(json.dumps(logged) + "\n")
        rate = ((step - self.step_log) * self.config.batch_size
                / max(now - self.t_log, 1e-9))
        self._write(lines, step, {**values, "lr": logged["lr"], "img_per_s": rate})
        self.t_log, self.step_log, self.last = now, step, values
        self._bar.update(step - self._bar.n)
        self._bar.set_postfix(epoch=f"{(step - 1) // spe + 1}/{self.config.epochs}",
                              d_loss=f"{values['d_loss']:.3f}",
                              g_loss=f"{values['g_loss']:.3f}", img_s=f"{rate:.0f}")

    def log_quality(self, step: int, epoch: int, scores: dict[str, float],
                    seconds: float) -> None:
        """An `eval_every` record: scores of G and its averages at an epoch end."""
        logged = {"step": step, "epoch": epoch, **scores, "eval_s": round(seconds, 3)}
        self._write([json.dumps(logged) + "\n"], step, scores)
        self._bar.write(_quality_line(epoch, logged), file=sys.stderr)

    def _write(self, lines: list[str], step: int, scalars: dict[str, float]) -> None:
        if not self.primary:
            return
        self._writing(METRICS_FILE, _append, self._log, lines)
        self._writing("TensorBoard events", self._events.scalars, step, scalars)

    def write_outputs(self, step: int, epoch: int | None, variables: Any,
                      grid_inputs: tuple[np.ndarray, np.ndarray]) -> None:
        """grid.png (and at an epoch end its frame in grids/, progress.gif and
        the TensorBoard image) from G's `variables`; losses.png from the log.
        The TensorBoard image comes last: its presence says an epoch end's
        outputs are complete (`has_grid_image`)."""
        if not self.primary:
            return
        grid = sampling.generate_uint8(variables, *grid_inputs)
        picture = images.class_grid(grid, self.classes, GRID_SCALE)
        self._writing(GRID_FILE, images.save_png, self._path(GRID_FILE), picture)
        if epoch is not None:
            frame = self.frame_path(epoch)
            self._writing(GRID_DIR, os.makedirs, os.path.dirname(frame), 0o777, True)
            self._writing(frame, images.save_png, frame, picture)
            self._writing(GIF_FILE, images.save_gif, grid_frames(self.workdir),
                          self._path(GIF_FILE))
        self._writing(CURVE_FILE, run_log.plot_losses, self._path(METRICS_FILE),
                      self._path(CURVE_FILE))
        if epoch is not None:
            self._writing("TensorBoard events", self._events.image, step,
                          np.asarray(images.class_grid(grid, self.classes)))

    def has_grid_image(self, step: int) -> bool:
        """Whether an earlier process of the run wrote the TensorBoard grid of
        `step`, the last of an epoch end's outputs (the files hold a few KB per
        log point)."""
        return any(event.step == step and any(v.tag == GRID_TAG for v in event.summary.value)
                   for path in glob.glob(os.path.join(self.workdir, "events.out.tfevents.*"))
                   for event in _read_events(path))


def _append(log: Any, lines: list[str]) -> None:
    log.write("".join(lines))
    log.flush()


def _quality_line(epoch: int, logged: dict[str, float]) -> str:
    """`epoch 3: conditional accuracy 97.1%, Frechet ratio 3.20 (EMA: ...)`."""
    line = (f"epoch {epoch}: conditional accuracy {100 * logged['cond_acc']:.1f}%, "
            f"Frechet ratio {logged['fd_ratio']:.2f}")
    if "cond_acc_ema" in logged:
        line += (f" (EMA: {100 * logged['cond_acc_ema']:.1f}%, "
                 f"{logged['fd_ratio_ema']:.2f})")
    return line


def _read_events(path: str) -> Iterator[Event]:
    """The events of a file `EventsWriter` wrote: TFRecords of [length: u64,
    its CRC: u32, the Event, its CRC: u32] (CRCs not checked). TensorBoard's
    own reader would import TensorFlow into the training process; a record
    cut short by a kill ends the reading."""
    with open(path, "rb") as f:
        data = f.read()
    at = 0
    while at + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, at)
        if at + 16 + length > len(data):
            return
        yield Event.FromString(data[at + 12:at + 12 + length])
        at += 16 + length


class _EventFile:
    """A TensorBoard event file, written on the calling thread."""

    def __init__(self, workdir: str, start_step: int):
        self._writer = EventsWriter(os.path.join(workdir, "events"))
        if start_step:
            # A run stopped hard may have logged past its last checkpoint; the
            # resumed run repeats those steps. These two events tell TensorBoard
            # to drop the old events from the next step on (tensorboardX's
            # `purge_step`), so curves go on without duplicates.
            self._writer.write_event(Event(step=start_step + 1,
                                           file_version="brain.Event:2"))
            self._writer.write_event(Event(step=start_step + 1, session_log=SessionLog(
                status=SessionLog.START)))

    def _add(self, step: int, summary: Any) -> None:
        self._writer.write_event(Event(wall_time=time.time(), step=step, summary=summary))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self._add(step, tb_summary.scalar(tag(name), value))
        self._writer.flush()

    def text(self, step: int, name: str, text: str) -> None:
        self._add(step, tb_summary.text(name, text))
        self._writer.flush()

    def image(self, step: int, image: np.ndarray) -> None:
        """A grid picture, uint8 `[H, W]`."""
        self._add(step, tb_summary.image(GRID_TAG, image, dataformats="HW"))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
