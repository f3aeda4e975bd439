"""The training loop, `train_and_evaluate(config, options)`, read top to
bottom: open the workdir (`gan.workdir`) and the reports (`gan.reporting`),
then for each dispatch of steps: log, score, checkpoint and draw at the points
where the host acts."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import signal
import sys
import threading
import time
from typing import Any, Iterator

import jax
import numpy as np

from gan import datasets, ema, parallel, weights
from gan.config import Config, RunOptions
from gan.errors import TrainError, one_line
from gan.reporting import PendingMetrics, Reporting
from gan.run_setup import Run, classifier_path, load, make_scorer, run_line, set_up
from gan.training import (TrainState, learning_rate_schedule, train_step_on_data,
                          train_steps_on_data)
from gan.workdir import Workdir

class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training; `saved_step` is the step of the
    checkpoint saved on the way out, or None when none was."""

    def __init__(self, saved_step: int | None):
        super().__init__(saved_step)
        self.saved_step = saved_step


@dataclasses.dataclass
class FitResult:
    """What a call of `train_and_evaluate` did."""
    step: int            # global step reached
    steps_run: int       # steps this call ran
    train_seconds: float  # wall time of those steps, compile included
    first_step_s: float   # from the call to the end of its first step
    peak_rss_mb: float
    last_metrics: dict[str, float]


def train_and_evaluate(config: Config, options: RunOptions,
                       stop: threading.Event | None = None) -> FitResult:
    """Trains (or resumes) the run in `options.workdir` up to `config.epochs`:
    losses in `metrics.jsonl` and TensorBoard, pictures at epoch ends
    (`gan.reporting`), checkpoints and `generator.msgpack` at epoch ends,
    every `checkpoint_every` steps and when stopping (`gan.workdir`).

    Args:
      stop: set it (from a signal handler, another thread) to stop at the next
        step boundary after saving; train.py's SIGINT and SIGTERM handlers do
        only this. A KeyboardInterrupt (Ctrl-C with Python's own handler) stops
        the run the same way, unless it strikes inside a callback that swallows
        it (a garbage-collector hook, say): the event is the sure way.

    Raises:
      TrainError, gan.data.DataError, CheckpointError: one-line problems.
      Interrupted: `stop` was set or Ctrl-C pressed; what ran is saved.
    """
    stop = stop or threading.Event()
    t_start, first_step_s = time.perf_counter(), float("nan")
    config, mesh, train_data, run_record = load(config, options)
    reads = [*datasets.source_files(options.dataset, options.data_dir),
             classifier_path(options) if options.eval_every else None]
    with Workdir(options.workdir, run_record, options.keep, reads) as workdir:
        run, g_state, d_state = set_up(config, options, mesh, train_data, workdir.restored)
        scorer = make_scorer(options, train_data)
        say(run_line(run))
        if run.dataset != datasets.MNIST:
            say(datasets.data_line(train_data))
        pending, step = PendingMetrics(), run.start_step
        with Reporting(options.workdir, config, run.start_step, run.stop,
                       run.steps_per_epoch, learning_rate_schedule(config),
                       options.progress, run.classes) as reporting:
            redo_interrupted_outputs(workdir, reporting, g_state, run)
            interrupted = False
            try:
                while step < run.stop and not stop.is_set():
                    count = steps_in_next_call(step, run)
                    with signals_held():  # the call donates the states it is given
                        g_state, d_state, metrics = dispatch(g_state, d_state, run, count)
                        pending.add(step + 1, count, metrics)
                        step += count
                    if step == run.start_step + 1:  # start-up cost: one extra sync
                        jax.block_until_ready(metrics)
                        first_step_s = time.perf_counter() - t_start
                    epoch, into_epoch = divmod(step, run.steps_per_epoch)
                    at_checkpoint = bool(options.checkpoint_every) and (
                        step % options.checkpoint_every == 0)
                    if (step % options.log_every == 0 or not into_epoch or at_checkpoint
                            or step == run.stop):  # the log never runs ahead of a save
                        log_pending(pending, reporting)
                    if not into_epoch and scorer and epoch % options.eval_every == 0:
                        reporting.log_quality(step, epoch, *scored(scorer, g_state, config))
                    if not into_epoch or step == run.stop:
                        variables = save_checkpoint(workdir, g_state, d_state, run)
                        reporting.write_outputs(step, None if into_epoch else epoch,
                                                variables, run.grid_inputs)
                    elif at_checkpoint:
                        save_checkpoint(workdir, g_state, d_state, run)
            except KeyboardInterrupt:
                interrupted = True
            if interrupted or step < run.stop:  # a stop request, acted on here
                stop_on_interrupt(pending, reporting, workdir, g_state, d_state, run)
    return FitResult(step, step - run.start_step, time.perf_counter() - reporting.t0,
                     first_step_s, peak_rss_mb(), reporting.last)


def say(line: str) -> None:
    """One line on stderr, from process 0 only."""
    if parallel.is_primary():
        print(line, file=sys.stderr, flush=True)


