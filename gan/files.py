"""Every file the project writes goes through `write_atomically` (bytes
already in memory: `write_bytes`). Not through it, by design: the append-only
`metrics.jsonl` and TensorBoard event files of a run (`gan.reporting`: a kill
loses at most a partial last line, dropped on resume), the run's `.lock`, and
Orbax's checkpoints (Orbax writes a temp folder and renames it).

The new content goes to a temp file beside the target, which is renamed onto it:
a kill or a full disk mid-write leaves the old file whole and no temp file
behind. A symlink is written through to its target (as `cp` does). A target
that exists and is not a regular file (device, pipe, folder) is refused,
since a rename would replace it. The target keeps an existing file's mode, and
a new file gets 0666 minus the umask (0644 usually), not mkstemp's 0600.

No output replaces the shipped weights (`WEIGHTS_DIR`), named directly, through
a symlink or `..`, or as a hard link of one (`same_file_as`); the command-line
tools also refuse outputs that are a file they read (`overwrite_problem`).
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Iterable

# The weights shipped with the repository (the pretrained generator and the
# judging classifier): read by every tool, replaced by none.
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "weights")


def write_atomically(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Calls `write(tmp_path)`, then renames the temp file onto `path`.

    Raises:
      OSError: the target cannot be replaced (e.g. `IsADirectoryError`, or
        `OSError(EINVAL)` for a device or pipe), or the write failed; no temp
        file is left either way.
    """
    path = os.path.realpath(os.fspath(path))  # through symlinks, to their target
    problem = not_replaceable(path)
    if problem:
        raise OSError(f"{path} {problem}")
    mode = (os.stat(path).st_mode & 0o7777 if os.path.exists(path)
            else 0o666 & ~_umask())
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp", dir=os.path.dirname(path))
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:  # a Ctrl-C mid-write leaves no temp file either
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes `data` to `path` atomically (`write_atomically`)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    write_atomically(path, write)


def not_replaceable(path: str | os.PathLike[str]) -> str | None:
    """Why an existing `path` must not be replaced by a file, or None."""
    if os.path.isdir(path):
        return "is a folder"
    if os.path.exists(path) and not os.path.isfile(path):
        return ("is not a regular file (a device, pipe or socket); outputs replace "
                "files only")
    return overwrite_problem(path)


def overwrite_problem(path: str | os.PathLike[str],
                      reads: Iterable[str | os.PathLike[str] | None] = ()) -> str | None:
    """Why writing `path` would destroy a file that must stay: the shipped
    weights, or one of `reads` (files, or folders standing for every file in
    them: what the command reads). None when it would not."""
    shipped = same_file_as(path, shipped_files())
    if shipped:
        return (f"is the shipped weights file {shipped}{_how(path, shipped)}; no "
                "output replaces the shipped weights")
    read = same_file_as(path, [r for r in reads if r])
    if read:
        return f"is {read}{_how(path, read)}, which this command reads"
    return None


def shipped_files() -> list[str]:
    """The files in `WEIGHTS_DIR`."""
    try:
        return [os.path.join(WEIGHTS_DIR, name) for name in sorted(os.listdir(WEIGHTS_DIR))]
    except OSError:
        return []


def same_file_as(path: str | os.PathLike[str],
                 candidates: Iterable[str | os.PathLike[str]]) -> str | None:
    """The first file among `candidates` (folders: every file in them, at any
    depth) that `path` is, named directly, through symlinks or `..`, or as a
    hard link of it (the same device and inode); None for a path that does not
    exist yet, which replaces nothing."""
    try:
        target = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    for candidate in candidates:
        for file in _files_in(os.path.expanduser(os.fspath(candidate))):
            try:
                st = os.stat(file)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                return file
    return None


def _files_in(path: str) -> Iterable[str]:
    if not os.path.isdir(path):
        yield path
        return
    for folder, _, names in os.walk(path):
        for name in names:
            yield os.path.join(folder, name)


def _how(path: str | os.PathLike[str], same: str) -> str:
    """How `path` reaches the file `same`, when not by its own name."""
    if os.path.realpath(path) != os.path.realpath(same):
        return " (a hard link of it)"
    if os.path.realpath(path) != os.path.abspath(path):  # abspath folds `..`
        return " (through a symbolic link)"
    return ""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
