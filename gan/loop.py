"""The training loop, `train_and_evaluate(config, options)`, and the steps it
takes: set-up (mesh, data, states, start step), dispatch, logging, checkpoints,
epoch outputs."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import re
import resource
import signal
import sys
import threading
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm import tqdm

from gan import checkpoint, data, ema, images, parallel, report, sampling, summaries
from gan.config import EMA_BATCH_STATS, Config, RunOptions, recipe_fields
from gan.training import (TrainState, create_train_states, learning_rate_schedule,
                          train_step_on_data, train_steps_on_data)

METRICS_FILE = "metrics.jsonl"
# Held (flock) by the train.py writing the run; holds its PID.
LOCK_FILE = ".lock"
CURVE_FILE = "losses.png"
GRID_DIR = "grids"
GRID_FILE = "grid.png"
GIF_FILE = "progress.gif"
GRID_SCALE = 2
# grids/epoch_NNN.png (three digits or more).
FRAME_NAME = re.compile(r"epoch_(\d{3,})\.png")


class TrainError(Exception):
    """A run that cannot start or go on; the message is one line."""


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


def run_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(init, train, grid) keys of a run: everything random follows from the seed."""
    init_key, train_key, grid_key = jax.random.split(jax.random.key(seed), 3)
    return init_key, train_key, grid_key


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def lock_workdir(workdir: str) -> int:
    """Takes the workdir's lock (one train.py per run) and returns its file
    descriptor; the OS releases it when the process ends, however it ends."""
    fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise TrainError(f"{workdir} is in use by another train.py (PID {holder}); "
                         "wait for it to end or use another `workdir`") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _prepare_workdir(workdir: str, record: dict[str, Any]) -> None:
    """Makes the workdir, refuses a run there of another recipe or other data,
    and writes config.json (`record`, see `checkpoint.run_record`)."""
    if os.path.lexists(workdir) and not os.path.isdir(workdir):
        what = "a dangling link" if os.path.islink(workdir) else "a file"
        raise TrainError(f"`workdir` {workdir} is {what}, not a folder")
    try:
        if parallel.is_primary():
            os.makedirs(workdir, exist_ok=True)
        saved = _saved_record(workdir)
        if saved is not None:
            _check_same_run(workdir, saved, record)
        if parallel.is_primary():
            checkpoint.save_config(workdir, record)
    except OSError as e:
        raise TrainError(f"cannot write to workdir {workdir}: {e.strerror}") from None


def _saved_record(workdir: str) -> dict[str, Any] | None:
    """The run's record from config.json, or, when that is missing or damaged,
    from its newest checkpoint (saying so); None for a new run."""
    try:
        record, problem = checkpoint.load_record(workdir), None
    except checkpoint.CheckpointError as e:
        record, problem = None, e
    if record is not None:
        return record
    kept = checkpoint.checkpoint_record(workdir)
    if kept is None:
        if problem is not None:
            raise TrainError(str(problem))
        return None
    state = "damaged" if problem else "missing"
    print(f"{checkpoint.CONFIG_FILE} in {workdir} is {state}; restored from "
          f"checkpoint {kept[0]}", file=sys.stderr, flush=True)
    return kept[1]


def _check_same_run(workdir: str, saved: dict[str, Any], record: dict[str, Any]
                    ) -> None:
    """Raises TrainError unless `record` continues the run `saved` describes."""
    old, new = checkpoint.config_from_record(saved), checkpoint.config_from_record(record)
    changed = [f for f in recipe_fields() if getattr(old, f) != getattr(new, f)]
    if changed:
        names = ", ".join(f"{f}={getattr(old, f)}" for f in changed)
        hint = (" (no weight average: set `ema_decay` 0)"
                if "ema_decay" in changed and not old.ema_decay else "")
        raise TrainError(f"{workdir} holds a run with {names}{hint}; resume it "
                         "with those values or use a new `workdir`")
    was, now = saved.get(checkpoint.DATA_KEY), record.get(checkpoint.DATA_KEY)
    if was and now and any(was[k] != now[k] for k in was.keys() & now.keys()):
        order = (" (the same digits in another order count as other data: the TFDS "
                 "copy and the IDX files order them differently)"
                 if was["examples"] == now["examples"] else "")
        raise TrainError(f"{workdir} holds a run trained on other data "
                         f"({_data_text(was)}; `data_dir` gives {_data_text(now)}){order}; "
                         "resume it on its own data or use a new `workdir`")


