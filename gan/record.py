"""A run's record: its recipe (`Config`) and a fingerprint of its training
data. The workdir keeps it in `config.json` and each checkpoint keeps a copy
(`gan.checkpoint`), so a resumed run is checked to be the same run, and a lost
`config.json` is restored from the newest checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from gan import files
from gan.config import Config, recipe_fields
from gan.datasets import DIGITS, MNIST, describe
from gan.errors import CheckpointError, TrainError

CONFIG_FILE = "config.json"
# The key of the training data's fingerprint (`gan.data.fingerprint`).
DATA_KEY = "training_data"
# The keys of the dataset's name (`--dataset`) and its class names; records
# from before them are MNIST's.
DATASET_KEY = "dataset"
CLASSES_KEY = "classes"

# Saved configs from before the weight average had none: they read as 0.
LEGACY_FIELDS = {"ema_decay": 0.0}


def make(config: Config, data_fingerprint: dict[str, Any] | None = None,
         dataset: str = MNIST, classes: tuple[str, ...] = DIGITS) -> dict[str, Any]:
    """What identifies a run: its config's fields, its data's fingerprint, the
    dataset's name and its class names."""
    record = dataclasses.asdict(config)
    if data_fingerprint is not None:
        record[DATA_KEY] = data_fingerprint
    record[DATASET_KEY], record[CLASSES_KEY] = dataset, list(classes)
    return record


def classes_of(record: dict[str, Any]) -> tuple[str, ...]:
    """The class names of a run's record (MNIST's digits in older records)."""
    return check_classes(record.get(CLASSES_KEY))


def dataset_of(record: dict[str, Any]) -> str:
    """The dataset name of a run's record (`mnist` in older records)."""
    return str(record.get(DATASET_KEY) or MNIST)


def check_classes(classes: Any) -> tuple[str, ...]:
    """Saved class names as a tuple (None: MNIST's digits); ValueError unless
    they are at least two distinct texts."""
    if classes is None:
        return DIGITS
    if (not isinstance(classes, list) or len(classes) < 2
            or not all(isinstance(c, str) for c in classes)
            or len(set(classes)) != len(classes)):
        raise ValueError(f"holds class names {classes!r:.80}, not a list of distinct "
                         "texts")
    return tuple(classes)


def save(workdir: str, record: dict[str, Any] | Config) -> None:
    """Writes config.json (a record from `make`, or a bare config), atomically."""
    record = record if isinstance(record, dict) else make(record)
    files.write_bytes(os.path.join(workdir, CONFIG_FILE),
                      json.dumps(record, indent=2).encode())


def load(workdir: str) -> dict[str, Any] | None:
    """The record in `workdir`'s config.json (checked), None when there is none.

    Raises:
      CheckpointError: unreadable, or not a run's record.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
        check(record)
        return record
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None


def load_config(workdir: str) -> Config | None:
    """The config saved in `workdir`, or None when there is none."""
    record = load(workdir)
    return None if record is None else config_of(record)


def check(record: Any) -> None:
    """Raises ValueError (or TypeError) unless `record` is a run's record: a
    valid config, and a data fingerprint with an image count if any."""
    config_of(record)
    check_classes(record.get(CLASSES_KEY))
    data = record.get(DATA_KEY)
    if data is not None and not (isinstance(data, dict)
                                 and isinstance(data.get("examples"), int)):
        raise ValueError(f"`{DATA_KEY}` holds {data!r}, not a data fingerprint")


def config_of(fields: dict[str, Any]) -> Config:
    """A Config from a run's record or other saved fields; fields this version
    does not know (older ones too, such as `log_every`) are dropped."""
    if not isinstance(fields, dict):
        raise ValueError(f"holds {type(fields).__name__}, not a config")
    known = {f.name for f in dataclasses.fields(Config)}
    fields = {**LEGACY_FIELDS, **{k: v for k, v in fields.items() if k in known}}
    if "ema_compare" in fields:  # a JSON list
        fields["ema_compare"] = tuple(fields["ema_compare"])
    return Config(**fields)  # checks the values (ConfigError is a ValueError)


def check_continues(workdir: str, saved: dict[str, Any], record: dict[str, Any]
                    ) -> None:
    """Raises TrainError unless `record` continues the run `saved` describes:
    the same recipe fields, and the same training data."""
    old, new = config_of(saved), config_of(record)
    changed = [f for f in recipe_fields() if getattr(old, f) != getattr(new, f)]
    if changed:
        names = ", ".join(f"`{f}` {getattr(old, f)}" for f in changed)
        hint = (" (no weight average: set `ema_decay` 0)"
                if "ema_decay" in changed and not old.ema_decay else "")
        raise TrainError(f"{workdir} holds a run with {names}{hint}; resume it "
                         "with those values or use a new `workdir`")
    if classes_of(saved) != classes_of(record):
        raise TrainError(f"{workdir} holds a run on other classes "
                         f"({describe(classes_of(saved))}; `dataset` "
                         f"{dataset_of(record)} has {describe(classes_of(record))}); "
                         "resume it on its own data or use a new `workdir`")
    was, now = saved.get(DATA_KEY), record.get(DATA_KEY)
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
