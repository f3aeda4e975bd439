"""gan.files.write_atomically: the one way the project writes a file."""

from __future__ import annotations

import errno
import os

import pytest

from gan.files import write_atomically


def _text(content: str):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(content)
    return write


def test_a_symlink_is_written_through_to_its_target(tmp_path):
    target, link = tmp_path / "target.txt", tmp_path / "link.txt"
    target.write_text("old")
    link.symlink_to(target)
    write_atomically(link, _text("new"))
    assert link.is_symlink() and target.read_text() == "new"


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_what_is_not_a_regular_file_is_refused(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    elif kind == "folder":
        path = tmp_path / "dir"
        path.mkdir()
    else:
        path = "/dev/null"
    before = os.stat(path)
    with pytest.raises(OSError, match="regular|folder"):
        write_atomically(path, _text("x"))
    assert os.stat(path).st_mode == before.st_mode
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_an_existing_mode_is_kept_and_a_new_file_gets_the_umask(tmp_path):
    old = tmp_path / "old.txt"
    old.write_text("x")
    os.chmod(old, 0o600)
    write_atomically(old, _text("y"))
    assert os.stat(old).st_mode & 0o777 == 0o600
    new = tmp_path / "new.txt"
    write_atomically(new, _text("y"))
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(new).st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    """A full disk (ENOSPC injected) or an interrupt mid-write."""
    path = tmp_path / "keep.txt"
    path.write_text("old")

    def full_disk(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    for failure in (full_disk, lambda tmp: (_ for _ in ()).throw(KeyboardInterrupt)):
        with pytest.raises((OSError, KeyboardInterrupt)):
            write_atomically(path, failure)
        assert path.read_text() == "old"
        assert os.listdir(tmp_path) == ["keep.txt"]