def _data_text(fingerprint: dict[str, Any]) -> str:
    text = f"{fingerprint['examples']:,} images"
    if "labels_sha256" in fingerprint:
        text += f", labels sha256 {fingerprint['labels_sha256']}"
    return text


@contextlib.contextmanager
def _signals_held():
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


def _trim_metrics(path: str, step: int) -> None:
    """Drops log lines past `step` (work after the last checkpoint is redone)
    and a partial last line (a write cut short by a kill or a full disk)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    kept = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                break  # the partial last line
            raise TrainError(f"{path} line {i + 1} is damaged; remove it to resume")
        if record["step"] <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if kept == lines:
        return
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise TrainError(f"cannot rewrite {path}: {e.strerror or e}") from None


class QuickEval:
    """`train.py --eval-every`: 1,000 samples scored against real digits."""

    def __init__(self, classifier_path: str | None, data_dir: str | None,
                 train_images: np.ndarray, train_labels: np.ndarray, progress: bool):
        from gan import classifier, evaluate  # noqa: PLC0415 - only when asked.
        self._evaluate = evaluate
        say = (lambda m: tqdm.write(m, file=sys.stderr)) if progress else None
        try:
            clf = classifier.load_or_train(classifier_path or classifier.PRETRAINED,
                                           data_dir, progress=say)
        except classifier.ClassifierError as e:
            raise TrainError(str(e)) from None
        self._params = clf.params
        test = data.load_mnist(data_dir, "test")
        self._reference = evaluate.make_reference(
            clf.params, (train_images, train_labels), test, evaluate.QUICK_SAMPLES,
            with_precision_recall=False)

    def score(self, g_variables: dict[str, Any], suffix: str = "") -> dict[str, float]:
        """`cond_acc<suffix>` and `fd_ratio<suffix>` of one generator."""
        result = self._evaluate.evaluate_generator(
            g_variables, self._params, self._reference, self._evaluate.QUICK_SAMPLES,
            with_precision_recall=False)
        return {"cond_acc" + suffix: result["conditional_accuracy"],
                "fd_ratio" + suffix: result["frechet_ratio"]}

    def __call__(self, g_state: Any, config: Config) -> dict[str, float]:
        """Scores G's own weights (`cond_acc`, `fd_ratio`) and its average as
        the run samples it (`..._ema`); with `ema_compare`, every average with
        either BatchNorm mode too (`..._ema<decay>_<mode>`)."""
        scores = self.score(sampling.g_variables(g_state))
        if config.ema_compare:
            for decay, average in zip(g_state.ema_decays, g_state.ema):
                for mode in EMA_BATCH_STATS:
                    scores.update(self.score(ema.for_sampling(average, mode),
                                             "_" + ema.label(decay, mode)))
            product = "_" + ema.label(config.ema_decay, config.ema_batch_stats)
            scores["cond_acc_ema"] = scores["cond_acc" + product]
            scores["fd_ratio_ema"] = scores["fd_ratio" + product]
        elif g_state.ema:
            scores.update(self.score(
                ema.sampling_variables(g_state, config.ema_batch_stats), "_ema"))
        return scores


def _host_generator(g_state: Any, averages: int | None = None) -> Any:
    """G's state without its optimizer state (and with only its first
    `averages` weight averages), on this process's host: no other process
    takes part."""
    return parallel.to_host(g_state.replace(opt_state=None, ema=g_state.ema[:averages]))


def _sampling_variables(g_state: Any, mode: str) -> dict[str, Any]:
    """What grids and generator.msgpack sample with (`gan.ema.sampling_variables`),
    computed on this process's host."""
    return ema.sampling_variables(_host_generator(g_state, averages=1), mode)


