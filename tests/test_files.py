"""gan.files.write_atomically: the one way the project writes a file."""

from __future__ import annotations

import errno
import os

import pytest

from gan import files
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


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A stand-in for weights/ (the real files stay untouched) holding one file."""
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "generator.msgpack").write_bytes(b"shipped")
    monkeypatch.setattr(files, "WEIGHTS_DIR", str(folder))
    return folder / "generator.msgpack"


@pytest.mark.parametrize("way", ["its name", "..", "a symlink", "a symlinked folder",
                                 "a hard link"])
def test_no_write_replaces_the_shipped_weights_by_any_name(tmp_path, shipped, way):
    out = tmp_path / "out"
    out.mkdir()
    if way == "its name":
        path = shipped
    elif way == "..":
        path = out / ".." / "weights" / "generator.msgpack"
    elif way == "a symlink":
        path = out / "evil.png"
        path.symlink_to(shipped)
    elif way == "a symlinked folder":
        (out / "w").symlink_to(shipped.parent)
        path = out / "w" / "generator.msgpack"
    else:
        path = out / "evil.png"
        os.link(shipped, path)
    with pytest.raises(OSError, match="is the shipped weights file .* no output "
                       "replaces the shipped weights"):
        write_atomically(path, _text("png"))
    assert shipped.read_bytes() == b"shipped"
    assert not [p for p in os.listdir(shipped.parent) if p.endswith(".tmp")]


def test_the_real_shipped_weights_are_protected_through_a_symlink(tmp_path):
    """Asked, not written: a broken guard must not cost a developer the files."""
    shipped = files.shipped_files()
    assert sorted(os.path.basename(p) for p in shipped) == [
        "generator.msgpack", "mnist_classifier.msgpack"]
    for path in shipped:
        link = tmp_path / (os.path.basename(path) + ".png")
        link.symlink_to(path)
        assert "is the shipped weights file" in files.not_replaceable(link)


def test_an_input_is_found_by_any_name_but_a_new_file_replaces_nothing(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.gz").write_bytes(b"digits")
    (tmp_path / "link.npz").symlink_to(data / "train.gz")
    os.link(data / "train.gz", tmp_path / "hard.npz")
    for path, how in ((tmp_path / "link.npz", "through a symbolic link"),
                      (tmp_path / "hard.npz", "a hard link of it"),
                      (data / ".." / "data" / "train.gz", None)):
        problem = files.overwrite_problem(path, [str(data)])
        assert problem.startswith(f"is {data / 'train.gz'}") and problem.endswith(
            "which this command reads"), problem
        assert (how or "(") in problem if how else "(" not in problem
    assert files.overwrite_problem(tmp_path / "new.npz", [str(data)]) is None
    (tmp_path / "other.npz").write_bytes(b"x")
    assert files.overwrite_problem(tmp_path / "other.npz", [str(data)]) is None
