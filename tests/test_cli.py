"""train.py and sample.py end to end, as a user runs them, on tiny IDX data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gan import data
from tests import conftest
from tests.synthetic import block_digits, idx_bytes, write, write_idx_arrays

# Left out of the quick loop (`pytest -m "not slow"`): runs of the command-line tools.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The run's XLA compilation cache (tests/conftest.py), shared by every process.
SHARED_CACHE = os.environ[conftest.CACHE_ENV]


def run(script, *args, cache=SHARED_CACHE):
    env = dict(os.environ, GAN_COMPILE_CACHE=str(cache), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)


def one_line_error(result):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workdir after `train.py --max-steps 2`, then resumed to step 3."""
    tmp = tmp_path_factory.mktemp("cli")
    data_dir = tmp / "mnist"
    data_dir.mkdir()
    write_idx_arrays(data_dir, *block_digits(50))
    write_idx_arrays(data_dir, *block_digits(40, seed=1), split="test")
    workdir, cache = tmp / "run", SHARED_CACHE
    first = run("train.py", "--workdir", workdir, "--data-dir", data_dir,
                "--batch-size", 10, "--max-steps", 2, "--log-every", 1, cache=cache)
    assert first.returncode == 0, first.stderr
    second = run("train.py", "--workdir", workdir, "--data-dir", data_dir,
                 "--batch-size", 10, "--max-steps", 3, "--log-every", 1, cache=cache)
    assert second.returncode == 0, second.stderr
    # One line says what each run is: devices, batch, steps, fresh or resumed.
    assert ("training on 1 cpu device, 1 process: batch 10 (10 per device), "
            "steps 1-2 of 150 (5 per epoch), fresh start") in first.stderr
    assert "steps 3-3 of 150 (5 per epoch), resuming from step 2" in second.stderr
    return tmp, workdir, data_dir, cache


def test_train_writes_every_output_and_resumes(trained):
    _, workdir, _, _ = trained
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "3"]
    records = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
    assert [r["step"] for r in records] == [1, 2, 3]         # resumed, not restarted
    assert {"d_loss", "g_loss", "lr", "epoch"} <= set(records[0])
    assert records[0]["lr"] == pytest.approx(2e-4)
    config = json.load(open(workdir / "config.json"))
    assert config["batch_size"] == 10
    with Image.open(workdir / "grid.png") as grid:
        assert grid.size[0] == grid.size[1] > 280           # 10x10 tiles, scaled
    with Image.open(workdir / "losses.png") as curve:
        assert curve.size[0] > 100
    assert os.path.exists(workdir / "generator.msgpack")     # what sampling needs


def test_epoch_ends_write_grids_and_gif(tmp_path):
    data_dir = tmp_path / "mnist"
    data_dir.mkdir()
    write_idx_arrays(data_dir, *block_digits(20))
    workdir = tmp_path / "run"
    result = run("train.py", "--workdir", workdir, "--data-dir", data_dir,
                 "--batch-size", 10, "--epochs", 2)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(workdir / "grids")) == ["epoch_001.png", "epoch_002.png"]
    with Image.open(workdir / "progress.gif") as gif:
        assert gif.n_frames == 2
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]


def test_sample_writes_grid_and_npz(trained):
    tmp, workdir, _, cache = trained
    out, npz = tmp / "x.png", tmp / "x.npz"
    result = run("sample.py", "--checkpoint", workdir, "--digits", "2026",
                 "--per-digit", 3, "--scale", 1, "--out", out, "--npz", npz,
                 cache=cache)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as grid:
        assert grid.size == (3 * 28 + 4 * 2, 4 * 28 + 5 * 2)  # 2-px separators
    data = np.load(npz)
    assert data["images"].shape == (12, 28, 28) and data["images"].dtype == np.uint8
    np.testing.assert_array_equal(data["labels"], np.repeat([2, 0, 2, 6], 3))
    # Same seed, same digits: the same images (eval-mode BatchNorm, explicit keys).
    again = run("sample.py", "--checkpoint", workdir, "--digits", "2026",
                "--per-digit", 3, "--out", tmp / "y.png", "--npz", tmp / "y.npz",
                cache=cache)
    assert again.returncode == 0
    np.testing.assert_array_equal(np.load(tmp / "y.npz")["images"], data["images"])


