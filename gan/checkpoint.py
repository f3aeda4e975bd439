"""Orbax checkpoints of a run: both train states, the step and the run's key.

A workdir holds `config.json` (the run's record: its recipe and a fingerprint of
its training data) and `checkpoints/<step>/`, each with a copy of that record
in its Orbax metadata, so a lost or damaged `config.json` is restored from it.
Orbax writes each checkpoint to a temporary folder and renames it when complete,
so a run killed mid-save leaves the previous checkpoint intact. Nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from gan import ema, files
from gan.config import Config
from gan.models import NOISE_DIM, Generator
from gan.training import TrainState, create_train_states

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
# What sampling needs (G's params and batch_stats), written beside each checkpoint.
GENERATOR_FILE = "generator.msgpack"
# The generator shipped with the repository (see README, "Pretrained generator").
PRETRAINED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "weights", GENERATOR_FILE)
# Saved configs (config.json, generator files) from before the weight average
# had none: they read as ema_decay 0.
LEGACY_FIELDS = {"ema_decay": 0.0}


# Reads of a workdir a run is writing: a step listed may be deleted (`keep`)
# before it is read; each attempt takes the newest step again.
LIVE_RUN_ATTEMPTS = 10
LIVE_RUN_PAUSE_S = 0.1


class CheckpointError(Exception):
    """A missing, unreadable or incompatible checkpoint; the message is one line."""


@dataclasses.dataclass
class Restored:
    """What a checkpoint holds."""
    g_state: TrainState
    d_state: TrainState
    key: jax.Array
    step: int
    config: Config


# The key of the training data's fingerprint in a run's record (`gan.data.fingerprint`).
DATA_KEY = "training_data"
# The key of the run's record in each checkpoint's Orbax custom metadata, and
# the file in a step's folder where Orbax keeps that metadata.
RECORD_KEY = "run"
STEP_METADATA = "_CHECKPOINT_METADATA"


def run_record(config: Config, data_fingerprint: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """What identifies a run: its config's fields, plus its data's fingerprint."""
    record = dataclasses.asdict(config)
    if data_fingerprint is not None:
        record[DATA_KEY] = data_fingerprint
    return record


def save_config(workdir: str, config: Config | dict[str, Any]) -> None:
    """Writes the run's config (or whole record, `run_record`) as JSON, atomically."""
    record = config if isinstance(config, dict) else run_record(config)
    text = json.dumps(record, indent=2)
    files.write_atomically(os.path.join(workdir, CONFIG_FILE),
                           lambda tmp: _write_bytes(tmp, text.encode()))