def steps_in_next_call(step: int, run: Run) -> int:
    """Steps the next dispatch runs: up to `steps_per_call`, never past a log
    point, an epoch end, a checkpoint or the end, where the host acts."""
    options = run.options
    periods = (options.log_every, run.steps_per_epoch, options.checkpoint_every)
    nexts = [(step // every + 1) * every for every in periods if every]
    # The first call runs one step, so FitResult.first_step_s times one step.
    k = 1 if step == run.start_step else options.steps_per_call
    return min([step + k, run.stop, *nexts]) - step


def dispatch(g_state: TrainState, d_state: TrainState, run: Run, count: int
             ) -> tuple[TrainState, TrainState, dict[str, jax.Array]]:
    """Runs `count` train steps on the devices, without waiting for them."""
    batch_size, most = run.config.batch_size, run.options.steps_per_call
    if most == 1:
        return train_step_on_data(g_state, d_state, run.images, run.labels, run.key,
                                  batch_size=batch_size, mesh=run.mesh)
    # Metrics [steps_per_call], the first `count` rows filled.
    return train_steps_on_data(g_state, d_state, run.images, run.labels, run.key,
                               np.int32(count), batch_size=batch_size,
                               max_steps=most, mesh=run.mesh)


def scored(scorer: Any, g_state: TrainState, config: Config) -> tuple[dict, float]:
    """The `eval_every` scores of G and its averages, and the seconds taken."""
    t_eval = time.perf_counter()
    return scorer(_on_host(g_state), config), time.perf_counter() - t_eval


def log_pending(pending: PendingMetrics, reporting: Reporting) -> None:
    """Pulls the pending metrics to the host and reports them."""
    if not pending.calls:
        return
    rows = pending.pull()
    # Reported and cleared together or not at all: the interrupt handler logs
    # again, and must not write the lines twice.
    with signals_held():
        reporting.log_steps(rows)
        pending.calls.clear()


def _on_host(g_state: TrainState, averages: int | None = None) -> TrainState:
    """G's state without its optimizer state (and with only its first
    `averages` weight averages), on this process's host: no other process
    takes part."""
    return parallel.to_host(g_state.replace(opt_state=None, ema=g_state.ema[:averages]))


def sampling_variables(g_state: TrainState, run: Run) -> dict[str, Any]:
    """What grids and generator.msgpack sample with (`gan.ema`), on this host."""
    return ema.sampling_variables(_on_host(g_state, averages=1),
                                  run.config.ema_batch_stats)


def save_checkpoint(workdir: Workdir, g_state: TrainState, d_state: TrainState,
                    run: Run) -> dict[str, Any] | None:
    """Saves a checkpoint (every process takes part) and, on process 0,
    generator.msgpack; returns the variables the latter holds (None elsewhere)."""
    workdir.save(g_state, d_state, run.key)
    if not parallel.is_primary():
        return None
    return save_generator(workdir, g_state, int(d_state.step), run)


def save_generator(workdir: Workdir, g_state: TrainState, step: int, run: Run
                   ) -> dict[str, Any]:
    """Writes generator.msgpack (`sampling_variables`) and returns what it holds."""
    variables = sampling_variables(g_state, run)
    path = os.path.join(workdir.path, weights.GENERATOR_FILE)
    try:
        weights.save(path, variables, step, run.config, averaged=bool(g_state.ema),
                     classes=run.classes, dataset=run.dataset)
    except OSError as e:
        raise TrainError(f"cannot write {path}: {one_line(e)}") from None
    return variables


def redo_interrupted_outputs(workdir: Workdir, reporting: Reporting,
                             g_state: TrainState, run: Run) -> None:
    """Writes what a stop during the restored step's outputs left unwritten.

    A checkpoint is saved before generator.msgpack and the epoch pictures; a
    run stopped between the two resumes after that step, so without this its
    generator.msgpack would stay one checkpoint behind, and an epoch end would
    lose its grid, its GIF frame and its TensorBoard image for good.
    """
    step = run.start_step
    if not step or not parallel.is_primary():
        return
    epoch, into_epoch = divmod(step, run.steps_per_epoch)
    if weights.saved_step(os.path.join(workdir.path, weights.GENERATOR_FILE)) != step:
        variables = save_generator(workdir, g_state, step, run)
    elif not into_epoch and not reporting.has_grid_image(step):
        variables = sampling_variables(g_state, run)
    else:
        return
    if not into_epoch:
        reporting.write_outputs(step, epoch, variables, run.grid_inputs)


def stop_on_interrupt(pending: PendingMetrics, reporting: Reporting,
                      workdir: Workdir, g_state: TrainState, d_state: TrainState,
                      run: Run) -> None:
    """On a stop request: logs and saves every dispatched step (they all
    complete), then raises Interrupted. Nothing is saved when no step ran, nor
    in a multi-process run: a save needs every process at the same step, and a
    signal reaches them at different steps (or only one); the last periodic
    checkpoint is kept."""
    log_pending(pending, reporting)
    if jax.process_count() > 1 or int(d_state.step) == run.start_step:
        raise Interrupted(None) from None
    workdir.save(g_state, d_state, run.key)
    raise Interrupted(int(d_state.step)) from None


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Holds SIGINT and SIGTERM until the block ends, then delivers them.

    A train step donates the states it is given: a KeyboardInterrupt raised
    after the dispatch but before its results are stored would leave only
    deleted arrays to save. Only from the main thread, where handlers run.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    previous = {s: h for s, h in previous.items() if h is not None}  # not ours to set
    for s in previous:
        signal.signal(s, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in held:
            signal.raise_signal(s)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)