@pytest.mark.parametrize("args,words", [
    (["--digits", "12a"], "digits"),
    (["--digits", ""], "digits"),
    (["--per-digit", "0"], "per-digit"),
    (["--per-digit", "100000000"], "--per-digit must be a whole number between 1 and "
                                   "10000"),
    (["--out", "/nonexistent-dir/x.png"], "does not exist"),
    (["--npz", "/nonexistent-dir/x.npz"], "does not exist"),
])
def test_sample_bad_arguments(trained, args, words):
    tmp, workdir, _, cache = trained
    result = run("sample.py", "--checkpoint", workdir, "--out", tmp / "bad.png",
                 *args, cache=cache)
    assert words in one_line_error(result)
    assert not (tmp / "bad.png").exists()


def test_sample_missing_checkpoint(tmp_path):
    result = run("sample.py", "--checkpoint", tmp_path / "nope", "--out",
                 tmp_path / "a.png")
    assert "nope" in one_line_error(result)


# Runs train.py in a process whose sockets cannot connect: no network, whatever
# the machine has.
OFFLINE = ("import socket, runpy, sys\n"
           "def refuse(*a, **k): raise OSError('network off in this test')\n"
           "socket.create_connection = refuse\n"
           "socket.socket.connect = refuse\n"
           "sys.argv = sys.argv[1:]\n"
           "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def test_train_without_data_names_both_ways_to_supply_it(tmp_path):
    """No IDX files, no TFDS copy, no network (sockets refused, proxies unset):
    one line naming --data-dir/TFDS_DATA_DIR and the IDX files."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE, os.path.join(ROOT, "train.py"), "--workdir",
         str(tmp_path / "run"), "--data-dir", str(empty), "--max-steps", "1"],
        capture_output=True, text=True, timeout=600,
        env=dict(env, GAN_COMPILE_CACHE=SHARED_CACHE, JAX_PLATFORMS="cpu"))
    line = one_line_error(result)
    assert "TFDS_DATA_DIR" in line and "IDX" in line and "no network" in line


def test_train_refuses_to_resume_with_another_recipe(trained):
    _, workdir, data_dir, cache = trained
    result = run("train.py", "--workdir", workdir, "--data-dir", data_dir,
                 "--batch-size", 5, "--max-steps", 4, cache=cache)
    assert "--batch-size 10" in one_line_error(result)
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "3"]


@pytest.mark.parametrize("damage", ["truncate", "delete_config", "empty_dir"])
def test_sample_damaged_checkpoint_is_one_line_error(trained, tmp_path, damage):

    _, workdir, _, cache = trained
    broken = tmp_path / "broken"
    shutil.copytree(workdir, broken)
    if damage == "truncate":
        for root, _, files in os.walk(broken / "checkpoints" / "3"):
            for name in files:
                if "ocdbt.process_0" in root and os.sep + "d" in root:
                    path = os.path.join(root, name)
                    with open(path, "r+b") as f:
                        f.truncate(10)
    elif damage == "delete_config":
        # and the copy a checkpoint keeps (as in checkpoints from before it)
        os.remove(broken / "config.json")
        meta = broken / "checkpoints" / "3" / "_CHECKPOINT_METADATA"
        meta.write_text(json.dumps({**json.loads(meta.read_text()),
                                    "custom_metadata": {}}))
    else:
        shutil.rmtree(broken)
        broken.mkdir()
    result = run("sample.py", "--checkpoint", broken, "--out", tmp_path / "o.png",
                 cache=cache)
    assert str(broken) in one_line_error(result)
    assert not (tmp_path / "o.png").exists()


def test_sigkill_then_resume_equals_straight_run(trained, tmp_path):
    """SIGKILL at an arbitrary moment loses at most one checkpoint interval, and
    resuming reproduces the uninterrupted run bit for bit."""
    import signal
    import time

    import jax
    from gan import checkpoint

    _, _, data_dir, cache = trained
    env = dict(os.environ, GAN_COMPILE_CACHE=str(cache), JAX_PLATFORMS="cpu")
    args = ["--data-dir", str(data_dir), "--batch-size", "10", "--log-every", "1",
            "--checkpoint-every", "2", "--no-progress"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"),
                             "--workdir", str(killed), "--max-steps", "1000", *args],
                            env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = killed / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 7:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = checkpoint.restore(str(killed)).step
    assert saved >= 4                                  # at most one interval lost
    for workdir in (killed, tmp_path / "straight"):
        result = run("train.py", "--workdir", workdir, "--max-steps", 12, *args,
                     cache=cache)
        assert result.returncode == 0, result.stderr
    a = checkpoint.restore(str(killed))
    b = checkpoint.restore(str(tmp_path / "straight"))
    assert a.step == b.step == 12
    assert len(a.g_state.ema) == 1                     # the average resumes exactly too
    for x, y in zip(jax.tree.leaves((a.g_state, a.d_state)),
                    jax.tree.leaves((b.g_state, b.d_state))):
        np.testing.assert_array_equal(x, y)
    steps = [json.loads(l)["step"] for l in open(killed / "metrics.jsonl")]
    assert steps == list(range(1, 13))                 # no duplicated log lines


def _bad_idx(folder, kind):
    images, labels = block_digits(30)
    write_idx_arrays(folder, images, labels)
    img_name, lbl_name = data.idx_file_names("train")
    if kind == "magic":
        write(folder / img_name, idx_bytes(9999, (30, 28, 28), images.tobytes()))
    elif kind == "truncated":
        write(folder / img_name, idx_bytes(2051, (30, 28, 28), images.tobytes()[:-5]))
    elif kind == "lengths":
        write(folder / lbl_name, idx_bytes(2049, (29,), labels[:29].astype(np.uint8)
                                           .tobytes()))


@pytest.mark.parametrize("case,words", [
    (["--batch-size", "0"], "batch-size"),
    (["--epochs", "0"], "epochs"),
    (["--learning-rate", "-1"], "learning-rate"),
    (["--ema-decay", "1"], "ema-decay"),
    (["--ema-decay", "-0.5"], "ema-decay"),
    (["--ema-compare", "0.9,x"], "ema-compare"),
    (["--batch-size", "31"], "larger than"),
    ("magic", "magic"),
    ("truncated", "truncated"),
    ("lengths", "labels"),
    ("workdir_is_a_file", "workdir"),
])
def test_train_bad_input_is_one_line_and_writes_nothing(tmp_path, case, words):
    data_dir = tmp_path / "mnist"
    data_dir.mkdir()
    workdir = tmp_path / "run"
    args = []
    if isinstance(case, list):
        write_idx_arrays(data_dir, *block_digits(30))
        args = case
    elif case == "workdir_is_a_file":
        write_idx_arrays(data_dir, *block_digits(30))
        workdir.write_text("keep me")
    else:
        _bad_idx(data_dir, case)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = run("train.py", "--workdir", workdir, "--data-dir", data_dir,
                 "--batch-size", 10, *args)
    assert words in one_line_error(result).lower()
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before                              # nothing written or changed


def test_sample_from_generator_file_equals_sample_from_workdir(trained):
    tmp, workdir, _, cache = trained
    args = ("--digits", "37", "--per-digit", 4, "--out")
    a = run("sample.py", "--checkpoint", workdir, *args, tmp / "a.png",
            "--npz", tmp / "a.npz", cache=cache)
    b = run("sample.py", "--checkpoint", workdir / "generator.msgpack", *args,
            tmp / "b.png", "--npz", tmp / "b.npz", cache=cache)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    np.testing.assert_array_equal(np.load(tmp / "a.npz")["images"],
                                  np.load(tmp / "b.npz")["images"])


def test_sample_raw_gives_the_generators_own_weights(trained):
    """By default sample.py draws from the weight average; --raw from G's own
    weights, which a generator file holding the average cannot give."""
    tmp, workdir, _, cache = trained
    args = ("--checkpoint", workdir, "--digits", "5", "--per-digit", 3)
    averaged = run("sample.py", *args, "--out", tmp / "e.png", "--npz", tmp / "e.npz",
                   cache=cache)
    raw = run("sample.py", *args, "--raw", "--out", tmp / "r.png", "--npz",
              tmp / "r.npz", cache=cache)
    assert averaged.returncode == 0 and raw.returncode == 0, averaged.stderr + raw.stderr
    assert "(EMA)" in averaged.stdout and "(EMA)" not in raw.stdout
    from gan import checkpoint, sampling
    import jax
    restored = checkpoint.restore(str(workdir))
    z, labels = sampling.digit_rows(jax.random.key(0), [5], 3)
    want = sampling.generate_uint8(sampling.g_variables(restored.g_state), z, labels)
    np.testing.assert_array_equal(np.load(tmp / "r.npz")["images"], want)
    assert not np.array_equal(np.load(tmp / "e.npz")["images"], want)
    refused = run("sample.py", "--checkpoint", workdir / "generator.msgpack", "--raw",
                  "--out", tmp / "refused_raw.png", cache=cache)
    assert "averaged (EMA)" in one_line_error(refused)
    assert not (tmp / "refused_raw.png").exists()


def test_sample_without_checkpoint_uses_the_pretrained_generator(tmp_path):
    out = tmp_path / "digits.png"
    from gan import weights

    result = run("sample.py", "--out", out, "--npz", tmp_path / "d.npz")
    assert result.returncode == 0, result.stderr
    shipped = weights.read_file(weights.SHIPPED)
    assert f"from step {shipped.step} " in result.stdout
    images = np.load(tmp_path / "d.npz")["images"]
    assert images.shape == (100, 28, 28)
    # Digits: dark background, some bright strokes, and every image different.
    assert np.median(images) < 30 and (images > 200).mean() > 0.03
    assert len({im.tobytes() for im in images}) == 100


def test_evaluate_end_to_end_and_classifier_cache(trained, tmp_path):
    _, workdir, data_dir, cache = trained
    clf, out = tmp_path / "clf.msgpack", tmp_path / "q.json"
    args = ("--checkpoint", workdir, "--data-dir", data_dir, "--num-samples", 20,
            "--classifier", clf, "--json", out)
    result = run("evaluate.py", *args, cache=cache)
    assert result.returncode == 0, result.stderr
    assert "conditional accuracy" in result.stdout and "Frechet" in result.stdout
    figures = json.load(open(out))
    assert figures["step"] == 3 and figures["num_samples"] == 20
    assert figures["averaged"] is True and "weight average (EMA)" in result.stdout
    assert 0 <= figures["conditional_accuracy"] <= 1
    assert len(figures["per_digit_accuracy"]) == 10
    assert figures["frechet_ratio"] == pytest.approx(
        figures["frechet_distance"] / figures["frechet_floor"])
    assert {"precision", "recall", "cross_entropy", "worst_digit"} <= set(figures)
    # The classifier was trained once; the second run reads it.
    stamp = os.stat(clf).st_mtime_ns
    again = run("evaluate.py", *args, cache=cache)
    assert again.returncode == 0, again.stderr
    assert os.stat(clf).st_mtime_ns == stamp
    assert "training the MNIST classifier" in result.stderr
    assert "training the MNIST classifier" not in again.stderr
    assert json.load(open(out))["frechet_distance"] == figures["frechet_distance"]


@pytest.mark.parametrize("case,words", [
    ("few_samples", "num-samples"),
    ("more_samples_than_digits", "exceeds the 50 training images"),
    ("negative_seed", "--seed must be a whole number between 0 and"),
    ("json_dir_missing", "does not exist"),
    ("missing_checkpoint", "does not exist"),
    ("damaged_classifier", "not a classifier file"),
])
def test_evaluate_bad_input_is_one_line(trained, tmp_path, case, words):
    _, workdir, data_dir, cache = trained
    clf = tmp_path / "clf.msgpack"
    clf.write_bytes(b"garbage")
    args = {"--checkpoint": workdir, "--data-dir": data_dir, "--num-samples": 20,
            "--classifier": clf}
    if case == "few_samples":
        args["--num-samples"] = 5
    elif case == "more_samples_than_digits":
        args["--num-samples"] = 60
    elif case == "negative_seed":
        args["--seed"] = -1
    elif case == "json_dir_missing":
        args["--json"] = tmp_path / "nope" / "q.json"
    elif case == "missing_checkpoint":
        args["--checkpoint"] = tmp_path / "nope"
    flat = [v for kv in args.items() for v in kv]
    assert words in one_line_error(run("evaluate.py", *flat, cache=cache))
    assert clf.read_bytes() == b"garbage"                # never overwritten


def test_train_eval_every_logs_quality_beside_the_losses(tmp_path, monkeypatch,
                                                        capfd):
    """The loop in this process (the flags' way in is checked below), with 200
    samples per score instead of 1,000: the test is about what is logged."""
    import jax
    from gan import classifier, loop, quality
    from gan.config import Config, RunOptions
    data_dir = tmp_path / "mnist"
    data_dir.mkdir()
    write_idx_arrays(data_dir, *block_digits(30))
    write_idx_arrays(data_dir, *block_digits(30, seed=1), split="test")
    workdir = tmp_path / "run"
    # An untrained classifier is enough to exercise the logging (and saves the
    # run from training one; evaluate.py's test covers that).
    params = jax.jit(classifier.Classifier().init)(
        jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))["params"]
    classifier.save(str(tmp_path / "clf.msgpack"), params, 0.0)
    monkeypatch.setattr(quality, "QUICK_SAMPLES", 200)
    loop.train_and_evaluate(
        Config(batch_size=10, epochs=2, ema_compare=(0.5,), ema_decay=0.999,
               ema_batch_stats="recompute"),
        RunOptions(workdir=str(workdir), data_dir=str(data_dir), eval_every=1,
                   classifier=str(tmp_path / "clf.msgpack"), progress=False))
    records = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
    quality_rows = [r for r in records if "cond_acc" in r]
    assert [(r["step"], r["epoch"]) for r in quality_rows] == [(3, 1), (6, 2)]
    # Raw G, the average as sampled, and each average in both BatchNorm modes.
    for r in quality_rows:
        assert r["eval_s"] > 0
        for name in ("", "_ema", "_ema0.999_recompute", "_ema0.999_average",
                     "_ema0.5_recompute", "_ema0.5_average"):
            assert 0 <= r["cond_acc" + name] <= 1 and r["fd_ratio" + name] > 0
        assert r["fd_ratio_ema"] == r["fd_ratio_ema0.999_recompute"]
    assert all(r["t"] > 0 and r["started"] > 0 for r in records if "d_loss" in r)
    # TensorBoard holds the same quality figures at the same steps.
    from tensorboard.backend.event_processing import event_accumulator
    events = event_accumulator.EventAccumulator(str(workdir))
    events.Reload()
    for name in ("cond_acc", "fd_ratio_ema", "cond_acc_ema0.5_average"):
        got = [(e.step, e.value) for e in events.Scalars("quality/" + name)]
        assert got == [(r["step"], pytest.approx(r[name], rel=1e-6))
                       for r in quality_rows]
    assert "conditional accuracy" in capfd.readouterr().err
    with Image.open(workdir / "losses.png") as curve:
        assert curve.size[1] == 3 * 300                  # losses + two quality panels
    # The flags reach the same settings (train.py turns them into these fields).
    import train
    config, options = train.parse_args([
        "--workdir", str(workdir), "--eval-every", "1", "--classifier", "c.msgpack",
        "--ema-compare", "0.5", "--ema-decay", "0.999", "--ema-batch-stats",
        "recompute"])
    assert (config.ema_compare, config.ema_decay, config.ema_batch_stats,
            options.eval_every) == ((0.5,), 0.999, "recompute", 1)
    bad = run("train.py", "--workdir", tmp_path / "r2", "--data-dir", data_dir,
              "--eval-every", 0)
    assert "eval-every" in one_line_error(bad)
