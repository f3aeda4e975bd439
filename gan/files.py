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
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable


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
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
