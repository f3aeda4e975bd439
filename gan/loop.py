"""The training loop: data on the device, logs, grids, checkpoints, resume."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import resource
import signal
import sys
import threading
import time
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from gan import charts, checkpoint, data, ema, images, parallel, sampling, summaries
from gan.config import COMPUTE_DTYPES, EMA_BATCH_STATS, Config
from gan.training import (create_train_states, learning_rate_schedule,
                          train_step_on_data, train_steps_on_data)

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "losses.png"
GRID_DIR = "grids"
GRID_FILE = "grid.png"
GIF_FILE = "progress.gif"
GRID_SCALE = 2


class TrainError(Exception):
    """A run that cannot start or go on; the message is one line."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training; `saved_step` is the step of the
    checkpoint saved on the way out, or None when none was (see `fit`)."""

    def __init__(self, saved_step: int | None):
        super().__init__(saved_step)
        self.saved_step = saved_step


@dataclasses.dataclass
class FitResult:
    """What a call of `fit` did."""
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


def check_config(config: Config) -> None:
    """Raises TrainError for values no run can use."""
    if config.epochs <= 0:
        raise TrainError(f"--epochs must be positive, got {config.epochs}")
    if config.batch_size <= 0:
        raise TrainError(f"--batch-size must be positive, got {config.batch_size}")
    if not (config.learning_rate > 0 and math.isfinite(config.learning_rate)):
        raise TrainError(f"--learning-rate must be positive, got {config.learning_rate}")
    if config.log_every <= 0:
        raise TrainError(f"--log-every must be positive, got {config.log_every}")
    if config.data_shards <= 0:
        raise TrainError(f"--data-shards must be positive, got {config.data_shards}")
    if config.compute_dtype not in COMPUTE_DTYPES:
        raise TrainError(f"--compute-dtype must be one of {', '.join(COMPUTE_DTYPES)}, "
                         f"got {config.compute_dtype!r}")
    if config.steps_per_call <= 0:
        raise TrainError(f"--steps-per-call must be positive, got {config.steps_per_call}")
    if not 0 <= config.ema_decay < 1:
        raise TrainError(f"--ema-decay must be in [0, 1) (0: no average), "
                         f"got {config.ema_decay}")
    if any(not 0 < d < 1 for d in config.ema_compare):
        raise TrainError("--ema-compare decays must be in (0, 1), got "
                         + ",".join(map(str, config.ema_compare)))
    if config.ema_compare and not config.ema_decay:
        raise TrainError("--ema-compare needs --ema-decay above 0")
    if len(set(config.ema_decays)) < len(config.ema_decays):
        raise TrainError("--ema-compare decays must differ from each other and "
                         f"from --ema-decay {config.ema_decay}")
    if config.ema_batch_stats not in EMA_BATCH_STATS:
        raise TrainError(f"--ema-batch-stats must be one of "
                         f"{', '.join(EMA_BATCH_STATS)}, "
                         f"got {config.ema_batch_stats!r}")


def _prepare_workdir(workdir: str, config: Config) -> None:
    try:
        if parallel.is_primary():
            os.makedirs(workdir, exist_ok=True)
        saved = checkpoint.load_config(workdir)
        if saved is not None:
            changed = [f for f in checkpoint.RECIPE_FIELDS
                       if getattr(saved, f) != getattr(config, f)]
            if changed:
                names = ", ".join(f"{f}={getattr(saved, f)}" for f in changed)
                hint = (" (no weight average: pass --ema-decay 0)"
                        if "ema_decay" in changed and not saved.ema_decay else "")
                raise TrainError(f"{workdir} holds a run with {names}{hint}; resume it "
                                 "with those values or use a new --workdir")
        if parallel.is_primary():
            checkpoint.save_config(workdir, config)
    except OSError as e:
        raise TrainError(f"cannot write to workdir {workdir}: {e.strerror}") from None


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
    """Drops log lines past `step`: work after the last checkpoint is redone."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [l for l in f if l.strip() and json.loads(l)["step"] <= step]
    with open(path + ".tmp", "w") as f:
        f.writelines(lines)
    os.replace(path + ".tmp", path)


# losses.png: (title, metrics.jsonl fields, log scale), one panel each.
PANELS = (("cDCGAN losses", ("d_loss", "g_loss"), False),
          ("conditional accuracy (train.py --eval-every)", ("cond_acc", "cond_acc_ema"),
           False),
          ("Frechet ratio to real digits (train.py --eval-every)",
           ("fd_ratio", "fd_ratio_ema"), True))


