"""Your own labelled images: a folder with one subfolder per class (the
ImageFolder layout of torchvision), read into the arrays a run trains on.

    letters/
      A/  a1.png  scan_002.jpg ...
      B/  ...

How a picture becomes a 28x28 training image (docs/datasets.md):
- grayscale (transparent pixels count as white paper);
- light on dark, as MNIST: a picture whose border is mostly light (its median
  above mid-grey) is inverted, so dark ink on white paper becomes white on black;
- its longer side scaled to 28 px (Lanczos), aspect kept, the shorter side
  padded with black to 28, centred; a 28x28 picture is kept as it is.

Classes are the subfolders' names, sorted; within a class, files are read in
sorted order of their paths (subfolders included), so the same folder always
gives the same arrays. Every TEST_EVERY-th picture of a class is its test split
(for the judging classifier and the Frechet reference); the rest train. Phone
photos are turned upright as their EXIF orientation says.
Names starting with "." are ignored. A file pillow cannot read is skipped and
counted; past MAX_SKIPPED_SHARE of the files the folder is refused.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gan.data import IMAGE_SIZE, DataError
from gan.errors import one_line

# At most this many classes (D and G take one input per class).
MAX_CLASSES = 100
# At most this share of a folder's files may be unreadable (skipped).
MAX_SKIPPED_SHARE = 0.1
# Picture i of a class (in sorted order) is a test picture when i % TEST_EVERY
# is TEST_EVERY - 1: a sixth of each class (MNIST keeps a seventh, 10,000 of
# 70,000). A class needs at least TEST_EVERY pictures, to have a test one.
TEST_EVERY = 6
# Larger pictures are not decoded (pillow's own bomb limit is 89 MP).
MAX_PIXELS = 16_777_216


@dataclasses.dataclass
class FolderData:
    """A folder's pictures as training arrays."""
    images: np.ndarray             # uint8 [N, 28, 28], light on dark
    labels: np.ndarray             # int32 [N], indices into `classes`
    classes: tuple[str, ...]       # subfolder names, sorted
    test: np.ndarray               # bool [N]: in the test split
    skipped: list[str]             # files that could not be read

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of "train" or "test"."""
        keep = self.test if split == "test" else ~self.test
        return self.images[keep], self.labels[keep]


def class_folders(path: str) -> list[str]:
    """The class subfolders' names, sorted; DataError for a folder that
    cannot hold a dataset (missing, no subfolders, one class, too many)."""
    if not os.path.isdir(path):
        problem = "is not a folder" if os.path.exists(path) else "does not exist"
        raise DataError(f"Dataset folder {path} {problem}.")
    try:
        names = sorted(n for n in os.listdir(path) if not n.startswith(".")
                       and os.path.isdir(os.path.join(path, n)))
    except OSError as e:
        raise DataError(f"Dataset folder {path} cannot be read ({one_line(e)}).") from None
    if not names:
        raise DataError(f"Dataset folder {path} holds no class subfolders: put each "
                        "class's pictures in a subfolder named after it.")
    if len(names) < 2:
        raise DataError(f"Dataset folder {path} holds one class ({names[0]}); a "
                        "conditional GAN needs at least 2 class subfolders.")
    if len(names) > MAX_CLASSES:
        raise DataError(f"Dataset folder {path} holds {len(names)} class subfolders; "
                        f"at most {MAX_CLASSES} are supported.")
    return names


def _files(folder: str) -> list[str]:
    """Every file under `folder`, sorted by path, hidden names left out."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(root, n) for n in names if not n.startswith(".")]
    return sorted(found)


def read(path: str) -> FolderData:
    """Every picture of a dataset folder, converted (see the module's doc).

    Raises:
      DataError: one line, for what `class_folders` refuses, a class without a
        readable picture, or more than MAX_SKIPPED_SHARE unreadable files.
    """
    path = os.path.expanduser(path)
    classes = class_folders(path)
    images, labels, test, skipped, total = [], [], [], [], 0
    for label, name in enumerate(classes):
        files = _files(os.path.join(path, name))
        total += len(files)
        read_here = 0
        for file in files:
            picture = convert_file(file)
            if picture is None:
                skipped.append(file)
                continue
            images.append(picture)
            labels.append(label)
            test.append(read_here % TEST_EVERY == TEST_EVERY - 1)
            read_here += 1
        if not read_here:
            raise DataError(f"Class {name} in {path} has no picture pillow can read "
                            f"({len(files)} file(s) tried).")
        if read_here < TEST_EVERY:
            raise DataError(f"Class {name} in {path} has {read_here} readable "
                            f"picture(s); at least {TEST_EVERY} are needed (one in "
                            f"{TEST_EVERY} is kept for testing).")
    if len(skipped) > MAX_SKIPPED_SHARE * total:
        raise DataError(f"Dataset folder {path}: {len(skipped)} of {total} files are not "
                        f"pictures pillow can read (e.g. {skipped[0]}); at most "
                        f"{MAX_SKIPPED_SHARE:.0%} may be skipped.")
    return FolderData(np.stack(images), np.asarray(labels, np.int32), tuple(classes),
                      np.asarray(test, bool), skipped)


def convert_file(file: str) -> np.ndarray | None:
    """uint8 `[28, 28]` from a picture file (`convert`), None when pillow cannot
    read it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as picture:
                if picture.width * picture.height > MAX_PIXELS:
                    return None
                picture.load()
                # A phone photo's pixels may be stored turned: EXIF says how.
                return convert(ImageOps.exif_transpose(picture))
    except (UnidentifiedImageError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, OSError, SyntaxError, ValueError):
        return None  # pillow's errors for damaged or foreign files


def convert(picture: Image.Image) -> np.ndarray:
    """A picture as a training image: uint8 `[28, 28]`, grayscale, light on
    dark, aspect kept (see the module's doc)."""
    if "A" in picture.getbands() or picture.mode == "P":
        paper = Image.new("RGBA", picture.size, "white")       # transparent = paper
        picture = Image.alpha_composite(paper, picture.convert("RGBA"))
    gray = picture.convert("L")
    array = np.asarray(gray)
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    if np.median(border) > 127:                                 # dark on light
        gray = Image.fromarray(255 - array)
    if gray.size == (IMAGE_SIZE, IMAGE_SIZE):
        return np.asarray(gray, np.uint8)
    w, h = gray.size
    scale = IMAGE_SIZE / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = gray.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    canvas.paste(small, ((IMAGE_SIZE - size[0]) // 2, (IMAGE_SIZE - size[1]) // 2))
    return np.asarray(canvas, np.uint8)