def load_record(workdir: str) -> dict[str, Any] | None:
    """The record in `workdir`'s config.json (its config checked), or None
    when there is none.

    Raises:
      CheckpointError: unreadable, or not a config.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
        check_record(record)
        return record
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None


def load_config(workdir: str) -> Config | None:
    """The config saved in `workdir`, or None when there is none."""
    record = load_record(workdir)
    return None if record is None else config_from_record(record)


def checkpoint_record(workdir: str, step: int | None = None
                      ) -> tuple[int, dict[str, Any]] | None:
    """(step, record) kept in the given checkpoint, or else in the newest one
    holding a readable record; None when none does (checkpoints from before
    records were kept)."""
    folder = os.path.join(workdir, CHECKPOINT_DIR)
    # Read from Orbax's step metadata file directly: a CheckpointManager would
    # wait for the other processes of a multi-process run.
    steps = [step] if step is not None else sorted(_steps(workdir), reverse=True)
    for s in steps:
        try:
            with open(os.path.join(folder, str(s), STEP_METADATA)) as f:
                record = json.load(f)["custom_metadata"][RECORD_KEY]
            check_record(record)
            return s, record
        except (OSError, ValueError, TypeError, KeyError):  # try the next
            continue
    return None


def check_record(record: Any) -> None:
    """Raises ValueError (or TypeError) unless `record` is a run's record: a
    valid config, and a data fingerprint with an image count if any."""
    config_from_record(record)
    data = record.get(DATA_KEY)
    if data is not None and not (isinstance(data, dict)
                                 and isinstance(data.get("examples"), int)):
        raise ValueError(f"`{DATA_KEY}` holds {data!r}, not a data fingerprint")


def config_from_record(fields: dict[str, Any]) -> Config:
    """A Config from a run's record (config.json's content) or other saved
    fields; fields this version does not know are dropped."""
    if not isinstance(fields, dict):
        raise ValueError(f"holds {type(fields).__name__}, not a config")
    known = {f.name for f in dataclasses.fields(Config)}
    fields = {**LEGACY_FIELDS, **{k: v for k, v in fields.items() if k in known}}
    if "ema_compare" in fields:  # a JSON list
        fields["ema_compare"] = tuple(fields["ema_compare"])
    return Config(**fields)  # checks the values (ConfigError is a ValueError)


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


# Name of the SHA-256 of a checkpoint's arrays, saved with them (uint8 [32]).
DIGEST = "sha256"


def digest(tree: Any) -> str:
    """SHA-256 over every array of a tree: names, shapes, dtypes and bytes.
    Integers count as int64, so a step saved as a Python int and restored as
    an array has one digest."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]:
        a = np.asarray(leaf)
        if a.dtype.kind in "iub":
            a = a.astype(np.int64)
        h.update(f"{jax.tree_util.keystr(path)}|{a.shape}|{a.dtype.str}|".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


_warned: set[str] = set()


def _unverified(what: str) -> None:
    """Says once per file that it predates checksums (it still loads)."""
    if what not in _warned:
        _warned.add(what)
        print(f"note: {what} has no checksum to verify (written before checksums)",
              file=sys.stderr)


def save(mngr: ocp.CheckpointManager, g_state: TrainState, d_state: TrainState,
         key: jax.Array, record: dict[str, Any] | None = None) -> None:
    """Saves both states and the key at step `d_state.step`, and the run's
    `record` (`run_record`) in its metadata; waits until written."""
    step = int(d_state.step)
    if step in mngr.all_steps():
        return
    payload = _payload(g_state, d_state, key)
    payload[DIGEST] = np.frombuffer(bytes.fromhex(digest(payload)), np.uint8)
    try:
        with _ORBAX_NOISE:
            mngr.save(step, args=ocp.args.StandardSave(payload),
                      custom_metadata={RECORD_KEY: record} if record else None)
            mngr.wait_until_finished()
    except Exception as e:  # noqa: BLE001 - a full disk is a ValueError in Orbax
        _remove_unfinished(str(mngr.directory))
        text = " ".join(str(e).split())[:200]
        raise CheckpointError(f"cannot save checkpoint {step} "
                              f"({type(e).__name__}: {text}); the previous "
                              "checkpoint is kept") from None


def _steps(workdir: str) -> list[int]:
    """The complete checkpoints' steps. Orbax saves into
    `<step>.orbax-checkpoint-tmp*` and renames the folder to `<step>` when
    complete; listing the names needs no Orbax manager, which would read every
    step's time and fail on one a live run just deleted."""
    try:
        names = os.listdir(os.path.join(workdir, CHECKPOINT_DIR))
    except OSError:
        return []
    return [int(name) for name in names if name.isdigit()]


def _newest_step(workdir: str) -> int | None:
    """The newest complete checkpoint's step (None: none)."""
    return max(_steps(workdir), default=None)


def _open_manager(workdir: str) -> ocp.CheckpointManager:
    """`manager(workdir)` for reading; a listing that fails (a step deleted
    while Orbax reads the steps' times) is a CheckpointError."""
    try:
        return manager(workdir)
    except OSError as e:
        raise CheckpointError(f"cannot list the checkpoints in {workdir}: "
                              f"{e.strerror or e}") from None


def _replaced(workdir: str, step: int | None) -> bool:
    """Whether checkpoint `step` is gone or going,
    a newer one in its place: Orbax deletes a step's files one by one."""
    if step is None:  # there was none: nothing to wait for
        return False
    return (not os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR, str(step)))
            or _newest_step(workdir) != step)


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
        config, problem = load_config(workdir), None
    except CheckpointError as e:  # the checkpoint's own record may stand in
        config, problem = None, e
    if not os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
        if problem is None and config is None:
            raise CheckpointError(f"{workdir} holds no {CONFIG_FILE}: not a "
                                  "train.py workdir")
        raise problem or CheckpointError(f"{workdir} holds no checkpoints yet")
    mngr = _open_manager(workdir)
    step = mngr.latest_step() if step is None else step
    if step is None:
        mngr.close()
        raise CheckpointError(f"{workdir} holds no complete checkpoint")
    if config is None:
        kept = checkpoint_record(workdir, step)
        if kept is None:
            mngr.close()
            raise problem or CheckpointError(f"{workdir} holds no {CONFIG_FILE}, and "
                                             f"checkpoint {step} no copy of it")
        config = config_from_record(kept[1])
    # The fresh states give the tree structure, shapes and dtypes to restore into.
    g_state, d_state = create_train_states(config, jax.random.key(0))
    key = jax.random.key(config.seed)
    target = _payload(g_state, d_state, key)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
        metadata = mngr.item_metadata(step)
        if metadata is not None and DIGEST in metadata:
            abstract[DIGEST] = jax.ShapeDtypeStruct((32,), np.uint8)
        # Refused before Orbax reads any array: its failed restores leave
        # TensorStore handles open.
        _check_fits(abstract, metadata, f"checkpoint {step} in {workdir}")
        with _ORBAX_NOISE:
            raw = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
        saved = raw.pop(DIGEST, None)
        if saved is None:
            _unverified(f"checkpoint {step} in {workdir}")
        elif bytes(np.asarray(saved, np.uint8)).hex() != digest(raw):
            raise CheckpointError(f"checkpoint {step} in {workdir} is damaged "
                                  "(its arrays do not match their checksum)")
        g_state = serialization.from_state_dict(g_state, {**raw["g"],
                                                          "ema": raw.get("ema", {})})
        d_state = serialization.from_state_dict(d_state, raw["d"])
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise many types.
        text = " ".join(str(e).split())[:200]
        raise CheckpointError(
            f"checkpoint {step} in {workdir} cannot be loaded "
            f"({type(e).__name__}: {text})") from None
    finally:
        mngr.close()
    return Restored(g_state, d_state, jax.random.wrap_key_data(raw["key"]),
                    int(d_state.step), config)