def run_line(mesh: Any, batch_size: int, start_step: int, stop: int, total: int,
             steps_per_epoch: int) -> str:
    """What a run is, said once at its start: `training on 2 cpu devices, 1
    process: batch 100 (50 per device), steps 1-18000 of 18000 (600 per epoch),
    fresh start` (or `resuming from step N`)."""
    kind = mesh.devices.flat[0].platform
    processes = jax.process_count()
    start = (f"resuming from step {start_step}" if start_step else "fresh start")
    return (f"training on {mesh.size} {kind} device{'s' * (mesh.size > 1)}, "
            f"{processes} process{'es' * (processes > 1)}: batch {batch_size} "
            f"({batch_size // mesh.size} per device), steps {start_step + 1}-{stop} "
            f"of {total} ({steps_per_epoch} per epoch), {start}")


def _quality_line(epoch: int, record: dict[str, float]) -> str:
    """`epoch 3: conditional accuracy 97.1%, Frechet ratio 3.20 (EMA: ...)`."""
    line = (f"epoch {epoch}: conditional accuracy {100 * record['cond_acc']:.1f}%, "
            f"Frechet ratio {record['fd_ratio']:.2f}")
    if "cond_acc_ema" in record:
        line += (f" (EMA: {100 * record['cond_acc_ema']:.1f}%, "
                 f"{record['fd_ratio_ema']:.2f})")
    return line


@dataclasses.dataclass
class Setup:
    """What a run starts from (`set_up`)."""
    config: Config                  # with `data_shards` set
    mesh: Mesh
    g_state: TrainState             # replicated on every device of the mesh
    d_state: TrainState
    key: jax.Array                  # the run's train key (split per step)
    images: jax.Array               # [S, N/S, 28, 28] uint8, S data shards
    labels: jax.Array               # [S, N/S] int32
    train_data: tuple[np.ndarray, np.ndarray]  # on the host, for scoring
    start_step: int
    stop: int                       # the step this call ends at
    total: int                      # steps of all `epochs`
    steps_per_epoch: int
    grid_inputs: tuple[np.ndarray, np.ndarray]  # noise and labels of the grids
    mngr: Any                       # the workdir's Orbax CheckpointManager
    lock: int | None                # the workdir lock's descriptor (process 0)
    record: dict[str, Any]          # config.json: recipe and data fingerprint


