"""Which data a run trains on, and its classes: `--dataset` names one.

- `mnist` (the default): the seed's digits, from TFDS or IDX files (`gan.data`);
- a TFDS classification set of 28x28 grayscale images (`fashion_mnist`,
  `kmnist`, `emnist/letters`, `emnist/balanced`, ...), from TFDS or its IDX
  files in `data_dir`; classes named as TFDS names them (`gan.data.tfds_classes`);
- `folder:PATH`: your own labelled pictures, a subfolder per class
  (`gan.image_folder`); `data_dir` is not used.

Every split comes as `Labelled`: uint8 images `[N, 28, 28]`, int32 labels
`[N]` and the class names. Class names are what generator files, checkpoints
and the command lines speak in; digits are the classes "0" to "9".
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from gan import data, image_folder
from gan.data import DataError, Shard

MNIST = "mnist"
FOLDER = "folder:"
# The classes of MNIST: a dataset with exactly these writes numbers.
DIGITS = tuple(str(d) for d in range(10))


@dataclasses.dataclass
class Labelled:
    """One split of a dataset."""
    name: str                     # the dataset, as `check_name` gives it
    images: np.ndarray            # uint8 [N, 28, 28], light on dark
    labels: np.ndarray            # int32 [N], indices into `classes`
    classes: tuple[str, ...]
    skipped: int = 0              # unreadable files left out (folders)

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.images, self.labels


def check_name(name: Any) -> str:
    """`name` as a run records it (a folder's path made absolute); DataError
    for a name that cannot be one."""
    if not isinstance(name, str) or not name.strip():
        raise DataError("`dataset` must be mnist, a TFDS name such as fashion_mnist, "
                        f"or folder:PATH, got {name!r}")
    if name.startswith(FOLDER):
        path = name[len(FOLDER):]
        if not path:
            raise DataError("`dataset` folder: needs a path, e.g. folder:~/letters")
        return FOLDER + os.path.abspath(os.path.expanduser(path))
    return name


def folder_of(name: str) -> str | None:
    """The folder of a `folder:PATH` dataset, None for the others."""
    return name[len(FOLDER):] if name.startswith(FOLDER) else None


def load(name: str, data_dir: str | None, split: str = "train", *,
         download: bool = True, shard: Shard | None = None) -> Labelled:
    """One split (or its `shard`) of dataset `name` (`check_name`).

    Raises:
      DataError: one line, for any data problem.
    """
    name = check_name(name)
    data.idx_file_names(split)  # checks the split
    folder = folder_of(name)
    if folder is not None:
        found = image_folder.read(folder)
        images, labels = found.split(split)
        start, stop = data.shard_range(len(labels), shard)
        return Labelled(name, images[start:stop], labels[start:stop], found.classes,
                        len(found.skipped))
    classes = data.tfds_classes(name)
    images, labels = data.load_mnist(data_dir, split, download, shard, name=name)
    return Labelled(name, images, labels, classes)


def source_files(name: str, data_dir: str | None) -> list[str]:
    """What loading `name` reads, for outputs to keep clear of."""
    name = check_name(name)
    folder = folder_of(name)
    return [folder] if folder is not None else data.source_files(data_dir, name)


def inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies under it (symlinks resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def is_digits(classes: Sequence[str]) -> bool:
    """Whether these classes are the digits 0-9 in order (numbers can be written)."""
    return tuple(classes) == DIGITS


def class_index(classes: Sequence[str], wanted: Any) -> int:
    """The index of a class given by name, or else by index (an int or its
    text); ValueError naming the classes otherwise."""
    classes = tuple(classes)
    if isinstance(wanted, str) and wanted in classes:
        return classes.index(wanted)
    if isinstance(wanted, (int, np.integer)) and not isinstance(wanted, bool):
        index = int(wanted)
    elif isinstance(wanted, str) and wanted.strip().isdigit():
        index = int(wanted.strip())
    else:
        index = -1
    if 0 <= index < len(classes):
        return index
    raise ValueError(f"no class {wanted!r:.40}: the classes are {describe(classes)} "
                     f"(names, or indices 0-{len(classes) - 1})")


def data_line(found: Labelled) -> str:
    """What a run trains on, said at its start: `data: folder:/x, 3 classes
    (bar, cross, ring), 30 training images, 1 unreadable file skipped`."""
    line = (f"data: {found.name}, {len(found.classes)} classes "
            f"({describe(found.classes)}), "
            f"{len(found.labels):,} training images")
    if found.skipped:
        line += f", {found.skipped} unreadable file{'s' * (found.skipped > 1)} skipped"
    return line


def describe(classes: Sequence[str], most: int = 12) -> str:
    """The class names as a short text: `T-shirt/top, Trouser, ... (10)`."""
    classes = tuple(classes)
    shown = ", ".join(classes[:most])
    return shown + (f", ... ({len(classes)})" if len(classes) > most else "")
