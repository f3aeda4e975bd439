"""Orbax checkpoints of a run: both train states, the step and the run's key.

A workdir holds `config.json` (the run's record: its recipe and a fingerprint of
its training data) and `checkpoints/<step>/`, each with a copy of that record
in its Orbax metadata, so a lost or damaged `config.json` is restored from it.
Orbax writes each checkpoint to a temporary folder and renames it when complete,
so a run killed mid-save leaves the previous checkpoint intact. Nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from gan import checksum, record
from gan.config import Config
from gan.datasets import DIGITS, MNIST
from gan.checksum import DIGEST
from gan.errors import CheckpointError, one_line  # noqa: F401 - checkpoint.CheckpointError
from gan.training import TrainState, create_train_states

CHECKPOINT_DIR = "checkpoints"
# The key of the run's record in each checkpoint's Orbax custom metadata, and
# the file in a step's folder where Orbax keeps that metadata.
RECORD_KEY = "run"
STEP_METADATA = "_CHECKPOINT_METADATA"

@dataclasses.dataclass
class Restored:
    """What a checkpoint holds."""
    g_state: TrainState
    d_state: TrainState
    key: jax.Array
    step: int
    config: Config
    classes: tuple[str, ...] = DIGITS  # the run's (gan.record.classes_of)
    dataset: str = MNIST


def kept_record(workdir: str, step: int | None = None
                ) -> tuple[int, dict[str, Any]] | None:
    """(step, record) kept in the given checkpoint, or else in the newest one
    holding a readable record; None when none does (checkpoints from before
    records were kept)."""
    folder = os.path.join(workdir, CHECKPOINT_DIR)
    # Read from Orbax's step metadata file directly: a CheckpointManager would
    # wait for the other processes of a multi-process run.
    for s in [step] if step is not None else sorted(steps(workdir), reverse=True):
        try:
            with open(os.path.join(folder, str(s), STEP_METADATA)) as f:
                kept = json.load(f)["custom_metadata"][RECORD_KEY]
            record.check(kept)
            return s, kept
        except (OSError, ValueError, TypeError, KeyError):  # try the next
            continue
    return None


def manager(workdir: str, keep: int = 3) -> ocp.CheckpointManager:
    """A CheckpointManager for `workdir/checkpoints`, keeping the newest `keep`."""
    directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    # The handler named up front lets restore() read a checkpoint's metadata.
    return ocp.CheckpointManager(directory, options=options,
                                 item_handlers=ocp.StandardCheckpointHandler())


def _payload(g_state: TrainState, d_state: TrainState, key: jax.Array) -> dict:
    # State dicts turn optax's namedtuples (and the tuple of G's averages) into
    # plain nested dicts.
    g = serialization.to_state_dict(g_state)
    averages = g.pop("ema")
    payload = {"g": g, "d": serialization.to_state_dict(d_state),
               "key": jax.random.key_data(key)}
    if averages:  # absent without EMA, as in checkpoints from before it
        payload["ema"] = averages
    return payload


def save(mngr: ocp.CheckpointManager, g_state: TrainState, d_state: TrainState,
         key: jax.Array, run_record: dict[str, Any] | None = None) -> None:
    """Saves both states and the key at step `d_state.step`, and the run's
    `run_record` (`gan.record.make`) in its metadata; waits until written."""
    step = int(d_state.step)
    if step in mngr.all_steps():
        return
    payload = _payload(g_state, d_state, key)
    payload[DIGEST] = np.frombuffer(bytes.fromhex(checksum.digest(payload)), np.uint8)
    try:
        mngr.save(step, args=ocp.args.StandardSave(payload),
                  custom_metadata={RECORD_KEY: run_record} if run_record else None)
        mngr.wait_until_finished()
    except Exception as e:  # noqa: BLE001 - a full disk is a ValueError in Orbax
        _remove_unfinished(str(mngr.directory))
        raise CheckpointError(f"cannot save checkpoint {step} ({one_line(e)}); "
                              "the previous checkpoint is kept") from None


def steps(workdir: str) -> list[int]:
    """The complete checkpoints' steps. Orbax saves into
    `<step>.orbax-checkpoint-tmp*` and renames the folder to `<step>` when
    complete; listing the names needs no Orbax manager, which would read every
    step's time and fail on one a live run just deleted."""
    try:
        names = os.listdir(os.path.join(workdir, CHECKPOINT_DIR))
    except OSError:
        return []
    return [int(name) for name in names if name.isdigit()]


def newest_step(workdir: str) -> int | None:
    """The newest complete checkpoint's step (None: none)."""
    return max(steps(workdir), default=None)


def _open_manager(workdir: str) -> ocp.CheckpointManager:
    """`manager(workdir)` for reading; a listing that fails (a step deleted
    while Orbax reads the steps' times) is a CheckpointError."""
    try:
        return manager(workdir)
    except OSError as e:
        raise CheckpointError(f"cannot list the checkpoints in {workdir}: "
                              f"{one_line(e)}") from None