def set_up(config: Config, options: RunOptions) -> Setup:
    """Mesh, data, workdir, and the states to start from (restored when the
    workdir holds a checkpoint of the same recipe)."""
    config = config.with_shards(jax.process_count())
    try:
        mesh = parallel.make_mesh(options.devices)
        parallel.check_batch(mesh, config.batch_size, config.data_shards)
    except parallel.ParallelError as e:
        raise TrainError(str(e)) from None
    if jax.process_count() > 1 and config.data_shards != jax.process_count():
        raise TrainError(f"`data_shards` must equal the {jax.process_count()} "
                         f"processes, got {config.data_shards}")
    # A process of many reads only its data shard; one process reads all.
    shard = ((jax.process_index(), config.data_shards) if jax.process_count() > 1
             else None)
    train_images, train_labels = data.load_mnist(options.data_dir, "train", shard=shard)
    n = len(train_labels) * (1 if shard is None else config.data_shards)
    if config.batch_size > n:
        raise TrainError(f"`batch_size` {config.batch_size} is larger than the "
                         f"{n} training images")
    record = checkpoint.run_record(config, data.fingerprint(train_labels, n))
    _prepare_workdir(options.workdir, record)
    lock = lock_workdir(options.workdir) if parallel.is_primary() else None
    try:
        restored = _restore_newest_good(options.workdir)
        if parallel.is_primary():
            _remove_stale_temps(options.workdir)
    except BaseException:
        if lock is not None:
            os.close(lock)
        raise
    steps_per_epoch = (n // config.data_shards) // (config.batch_size // config.data_shards)
    total = config.epochs * steps_per_epoch
    init_key, train_key, grid_key = run_keys(config.seed)
    mngr = checkpoint.manager(options.workdir, options.keep)
    if restored is not None:
        g_state, d_state, train_key = restored.g_state, restored.d_state, restored.key
    else:
        g_state, d_state = create_train_states(config, init_key)
    # Replicated on every device; the step splits the batch (gan.parallel).
    g_state, d_state, train_key = parallel.replicate((g_state, d_state, train_key), mesh)
    images_dev, labels_dev = parallel.shard_dataset(
        train_images, train_labels.astype(np.int32), config.data_shards, mesh)
    start = int(d_state.step)
    return Setup(config, mesh, g_state, d_state, train_key, images_dev, labels_dev,
                 (train_images, train_labels), start,
                 min(total, options.max_steps or total), total, steps_per_epoch,
                 sampling.grid_inputs(grid_key), mngr, lock, record)


def _restore_newest_good(workdir: str) -> checkpoint.Restored | None:
    """The newest checkpoint that loads (None when there is none). Newer ones
    that fail are set aside (renamed `damaged-<step>`), saying so in one line
    each; when none loads, the newest one's error is raised and nothing moves."""
    mngr = checkpoint.manager(workdir)
    steps = sorted(mngr.all_steps(), reverse=True)
    mngr.close()
    failed: list[tuple[int, checkpoint.CheckpointError]] = []
    for step in steps:
        try:
            restored = checkpoint.restore(workdir, step)
        except checkpoint.CheckpointError as e:
            failed.append((step, e))
            continue
        folder = os.path.join(workdir, checkpoint.CHECKPOINT_DIR)
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


def _remove_stale_temps(workdir: str) -> None:
    """Deletes temp files a killed run left (`.<name>.<random>.tmp`, `*.tmp`)."""
    for folder in (workdir, os.path.join(workdir, GRID_DIR)):
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                path = os.path.join(folder, name)
                if name.endswith(".tmp") and os.path.isfile(path):
                    os.remove(path)


def grid_frames(workdir: str) -> list[str]:
    """The epoch grids of a run (`grids/epoch_NNN.png`), in epoch order; other
    files there (temp files, .DS_Store) are not frames."""
    folder = os.path.join(workdir, GRID_DIR)
    epochs = sorted(int(m[1]) for name in os.listdir(folder)
                    if (m := FRAME_NAME.fullmatch(name)))
    return [os.path.join(folder, f"epoch_{e:03d}.png") for e in epochs]


def steps_in_next_call(step: int, run: Setup, checkpoint_every: int | None) -> int:
    """Steps the next dispatch runs: up to `steps_per_call`, never past a log
    point, an epoch end, a checkpoint or the end, where the host acts."""
    periods = (run.config.log_every, run.steps_per_epoch, checkpoint_every)
    nexts = [(step // every + 1) * every for every in periods if every]
    # The first call runs one step, so FitResult.first_step_s times one step.
    k = 1 if step == run.start_step else run.config.steps_per_call
    return min([step + k, run.stop, *nexts]) - step


def dispatch(g_state: TrainState, d_state: TrainState, run: Setup, count: int
             ) -> tuple[TrainState, TrainState, dict[str, jax.Array]]:
    """Runs `count` train steps on the devices, without waiting for them."""
    if run.config.steps_per_call == 1:
        return train_step_on_data(g_state, d_state, run.images, run.labels, run.key,
                                  batch_size=run.config.batch_size, mesh=run.mesh)
    # Metrics [steps_per_call], the first `count` rows filled.
    return train_steps_on_data(g_state, d_state, run.images, run.labels, run.key,
                               np.int32(count), batch_size=run.config.batch_size,
                               max_steps=run.config.steps_per_call, mesh=run.mesh)


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


class Reporter:
    """Where a run's figures go: `metrics.jsonl`, TensorBoard and the progress
    bar, on process 0 (the others only check that the losses are finite)."""

    def __init__(self, workdir: str, run: Setup, progress: bool):
        self.primary = parallel.is_primary()
        self.run, self.schedule = run, learning_rate_schedule(run.config)
        self.path = os.path.join(workdir, METRICS_FILE)
        self.log, self.tb = None, None
        if self.primary:
            _trim_metrics(self.path, run.start_step)
            self.log = open(self.path, "a")
            try:
                self.tb = summaries.Summaries(workdir, run.start_step)
            except summaries.SummaryError:
                self.log.close()
                raise
        self.bar = tqdm(total=run.stop, initial=run.start_step, unit="step",
                        disable=not (progress and self.primary), dynamic_ncols=True)
        self.t0, self.started = time.perf_counter(), round(time.time())
        self.t_log, self.step_log, self.last = self.t0, run.start_step, {}

    def log_steps(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        """One line per step; one TensorBoard point (the last step's) per call."""
        now, spe = time.perf_counter(), self.run.steps_per_epoch
        for step, values in rows:
            if not all(math.isfinite(v) for v in values.values()):
                raise TrainError(f"non-finite loss at step {step}; training "
                                 "stopped, the last checkpoint is kept")
            # t: seconds since this process started training (compile
            # included, data loading not); started: when (Unix time).
            record = {"step": step, "epoch": (step - 1) // spe + 1, **values,
                      "lr": float(self.schedule(step - 1)),
                      "t": round(now - self.t0, 3), "started": self.started}
            if self.log:
                self.log.write(json.dumps(record) + "\n")
        rate = ((step - self.step_log) * self.run.config.batch_size
                / max(now - self.t_log, 1e-9))
        if self.log:
            self.log.flush()
            self.tb.scalars(step, {**values, "lr": record["lr"], "img_per_s": rate})
        self.t_log, self.step_log, self.last = now, step, values
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(epoch=f"{(step - 1) // spe + 1}/{self.run.config.epochs}",
                             d_loss=f"{values['d_loss']:.3f}",
                             g_loss=f"{values['g_loss']:.3f}", img_s=f"{rate:.0f}")

    def log_quality(self, step: int, epoch: int, scores: dict[str, float],
                    seconds: float) -> None:
        """An `eval_every` record: scores of G and its averages at an epoch end."""
        record = {"step": step, "epoch": epoch, **scores, "eval_s": round(seconds, 3)}
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()
        self.tb.scalars(step, scores)
        self.bar.write(_quality_line(epoch, record), file=sys.stderr)

    def close(self, quiet: bool = False) -> None:
        """Closes the log and the event files; `quiet`: ignoring a failure to
        write their last bytes, when the run already stops on an error."""
        self.bar.close()
        errors = []
        for closable in (self.log, self.tb):
            try:
                if closable is not None:
                    closable.close()
            except (OSError, summaries.SummaryError) as e:
                errors.append(e)
        if errors and not quiet:
            raise TrainError(f"cannot finish writing {self.path} or the TensorBoard "
                             f"events: {errors[0]}")


def log_pending(pending: PendingMetrics, reporter: Reporter) -> None:
    """Pulls the pending metrics to the host and reports them."""
    if not pending.calls:
        return
    rows = pending.pull()
    # Reported and cleared together or not at all: the interrupt handler logs
    # again, and must not write the lines twice.
    with _signals_held():
        reporter.log_steps(rows)
        pending.calls.clear()


def save_checkpoint(run: Setup, g_state: TrainState, d_state: TrainState,
                    workdir: str) -> dict[str, Any] | None:
    """Saves a checkpoint (every process takes part) and, on process 0,
    generator.msgpack; returns what the latter holds (None elsewhere)."""
    checkpoint.save(run.mngr, g_state, d_state, run.key, run.record)
    if not parallel.is_primary():
        return None
    variables = _sampling_variables(g_state, run.config.ema_batch_stats)
    checkpoint.save_generator(os.path.join(workdir, checkpoint.GENERATOR_FILE),
                              variables, int(d_state.step), run.config,
                              averaged=bool(g_state.ema))
    return variables


def write_outputs(workdir: str, epoch: int | None, step: int,
                  variables: dict[str, Any], run: Setup, reporter: Reporter) -> None:
    """grid.png (and at an epoch end its frame in grids/, progress.gif and the
    TensorBoard image) from `variables`; losses.png from the log."""
    grid = sampling.generate_uint8(variables, *run.grid_inputs)
    images.save_grid(os.path.join(workdir, GRID_FILE), grid, 10, 10, GRID_SCALE)
    if epoch is not None:
        os.makedirs(os.path.join(workdir, GRID_DIR), exist_ok=True)
        frame = os.path.join(workdir, GRID_DIR, f"epoch_{epoch:03d}.png")
        images.save_grid(frame, grid, 10, 10, GRID_SCALE)
        images.save_gif(grid_frames(workdir), os.path.join(workdir, GIF_FILE))
        reporter.tb.grid(step, np.asarray(images.grid_image(grid, 10, 10)))
    if os.path.exists(reporter.path):
        report.plot_losses(reporter.path, os.path.join(workdir, CURVE_FILE))


def train_and_evaluate(config: Config, options: RunOptions) -> FitResult:
    """Trains (or resumes) the run in `options.workdir` up to `config.epochs`.

    Writes `config.json`, per-step losses to `metrics.jsonl` and TensorBoard,
    `losses.png`, a 10x10 grid per epoch in `grids/` (latest also as
    `grid.png`), `progress.gif`, and a checkpoint with `generator.msgpack` at
    each epoch end, every `checkpoint_every` steps and when stopping. Grids and
    generator.msgpack come from G's weight average when the run keeps one.

    Raises:
      TrainError, data.DataError, checkpoint.CheckpointError: one-line problems.
      Interrupted: on Ctrl-C or SIGTERM, after saving what ran.
    """
    t_start = time.perf_counter()
    run = set_up(config, options)
    config, workdir, every = run.config, options.workdir, options.checkpoint_every
    primary = parallel.is_primary()
    quality = (QuickEval(options.classifier, options.data_dir, *run.train_data,
                         options.progress) if options.eval_every and primary else None)
    if primary:
        print(run_line(run.mesh, config.batch_size, run.start_step, run.stop,
                       run.total, run.steps_per_epoch), file=sys.stderr, flush=True)
    g_state, d_state, step = run.g_state, run.d_state, run.start_step
    pending, reporter = PendingMetrics(), None
    first_step_s, finished = float("nan"), False
    try:
        reporter = Reporter(workdir, run, options.progress)
        try:
            while step < run.stop:
                count = steps_in_next_call(step, run, every)
                # The call donates the states: until its results are stored and
                # counted, an interrupt must wait (it saves them).
                with _signals_held():
                    g_state, d_state, metrics = dispatch(g_state, d_state, run, count)
                    pending.add(step + 1, count, metrics)
                    step += count
                if step == run.start_step + 1:  # start-up cost: one extra sync
                    jax.block_until_ready(metrics)
                    first_step_s = time.perf_counter() - t_start
                epoch = step // run.steps_per_epoch
                epoch_end = step % run.steps_per_epoch == 0
                at_checkpoint = bool(every) and step % every == 0
                if (step % config.log_every == 0 or epoch_end or at_checkpoint
                        or step == run.stop):  # the log never runs ahead of a save
                    log_pending(pending, reporter)
                if epoch_end and quality and epoch % options.eval_every == 0:
                    t_eval = time.perf_counter()
                    scores = quality(_host_generator(g_state), config)
                    reporter.log_quality(step, epoch, scores, time.perf_counter() - t_eval)
                if epoch_end or step == run.stop:
                    variables = save_checkpoint(run, g_state, d_state, workdir)
                    if primary:
                        write_outputs(workdir, epoch if epoch_end else None, step,
                                      variables, run, reporter)
                elif at_checkpoint:
                    save_checkpoint(run, g_state, d_state, workdir)
            finished = True
        except KeyboardInterrupt:
            # Every dispatched step completes: log and save them before leaving.
            # Not in a multi-process run: a save needs every process at the same
            # step, and a signal reaches them at different steps (or only one);
            # the last periodic checkpoint is kept there (see checkpoint_every).
            log_pending(pending, reporter)
            if jax.process_count() > 1:
                raise Interrupted(None) from None
            save_checkpoint(run, g_state, d_state, workdir)
            raise Interrupted(step) from None
    except (OSError, summaries.SummaryError) as e:  # a full disk, say
        raise TrainError(f"cannot write to `workdir` {workdir}: {e}") from None
    finally:
        try:  # a failure to close the log is reported only after a clean finish
            if reporter is not None:
                reporter.close(quiet=not finished)
        finally:
            run.mngr.close()
            if run.lock is not None:
                os.close(run.lock)
    return FitResult(step, step - run.start_step, time.perf_counter() - reporter.t0,
                     first_step_s, peak_rss_mb(), reporter.last)
