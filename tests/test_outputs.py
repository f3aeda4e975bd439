"""No output replaces a file the command reads or the shipped weights, named
directly, through a symlink, a hard link or `..` (issue 26): one line, exit 2,
the file untouched. An output path that is a symlink elsewhere is followed
(tests/test_files.py)."""

from __future__ import annotations

import os
import shutil

import pytest

import evaluate
import sample
from gan import cli, files, loop
from gan.config import Config, RunOptions
from gan.errors import TrainError
from gan.files import WEIGHTS_DIR
from tests.synthetic import block_digits, write_idx_arrays
from tests.test_cli import one_line_error, run

SHIPPED_GENERATOR = os.path.join(WEIGHTS_DIR, "generator.msgpack")
SHIPPED_CLASSIFIER = os.path.join(WEIGHTS_DIR, "mnist_classifier.msgpack")


def _refused(main, argv, capsys) -> str:
    """The one line a CLI's argument check fails with (in this process)."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], lines
    return lines[0]


def _sample_check(argv):
    sample.check_args(sample.parse_args(argv))


def _evaluate_check(argv):
    evaluate.main(argv)          # fails in its argument checks, before any JAX


@pytest.mark.slow
def test_the_reported_case_sample_out_through_a_symlink_to_the_shipped_generator(
        tmp_path):
    """As reported: `sample.py --number 12 --out evil.png` with evil.png a link to
    weights/generator.msgpack exited 0 and the generator became a PNG."""
    before = open(SHIPPED_GENERATOR, "rb").read()
    (tmp_path / "evil.png").symlink_to(SHIPPED_GENERATOR)
    try:
        result = run("sample.py", "--number", 12, "--out", tmp_path / "evil.png")
        line = one_line_error(result)
        assert "is the shipped weights file" in line and "symbolic link" in line
        assert open(SHIPPED_GENERATOR, "rb").read() == before
    finally:  # a broken guard must not cost the developer the file
        if open(SHIPPED_GENERATOR, "rb").read() != before:
            with open(SHIPPED_GENERATOR, "wb") as f:
                f.write(before)


@pytest.mark.parametrize("flag,target,extra", [
    ("--npz", SHIPPED_CLASSIFIER, ["--verify"]),   # the reported --npz case
    ("--out", SHIPPED_CLASSIFIER, []),
    ("--npz", SHIPPED_GENERATOR, []),
])
def test_sample_outputs_never_replace_the_shipped_weights(tmp_path, capsys, flag,
                                                          target, extra):
    name = "evil" + (".npz" if flag == "--npz" else ".png")
    (tmp_path / name).symlink_to(target)
    before = open(target, "rb").read()
    line = _refused(_sample_check, ["--number", "12", flag, str(tmp_path / name),
                                    *extra], capsys)
    assert f"{flag} {tmp_path / name} is the shipped weights file {target}" in line
    assert open(target, "rb").read() == before


@pytest.fixture
def workdir(tmp_path):
    """Stands in for a train.py workdir: sample.py reads every file in it."""
    folder = tmp_path / "run"
    (folder / "checkpoints" / "3").mkdir(parents=True)
    (folder / "generator.msgpack").write_bytes(b"generator")
    (folder / "checkpoints" / "3" / "state").write_bytes(b"state")
    return folder


@pytest.mark.parametrize("way", ["symlink", "hard link", "..", "symlinked folder"])
@pytest.mark.parametrize("inside", ["generator.msgpack", "checkpoints/3/state"])
def test_sample_outputs_never_replace_what_the_checkpoint_holds(
        tmp_path, capsys, workdir, way, inside):
    """The reported case was --out onto a workdir's generator.msgpack with
    --checkpoint on that workdir; the same for any file of it, by any name."""
    target = workdir / inside
    if way == "symlink":
        out = tmp_path / "o.png"
        out.symlink_to(target)
    elif way == "hard link":
        out = tmp_path / "o.png"
        os.link(target, out)
    elif way == "..":
        os.rename(target, str(target) + ".png")
        target = workdir / (inside + ".png")
        out = workdir / "checkpoints" / ".." / (inside + ".png")
    else:
        (tmp_path / "link").symlink_to(workdir)
        os.rename(workdir / inside, str(workdir / inside) + ".png")
        target = workdir / (inside + ".png")
        out = tmp_path / "link" / (inside + ".png")
    before = target.read_bytes()
    line = _refused(_sample_check, ["--checkpoint", str(workdir), "--number", "1",
                                    "--out", str(out)], capsys)
    assert f"--out {out} is {target}" in line and "which this command reads" in line
    assert target.read_bytes() == before


def test_sample_out_onto_the_checkpoint_file_itself(tmp_path, capsys):
    generator = tmp_path / "g.msgpack"
    generator.write_bytes(b"generator")
    (tmp_path / "link.png").symlink_to(generator)
    line = _refused(_sample_check, ["--checkpoint", str(generator), "--number", "1",
                                    "--out", str(tmp_path / "link.png")], capsys)
    assert f"is {generator} (through a symbolic link), which this command reads" in line
    assert generator.read_bytes() == b"generator"


def test_an_unrelated_existing_output_is_replaced_as_asked(tmp_path, workdir):
    (tmp_path / "old.png").write_bytes(b"old picture")
    _sample_check(["--checkpoint", str(workdir), "--number", "1",
                   "--out", str(tmp_path / "old.png")])          # no exit


@pytest.mark.parametrize("read", ["data", "classifier", "checkpoint"])
def test_evaluate_json_never_replaces_what_it_reads(tmp_path, capsys, read):
    write_idx_arrays(tmp_path, *block_digits(20))
    targets = {"data": tmp_path / "train-labels-idx1-ubyte.gz",
               "classifier": tmp_path / "c.msgpack", "checkpoint": tmp_path / "g.msgpack"}
    targets["classifier"].write_bytes(b"classifier")
    targets["checkpoint"].write_bytes(b"generator")
    (tmp_path / "evil.json").symlink_to(targets[read])
    before = targets[read].read_bytes()
    line = _refused(_evaluate_check, [
        "--data-dir", str(tmp_path), "--classifier", str(targets["classifier"]),
        "--checkpoint", str(targets["checkpoint"]), "--json",
        str(tmp_path / "evil.json")], capsys)
    assert f"is {targets[read]} (through a symbolic link), which this command reads" in line
    assert targets[read].read_bytes() == before


def test_as_a_normal_user_the_refusal_is_the_same(tmp_path, capsys, monkeypatch):
    """Root may write anywhere; a normal user may not write into weights/. The
    check is about which file a path is, made before any permission is
    consulted, so both get the same line. (The test runs as whoever runs
    pytest: CI runs as root; here the user's missing permission is simulated.)"""
    (tmp_path / "evil.png").symlink_to(SHIPPED_GENERATOR)
    argv = ["--number", "12", "--out", str(tmp_path / "evil.png")]
    as_is = _refused(_sample_check, argv, capsys)
    real_access = os.access
    monkeypatch.setattr(cli.os, "access", lambda p, mode: False if os.path.realpath(
        p).startswith(WEIGHTS_DIR) else real_access(p, mode))
    assert _refused(_sample_check, argv, capsys) == as_is


@pytest.mark.slow
@pytest.mark.parametrize("name,target", [
    ("grid.png", "shipped"), ("metrics.jsonl", "data"), (".lock", "shipped"),
    ("grids/epoch_001.png", "data"), ("generator.msgpack", "classifier")])
def test_train_never_writes_over_what_it_reads(tmp_path, monkeypatch, name, target):
    """A workdir file that is a link (or hard link) to the shipped weights, the
    training data or the eval classifier: refused before anything is written.
    (A stand-in for weights/: a broken guard must not cost the real files.)"""
    shipped_dir = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, shipped_dir)
    monkeypatch.setattr(files, "WEIGHTS_DIR", str(shipped_dir))
    data_dir = tmp_path / "mnist"
    data_dir.mkdir()
    write_idx_arrays(data_dir, *block_digits(20))
    clf = tmp_path / "clf.msgpack"
    shutil.copy(SHIPPED_CLASSIFIER, clf)
    path = {"shipped": str(shipped_dir / "generator.msgpack"), "classifier": str(clf),
            "data": str(data_dir / "train-images-idx3-ubyte.gz")}[target]
    workdir = tmp_path / "run"
    (workdir / "grids").mkdir(parents=True)
    if target == "shipped":
        (workdir / name).symlink_to(path)
    else:
        os.link(path, workdir / name)
    before = open(path, "rb").read()
    with pytest.raises(TrainError, match=f"{workdir / name} is .*; the run would "
                       "write over it"):
        loop.train_and_evaluate(Config(batch_size=10), RunOptions(
            workdir=str(workdir), data_dir=str(data_dir), max_steps=1,
            eval_every=1, classifier=str(clf), progress=False))
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(workdir)) == sorted({"grids", name.split("/")[0]})