def replaced(workdir: str, step: int | None) -> bool:
    """Whether checkpoint `step` is gone or going,
    a newer one in its place: Orbax deletes a step's files one by one."""
    if step is None:  # there was none: nothing to wait for
        return False
    return (not os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR, str(step)))
            or newest_step(workdir) != step)


def _remove_unfinished(folder: str) -> None:
    """Removes the temporary folders of saves that failed (Orbax names them
    `<step>.orbax-checkpoint-tmp*`): on a full disk they hold the space."""
    for name in os.listdir(folder):
        if ".orbax-checkpoint-tmp" in name:
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


def restore(workdir: str, step: int | None = None) -> Restored:
    """Restores the latest (or the given) checkpoint of a workdir.

    Raises:
      CheckpointError: no checkpoint there, or one that does not fit the model.
    """
    workdir = os.path.expanduser(workdir)
    if not os.path.isdir(workdir):
        raise CheckpointError(f"checkpoint path {workdir} is not a folder")
    try:
        saved, problem = record.load(workdir), None
    except CheckpointError as e:  # the checkpoint's own record may stand in
        saved, problem = None, e
    if not os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
        if problem is None and saved is None:
            raise CheckpointError(f"{workdir} holds no {record.CONFIG_FILE}: not a "
                                  "train.py workdir")
        raise problem or CheckpointError(f"{workdir} holds no checkpoints yet")
    mngr = _open_manager(workdir)
    try:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{workdir} holds no complete checkpoint")
        if saved is None:
            kept = kept_record(workdir, step)
            if kept is None:
                raise problem or CheckpointError(
                    f"{workdir} holds no {record.CONFIG_FILE}, and checkpoint "
                    f"{step} no copy of it")
            saved = kept[1]
        return _read(mngr, step, saved, f"checkpoint {step} in {workdir}")
    finally:
        mngr.close()


def _read(mngr: ocp.CheckpointManager, step: int, run_record: dict[str, Any],
          what: str) -> Restored:
    """The states of checkpoint `step`, checked against the model its run's
    record describes and the saved checksum before and after Orbax reads them."""
    config, classes = record.config_of(run_record), record.classes_of(run_record)
    # The fresh states give the tree structure, shapes and dtypes to restore into.
    g_state, d_state = create_train_states(config, jax.random.key(0), len(classes))
    target = _payload(g_state, d_state, jax.random.key(config.seed))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
        metadata = mngr.item_metadata(step)
        if metadata is not None and DIGEST in metadata:
            abstract[DIGEST] = jax.ShapeDtypeStruct((32,), np.uint8)
        # Refused before Orbax reads any array: its failed restores leave
        # TensorStore handles open.
        _check_fits(abstract, metadata, what)
        raw = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
        saved = raw.pop(DIGEST, None)
        if saved is None:
            checksum.note_unverified(what)
        elif bytes(np.asarray(saved, np.uint8)).hex() != checksum.digest(raw):
            raise CheckpointError(f"{what} is damaged (its arrays do not match "
                                  "their checksum)")
        g_state = serialization.from_state_dict(g_state, {**raw["g"],
                                                          "ema": raw.get("ema", {})})
        d_state = serialization.from_state_dict(d_state, raw["d"])
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise many types.
        raise CheckpointError(f"{what} cannot be loaded ({one_line(e)})") from None
    return Restored(g_state, d_state, jax.random.wrap_key_data(raw["key"]),
                    int(d_state.step), config, classes, record.dataset_of(run_record))


def _check_fits(abstract: Any, metadata: Any, what: str) -> None:
    """Raises CheckpointError unless the saved arrays have the wanted names,
    shapes and dtypes (from the checkpoint's metadata: no array is read)."""
    if metadata is None:  # nothing to compare with: restore() will tell
        return

    def table(tree):
        # The step of a fresh state is a Python int: no shape, no dtype to compare.
        return {jax.tree_util.keystr(path, simple=True, separator="."):
                (tuple(getattr(leaf, "shape", ())), getattr(leaf, "dtype", None))
                for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}

    want, got = table(abstract), table(metadata)
    if want.keys() != got.keys():
        names = sorted(want.keys() ^ got.keys())
        more = ", ..." if len(names) > 3 else ""
        raise CheckpointError(f"{what} does not fit this model: arrays differ "
                              f"({', '.join(names[:3])}{more})")
    for name, (shape, dtype) in want.items():
        got_shape, got_dtype = got[name]
        dtypes_differ = (dtype is not None and got_dtype is not None
                         and got_dtype != dtype)
        if got_shape != shape or dtypes_differ:
            raise CheckpointError(
                f"{what} does not fit this model: {name} is {got_dtype}"
                f"{list(got_shape)}, the model has {dtype}{list(shape)}")
