"""From a config to what the training loop runs on (`set_up`): the device
mesh, the training data on the devices, the states (fresh or restored), the
run's keys, its step range and its record."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm import tqdm

from gan import data, datasets, parallel, record, sampling
from gan.config import Config, RunOptions
from gan.errors import TrainError
from gan.training import TrainState, create_train_states


@dataclasses.dataclass
class Run:
    """What the loop runs on (`set_up`)."""
    config: Config                  # with `data_shards` set
    options: RunOptions
    mesh: Mesh
    key: jax.Array                  # the run's train key (split per step)
    images: jax.Array               # [S, N/S, 28, 28] uint8, S data shards
    labels: jax.Array               # [S, N/S] int32
    start_step: int
    stop: int                       # the step this call ends at
    total: int                      # steps of all `epochs`
    steps_per_epoch: int
    grid_inputs: tuple[np.ndarray, np.ndarray]  # noise and labels of the grids
    classes: tuple[str, ...]        # the dataset's class names (label i is classes[i])
    dataset: str                    # its name, as the run's record holds it


def _shards_read(config: Config) -> int:
    """1 when this process reads the whole training set, else `data_shards`."""
    return config.data_shards if jax.process_count() > 1 else 1


def load(config: Config, options: RunOptions
         ) -> tuple[Config, Mesh, datasets.Labelled, dict[str, Any]]:
    """The recipe with `data_shards` set, the device mesh, the training data
    this process reads (all of it, or its shard in a multi-process run) with
    its class names, and the run's record (`gan.record.make`)."""
    config = config.with_shards(jax.process_count())
    try:
        mesh = parallel.make_mesh(options.devices)
        parallel.check_batch(mesh, config.batch_size, config.data_shards)
    except parallel.ParallelError as e:
        raise TrainError(str(e)) from None
    if jax.process_count() > 1 and config.data_shards != jax.process_count():
        raise TrainError(f"`data_shards` must equal the {jax.process_count()} "
                         f"processes, got {config.data_shards}")
    shard = ((jax.process_index(), config.data_shards) if jax.process_count() > 1
             else None)
    dataset = datasets.check_name(options.dataset)
    folder = datasets.folder_of(dataset)
    if folder is not None and datasets.inside(options.workdir, folder):
        raise TrainError(f"`workdir` {options.workdir} lies inside the dataset folder "
                         f"{folder}: its pictures would become training data")
    train_data = datasets.load(dataset, options.data_dir, "train", shard=shard)
    n = len(train_data.labels) * _shards_read(config)
    if config.batch_size > n:
        raise TrainError(f"`batch_size` {config.batch_size} is larger than the "
                         f"{n} training images")
    pictures = train_data.images if folder is not None else None  # MNIST: labels only
    return config, mesh, train_data, record.make(
        config, data.fingerprint(train_data.labels, n, pictures), dataset,
        train_data.classes)


def run_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(init, train, grid) keys of a run: everything random follows from the seed."""
    init_key, train_key, grid_key = jax.random.split(jax.random.key(seed), 3)
    return init_key, train_key, grid_key


def set_up(config: Config, options: RunOptions, mesh: Mesh,
           train_data: datasets.Labelled, restored: Any
           ) -> tuple[Run, TrainState, TrainState]:
    """The run, and the states to start from (`restored`, or fresh), placed on
    the mesh: states replicated, the data split into its shards."""
    images, labels, classes = train_data.images, train_data.labels, train_data.classes
    n = len(labels) * _shards_read(config)
    steps_per_epoch = (n // config.data_shards) // (config.batch_size // config.data_shards)
    total = config.epochs * steps_per_epoch
    init_key, train_key, grid_key = run_keys(config.seed)
    if restored is not None:
        g_state, d_state, train_key = restored.g_state, restored.d_state, restored.key
    else:
        g_state, d_state = create_train_states(config, init_key, len(classes))
    # Replicated on every device; the step splits the batch (gan.parallel).
    g_state, d_state, train_key = parallel.replicate((g_state, d_state, train_key), mesh)
    images_dev, labels_dev = parallel.shard_dataset(
        images, labels.astype(np.int32), config.data_shards, mesh)
    start = int(d_state.step)
    run = Run(config, options, mesh, train_key, images_dev, labels_dev, start,
              min(total, options.max_steps or total), total, steps_per_epoch,
              sampling.grid_inputs(grid_key, len(classes)), classes, train_data.name)
    return run, g_state, d_state


def make_scorer(options: RunOptions, train_data: datasets.Labelled) -> Any:
    """The `eval_every` scorer (`gan.quality.EpochScorer`), on process 0 only."""
    if not (options.eval_every and parallel.is_primary()):
        return None
    from gan import classifier, quality  # noqa: PLC0415 - only when asked.
    say_line = (lambda m: tqdm.write(m, file=sys.stderr)) if options.progress else None
    try:
        # A process of several holds a shard: the scorer reads the whole split.
        return quality.EpochScorer(
            classifier_path(options), options.dataset, options.data_dir,
            train_data if jax.process_count() == 1 else None, say_line)
    except (classifier.ClassifierError, data.DataError) as e:
        raise TrainError(str(e)) from None


def classifier_path(options: RunOptions) -> str:
    """The `eval_every` classifier: as given, else MNIST's shipped one, else
    the run's own (`classifier.msgpack` in the workdir)."""
    from gan import classifier  # noqa: PLC0415 - only when asked.
    return options.classifier or classifier.path_for(options.dataset, options.workdir)


def run_line(run: Run) -> str:
    """What a run is, said once at its start: `training on 2 cpu devices, 1
    process: batch 100 (50 per device), steps 1-18000 of 18000 (600 per epoch),
    fresh start` (or `resuming from step N`)."""
    mesh, batch_size = run.mesh, run.config.batch_size
    kind = mesh.devices.flat[0].platform
    processes = jax.process_count()
    start = (f"resuming from step {run.start_step}" if run.start_step else "fresh start")
    steps = (f"steps {run.start_step + 1}-{run.stop}" if run.stop > run.start_step
             else f"no steps left (at step {run.start_step})")
    return (f"training on {mesh.size} {kind} device{'s' * (mesh.size > 1)}, "
            f"{processes} process{'es' * (processes > 1)}: batch {batch_size} "
            f"({batch_size // mesh.size} per device), {steps} of {run.total} "
            f"({run.steps_per_epoch} per epoch), {start}")