def _read_curves(path: str) -> dict[str, list[tuple[float, float]]]:
    """(step, value) series of every PANELS field in the log."""
    curves: dict[str, list[tuple[float, float]]] = {
        name: [] for _, names, _ in PANELS for name in names}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            for name in curves:
                if name in record:
                    curves[name].append((record["step"], record[name]))
    return curves


def plot_log(metrics_path: str, out_path: str) -> None:
    """Draws the losses (and quality figures, when logged) of a run's log."""
    curves = _read_curves(metrics_path)
    charts.plot([charts.Panel(title, {n: curves[n] for n in names}, log_y=log_y)
                 for title, names, log_y in PANELS if any(curves[n] for n in names)],
                out_path)


class _QuickEval:
    """`train.py --eval-every`: 1,000 samples scored against real digits."""

    def __init__(self, classifier_path, data_dir, train_images, train_labels,
                 progress: bool):
        from gan import classifier, evaluate  # noqa: PLC0415 - only when asked.
        self._evaluate = evaluate
        say = (lambda m: tqdm.write(m, file=sys.stderr)) if progress else None
        try:
            clf = classifier.load_or_train(classifier_path or classifier.DEFAULT_PATH,
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


def fit(config: Config, workdir: str, data_dir: str | None = None,
        max_steps: int | None = None, keep: int = 3,
        checkpoint_every: int | None = None, progress: bool = True,
        eval_every: int | None = None, classifier_path: str | None = None,
        devices: int | None = None) -> FitResult:
    """Trains (or resumes) the run in `workdir` up to `config.epochs` epochs.

    Writes `config.json`, per-step losses to `metrics.jsonl`, `losses.png`, a 10x10
    grid per epoch in `grids/` (latest also as `grid.png`), `progress.gif`, and a
    checkpoint at each epoch end and when stopping. Grids and `generator.msgpack`
    come from G's weight average when the run keeps one (`gan.ema`).

    Args:
      config: the recipe; its recipe fields must match a run already in `workdir`.
      workdir: the run's folder; an existing run there is resumed.
      data_dir: IDX folder or TFDS data dir (see `gan.data.load_mnist`).
      max_steps: stop once this many steps (in total, resumed ones included) ran.
      keep: checkpoints kept.
      checkpoint_every: also save every this many steps (besides epoch ends).
      progress: show a tqdm progress bar.
      eval_every: every this many epochs, score 1,000 samples (`gan.evaluate`)
        of G's own weights and of its averages, and log `cond_acc`, `fd_ratio`,
        `cond_acc_ema`, `fd_ratio_ema` (and per decay with `ema_compare`)
        beside the losses.
      classifier_path: the judging classifier's file (trained there if missing).
      devices: devices per process to split the batch over (default: all local
        ones; see `gan.parallel`). Only process 0 writes files besides checkpoints.

    Raises:
      TrainError, data.DataError, checkpoint.CheckpointError: one-line problems.
    """
    t_start = time.perf_counter()
    check_config(config)
    if max_steps is not None and max_steps <= 0:
        raise TrainError(f"--max-steps must be positive, got {max_steps}")
    if keep <= 0:
        raise TrainError(f"--keep must be positive, got {keep}")
    if checkpoint_every is not None and checkpoint_every <= 0:
        raise TrainError(f"--checkpoint-every must be positive, got {checkpoint_every}")
    if eval_every is not None and eval_every <= 0:
        raise TrainError(f"--eval-every must be positive, got {eval_every}")
    try:
        mesh = parallel.make_mesh(devices)
        parallel.check_batch(mesh, config.batch_size, config.data_shards)
    except parallel.ParallelError as e:
        raise TrainError(str(e)) from None
    if jax.process_count() > 1 and config.data_shards != jax.process_count():
        raise TrainError(f"--data-shards must equal the {jax.process_count()} "
                         f"processes, got {config.data_shards}")
    primary = parallel.is_primary()
    # A process of many reads only its data shard; one process reads all.
    shard = ((jax.process_index(), config.data_shards) if jax.process_count() > 1
             else None)
    train_images, train_labels = data.load_mnist(data_dir, "train", shard=shard)
    n = len(train_labels) * (1 if shard is None else config.data_shards)
    if config.batch_size > n:
        raise TrainError(f"--batch-size {config.batch_size} is larger than the "
                         f"{n} training images")
    _prepare_workdir(workdir, config)
    per_shard = n // config.data_shards
    steps_per_epoch = per_shard // (config.batch_size // config.data_shards)
    total = config.epochs * steps_per_epoch
    stop = total if max_steps is None else min(total, max_steps)

    init_key, train_key, grid_key = run_keys(config.seed)
    mngr = checkpoint.manager(workdir, keep)
    if mngr.latest_step() is not None:
        restored = checkpoint.restore(workdir)
        g_state, d_state, train_key = (restored.g_state, restored.d_state,
                                       restored.key)
    else:
        g_state, d_state = create_train_states(config, init_key)
    step = int(d_state.step)
    # Replicated on every device; the step splits the batch (gan.parallel).
    g_state, d_state, train_key = parallel.replicate((g_state, d_state, train_key),
                                                     mesh)

    metrics_path = os.path.join(workdir, METRICS_FILE)
    if primary:
        _trim_metrics(metrics_path, step)
    schedule = learning_rate_schedule(config)
    grid_z, grid_labels = sampling.grid_inputs(grid_key)
    mode = config.ema_batch_stats
    # [S, N/S, 28, 28] uint8 and [S, N/S]; a process of many holds its shard only.
    images_dev, labels_dev = parallel.shard_dataset(
        train_images, train_labels.astype(np.int32), config.data_shards, mesh)

    def write_grid(epoch: int | None, variables: dict[str, Any]) -> None:
        grid = sampling.generate_uint8(variables, grid_z, grid_labels)
        images.save_grid(os.path.join(workdir, GRID_FILE), grid, 10, 10, GRID_SCALE)
        if epoch is not None:
            os.makedirs(os.path.join(workdir, GRID_DIR), exist_ok=True)
            frame = os.path.join(workdir, GRID_DIR, f"epoch_{epoch:03d}.png")
            images.save_grid(frame, grid, 10, 10, GRID_SCALE)
            frames = sorted(os.listdir(os.path.join(workdir, GRID_DIR)))
            images.save_gif([os.path.join(workdir, GRID_DIR, f) for f in frames],
                            os.path.join(workdir, GIF_FILE))
            tb.grid(step, np.asarray(images.grid_image(grid, 10, 10)))

    quality = None
    if eval_every and primary:
        quality = _QuickEval(classifier_path, data_dir, train_images, train_labels,
                             progress)

    def save() -> dict[str, Any] | None:
        """Saves a checkpoint and generator.msgpack; returns what the latter holds
        (None on other processes than the first)."""
        checkpoint.save(mngr, g_state, d_state, train_key)  # every process takes part
        if not primary:
            return None
        variables = _sampling_variables(g_state, mode)
        checkpoint.save_generator(os.path.join(workdir, checkpoint.GENERATOR_FILE),
                                  variables, step, config, averaged=bool(g_state.ema))
        return variables

    def write_outputs(epoch: int | None) -> None:
        variables = save()
        if not primary:
            return
        write_grid(epoch, variables)
        if os.path.exists(metrics_path):
            plot_log(metrics_path, os.path.join(workdir, CURVE_FILE))

    if primary:
        print(run_line(mesh, config.batch_size, step, stop, total, steps_per_epoch),
              file=sys.stderr, flush=True)
    bar = tqdm(total=stop, initial=step, disable=not (progress and primary), unit="step",
               dynamic_ncols=True)
    # TensorBoard: the figures of each log point and epoch end (process 0).
    tb = summaries.Summaries(workdir, step) if primary else None
    # (first step of a dispatch, steps in it, their metrics), not yet on the host.
    pending: list[tuple[int, int, dict[str, Any]]] = []
    last: dict[str, float] = {}
    start_step, t0, started = step, time.perf_counter(), round(time.time())
    first_step_s = float("nan")
    t_log, step_log = t0, step

    def steps_to_next_stop(step: int) -> int:
        """Steps the next dispatch runs: up to steps_per_call, never past a log
        point, an epoch end, a checkpoint or the end, where the host acts."""
        ends = [stop, (step // config.log_every + 1) * config.log_every,
                (step // steps_per_epoch + 1) * steps_per_epoch]
        if checkpoint_every:
            ends.append((step // checkpoint_every + 1) * checkpoint_every)
        # The first call runs one step, so first_step_s times one step.
        k = 1 if step == start_step else config.steps_per_call
        return min([step + k] + ends) - step

    def flush(log) -> None:
        """Pulls the pending metrics to the host: the loop's only sync."""
        nonlocal last, t_log, step_log
        if not pending:
            return
        host = parallel.to_host([m for _, _, m in pending])  # waits for the steps
        now = time.perf_counter()
        # Written and cleared together or not at all: the interrupt handler
        # flushes again, and must not write the lines twice.
        with _signals_held():
            for (first, count, _), m in zip(pending, host):
                for i in range(count):
                    s = first + i
                    last = {k: float(np.reshape(v, -1)[i]) for k, v in m.items()}
                    if not all(math.isfinite(v) for v in last.values()):
                        raise TrainError(f"non-finite loss at step {s}; training "
                                         "stopped, the last checkpoint is kept")
                    # t: seconds since this process started training (compile
                    # included, data loading not); started: when (Unix time).
                    record = {"step": s, "epoch": (s - 1) // steps_per_epoch + 1,
                              **last, "lr": float(schedule(s - 1)),
                              "t": round(now - t0, 3), "started": started}
                    if log:
                        log.write(json.dumps(record) + "\n")
            rate = (step - step_log) * config.batch_size / max(now - t_log, 1e-9)
            if log:
                log.flush()
                tb.scalars(step, {**last, "lr": record["lr"], "img_per_s": rate})
            pending.clear()
        t_log, step_log = now, step
        bar.update(step - bar.n)
        bar.set_postfix(epoch=f"{(step - 1) // steps_per_epoch + 1}/{config.epochs}",
                        d_loss=f"{last['d_loss']:.3f}",
                        g_loss=f"{last['g_loss']:.3f}", img_s=f"{rate:.0f}")

    try:
        with (open(metrics_path, "a") if primary else contextlib.nullcontext()) as log:
            try:
                while step < stop:
                    count = steps_to_next_stop(step)
                    # The call donates the states: until its results are stored
                    # and counted, an interrupt must wait (it saves them).
                    with _signals_held():
                        if config.steps_per_call == 1:
                            g_state, d_state, metrics = train_step_on_data(
                                g_state, d_state, images_dev, labels_dev, train_key,
                                batch_size=config.batch_size, mesh=mesh)
                        else:
                            g_state, d_state, metrics = train_steps_on_data(
                                g_state, d_state, images_dev, labels_dev, train_key,
                                np.int32(count), batch_size=config.batch_size,
                                max_steps=config.steps_per_call, mesh=mesh)
                        pending.append((step + 1, count, metrics))
                        step += count
                    if step == start_step + 1:
                        # Start-up cost (data, compile, first step), for users and
                        # the compile-cache figures; one extra sync per run.
                        jax.block_until_ready(metrics)
                        first_step_s = time.perf_counter() - t_start
                    epoch_end = step % steps_per_epoch == 0
                    if step % config.log_every == 0 or epoch_end or step == stop:
                        flush(log)
                    if epoch_end:
                        epoch = step // steps_per_epoch
                        if quality and epoch % eval_every == 0:
                            t_eval = time.perf_counter()
                            record = {"step": step, "epoch": epoch,
                                      **quality(_host_generator(g_state), config)}
                            record["eval_s"] = round(time.perf_counter() - t_eval, 3)
                            log.write(json.dumps(record) + "\n")
                            log.flush()
                            tb.scalars(step, {k: v for k, v in record.items()
                                              if k not in ("step", "epoch", "eval_s")})
                            bar.write(_quality_line(epoch, record), file=sys.stderr)
                        write_outputs(epoch)
                    elif checkpoint_every and step % checkpoint_every == 0:
                        flush(log)  # the log never runs ahead of a checkpoint
                        save()
                if stop % steps_per_epoch:
                    write_outputs(None)
            except KeyboardInterrupt:
                # Every dispatched step completes: log and save them before leaving.
                # Not in a multi-process run: a save needs every process at the same
                # step, and a signal reaches them at different steps (or only one);
                # the last periodic checkpoint is kept there (see --checkpoint-every).
                flush(log)
                if jax.process_count() > 1:
                    raise Interrupted(None) from None
                save()
                raise Interrupted(step) from None
    except OSError as e:
        raise TrainError(f"cannot write to workdir {workdir}: {e}") from None
    finally:
        bar.close()
        mngr.close()
        if tb:
            tb.close()
    return FitResult(step, step - start_step, time.perf_counter() - t0,
                     first_step_s, peak_rss_mb(), last)