class _OrbaxNoise:
    """Drops the noise of a failed Orbax save or restore, and only that.

    When the first array fails to write (a full disk) or read (a missing data
    chunk), Orbax's other writes or reads are abandoned: their callbacks find
    the event loop closed and their coroutines are never awaited. Python
    reports each on stderr, as an "unraisable" exception or through asyncio's
    logger ("Task exception was never retrieved"), from other threads, during
    the call or later at garbage collection; Orbax's threads also log the
    error, traceback and all. Hundreds of lines around the one line that
    `save`/`restore` raise. Used as `with _ORBAX_NOISE:` around each call.

    - absl ERROR records from Orbax's files are dropped during a call only;
    - "Event loop is closed" unraisables and Orbax's never-awaited coroutines,
      during a call and, once one has failed, for good (else never);
    - never-retrieved Orbax/TensorStore task errors, always (none is ever ours
      to report).
    """

    def __init__(self):
        self.active = False   # inside a call: its noise starts before it raises
        self.failed = False   # a call failed: its leftovers may come any time
        self.installed = False

    def _absl(self, record: logging.LogRecord) -> bool:
        return not ("orbax" in record.pathname and record.levelno >= logging.ERROR)

    def _install(self) -> None:
        self.installed = True
        logging.getLogger("asyncio").addFilter(lambda record: not (
            "never retrieved" in (text := record.getMessage())
            and ("orbax" in text or "TensorStore" in text)))
        previous = sys.unraisablehook

        def hook(unraisable: Any) -> None:
            abandoned = (self.active or self.failed) and (
                (isinstance(unraisable.exc_value, RuntimeError)
                 and "Event loop is closed" in str(unraisable.exc_value))
                or "orbax" in repr(getattr(unraisable.object, "cr_code", "")))
            if not abandoned:
                previous(unraisable)

        sys.unraisablehook = hook

    def __enter__(self) -> None:
        if not self.installed:
            self._install()
        self.active = True
        logging.getLogger("absl").addFilter(self._absl)

    def __exit__(self, kind: Any, *_: Any) -> None:
        logging.getLogger("absl").removeFilter(self._absl)
        self.active = False
        self.failed = self.failed or kind is not None


_ORBAX_NOISE = _OrbaxNoise()


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


# --------------------------------------------------------------------------
# Generator weights: the few MB that sampling needs, in msgpack (no pickle).
# --------------------------------------------------------------------------


@dataclasses.dataclass
class GeneratorWeights:
    """A generator's variables and where they came from."""
    variables: dict[str, Any]  # {"params": ..., "batch_stats": ...}
    step: int
    config: Config
    averaged: bool = False  # the weight average (gan.ema), not G's own weights


def save_generator(path: str, variables: dict[str, Any], step: int,
                   config: Config, averaged: bool = False) -> None:
    """Writes G's variables, the step and the recipe to `path`, atomically.

    `averaged`: the variables are G's weight average (`gan.ema`); files from
    before it hold G's own weights and no such mark.
    """
    variables = jax.device_get(variables)
    payload = {"variables": variables, "step": step,
               "config": json.dumps(dataclasses.asdict(config)),
               "weights": "ema" if averaged else "raw", DIGEST: digest(variables)}
    data = serialization.msgpack_serialize(payload)
    files.write_atomically(path, lambda tmp: _write_bytes(tmp, data))


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _generator_template() -> dict[str, Any]:
    z = jax.ShapeDtypeStruct((1, NOISE_DIM), np.float32)
    labels = jax.ShapeDtypeStruct((1,), np.int32)
    return jax.eval_shape(lambda z, y: Generator().init(jax.random.key(0), z, y),
                          z, labels)


def load_generator(path: str) -> GeneratorWeights:
    """Reads a file written by `save_generator`.

    Raises:
      CheckpointError: unreadable, damaged, or not this model's generator.
    """
    try:
        with open(path, "rb") as f:
            raw = serialization.msgpack_restore(f.read())
        variables, step = raw["variables"], int(raw["step"])
        config = config_from_record(json.loads(raw["config"]))
        averaged = raw.get("weights", "raw") == "ema"
    except OSError as e:
        raise CheckpointError(f"cannot read generator weights {path}: "
                              f"{e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - msgpack raises many types.
        raise CheckpointError(f"{path} is not a generator weights file "
                              f"({type(e).__name__})") from None
    want = jax.tree.map(lambda a: (a.shape, np.dtype(a.dtype)), _generator_template())
    try:
        got = jax.tree.map(lambda a: (np.shape(a), np.asarray(a).dtype), variables)
    except Exception:  # noqa: BLE001
        got = None
    if want != got:
        raise CheckpointError(f"{path} does not hold this model's generator "
                              "(parameter names or shapes differ)")
    if DIGEST not in raw:
        _unverified(path)
    elif raw[DIGEST] != digest(variables):
        raise CheckpointError(f"{path} is damaged (its weights do not match their "
                              "checksum)")
    return GeneratorWeights(variables, step, config, averaged)


def load_sampler(path: str, raw: bool = False) -> GeneratorWeights:
    """Generator weights from a weights file or from a train.py workdir.

    A workdir gives G's weight average when its run keeps one (`gan.ema`), or
    with `raw` G's own weights. A file holds one or the other.

    Raises:
      CheckpointError: also when `raw` is asked of a file holding the average.
    """
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if os.path.isfile(path):
        weights = load_generator(path)
        if raw and weights.averaged:
            raise CheckpointError(
                f"{path} holds only the averaged (EMA) generator; for G's own "
                "weights pass the train.py workdir it came from")
        return weights
    for attempt in range(LIVE_RUN_ATTEMPTS):
        newest = None
        try:
            newest = _newest_step(path)
            restored = restore(path, newest)
            break
        except CheckpointError:
            # Again only if a live run replaced the step under us (`keep`).
            if attempt == LIVE_RUN_ATTEMPTS - 1 or not _replaced(path, newest):
                raise
            time.sleep(LIVE_RUN_PAUSE_S)
    g_state = restored.g_state
    variables = ema.sampling_variables(g_state, restored.config.ema_batch_stats, raw)
    return GeneratorWeights(variables, restored.step, restored.config,
                            averaged=bool(g_state.ema) and not raw)
