"""Training on other data (`--dataset`): folders of your own pictures, the MNIST
family through TFDS, class names kept everywhere, and bad input refused in one
line. The end-to-end run on a folder is at the bottom."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from gan import data, datasets, image_folder, images, record, weights
from gan.data import DataError

CLASSES = ("bar", "cross", "ring")  # sorted, as the folder's subfolders


def shape(kind: str, h: int, w: int) -> np.ndarray:
    """A white shape on black, uint8 `[h, w]`: a bar, a cross or a ring."""
    y, x = np.mgrid[:h, :w]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    if kind == "bar":
        on = np.abs(x - cx) < w * 0.12
    elif kind == "cross":
        on = (np.abs(x - cx) < w * 0.1) | (np.abs(y - cy) < h * 0.1)
    else:
        r = np.hypot((y - cy) / h, (x - cx) / w)
        on = (r > 0.22) & (r < 0.36)
    return np.where(on, 255, 0).astype(np.uint8)


def make_folder(root, per_class: int = 12, broken: int = 1) -> str:
    """Three classes of mixed sizes and kinds: 28x28 white on black (kept as
    is), larger dark-on-light RGB scans, RGBA with a transparent background,
    JPEG; plus `broken` non-picture files and a hidden file to ignore."""
    rng = np.random.default_rng(0)
    for kind in CLASSES[::-1]:  # made in reverse: the order must come from sorting
        folder = os.path.join(root, kind)
        os.makedirs(os.path.join(folder, "more"))
        for i in range(per_class):
            size = int(rng.integers(29, 90))
            if i % 4 == 0:
                picture = Image.fromarray(shape(kind, 28, 28))
            elif i % 4 == 1:
                picture = Image.fromarray(255 - shape(kind, size, size)).convert("RGB")
            elif i % 4 == 2:
                alpha = shape(kind, size, size)          # ink where opaque
                picture = Image.fromarray(np.stack([np.zeros_like(alpha)] * 3
                                                   + [alpha], -1), "RGBA")
            else:
                picture = Image.fromarray(255 - shape(kind, size, size))
            name = f"{i:02d}." + ("jpg" if i % 4 == 3 else "png")
            picture.save(os.path.join(folder, "more" if i == 5 else "", name))
        open(os.path.join(folder, ".DS_Store"), "wb").write(b"\0hidden")
    for b in range(broken):
        open(os.path.join(root, "ring", f"broken{b}.png"), "wb").write(b"not a png")
    return str(root)


# ---------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------


def test_a_folder_reads_as_sorted_classes_of_light_on_dark_28x28(tmp_path):
    found = image_folder.read(make_folder(tmp_path))
    assert found.classes == CLASSES
    assert found.images.shape == (36, 28, 28) and found.images.dtype == np.uint8
    assert np.bincount(found.labels).tolist() == [12, 12, 12]
    assert [os.path.basename(f) for f in found.skipped] == ["broken0.png"]
    # A 28x28 light-on-dark picture is kept bit for bit (file 00 of "bar").
    np.testing.assert_array_equal(found.images[0], shape("bar", 28, 28))
    # Every kind comes out light on dark, the shape where a 28x28 one has it:
    # dark-on-light scans inverted, transparency as paper, sizes scaled.
    for label, kind in enumerate(CLASSES):
        mine = found.images[found.labels == label].astype(float)
        agree = (mine > 127) == (shape(kind, 28, 28) > 127)
        assert agree.mean(axis=(1, 2)).min() > 0.85, kind  # not inverted: ~0.2
    # Every sixth picture of a class (sorted by path) is its test split.
    assert found.test.reshape(3, 12)[:, 5::6].all() and found.test.sum() == 6
    train, test = found.split("train"), found.split("test")
    assert len(train[1]) == 30 and len(test[1]) == 6
    # A run says what it trains on, the skipped file counted.
    line = datasets.data_line(datasets.load(f"folder:{tmp_path}", None))
    assert line == (f"data: folder:{tmp_path}, 3 classes (bar, cross, ring), 30 "
                    "training images, 1 unreadable file skipped")


def test_a_picture_keeps_its_aspect_padded_with_black():
    wide = Image.fromarray(np.pad(np.full((20, 76), 255, np.uint8), 2))  # 24x80
    out = image_folder.convert(wide)
    rows = np.flatnonzero(out.max(axis=1) > 127)
    # 80 -> 28 wide, 24 -> 8.4 high, centred: rows 10..17, not stretched to 28.
    assert out.shape == (28, 28) and 6 <= len(rows) <= 9
    assert abs(rows.mean() - 13.5) <= 1.0


def test_a_photo_is_turned_upright_as_its_exif_says(tmp_path):
    wide = Image.fromarray(np.pad(np.full((20, 76), 255, np.uint8), 2))  # 24x80
    exif = Image.Exif()
    exif[0x0112] = 6                            # orientation: shown turned 90 degrees
    wide.save(tmp_path / "photo.png", exif=exif)
    out = image_folder.convert_file(str(tmp_path / "photo.png"))
    cols = np.flatnonzero(out.max(axis=0) > 127)
    assert 6 <= len(cols) <= 9 and (out.max(axis=1) > 127).sum() >= 24  # now tall


def test_mnist_written_as_a_folder_of_pngs_reads_back_identically(tmp_path):
    rng = np.random.default_rng(1)
    digits = rng.integers(0, 256, (12, 28, 28)).astype(np.uint8)
    digits[:, 0, :] = digits[:, -1, :] = digits[:, :, 0] = digits[:, :, -1] = 0
    for i, digit in enumerate(digits):
        os.makedirs(tmp_path / str(i % 2), exist_ok=True)
        Image.fromarray(digit).save(tmp_path / str(i % 2) / f"{i:02d}.png")
    found = datasets.load(f"folder:{tmp_path}", None, "train")
    np.testing.assert_array_equal(found.images, digits[[0, 2, 4, 6, 8, 1, 3, 5, 7, 9]])
    assert found.classes == ("0", "1") and found.labels.tolist() == [0] * 5 + [1] * 5
    test = datasets.load(f"folder:{tmp_path}", None, "test")   # each class's 6th
    np.testing.assert_array_equal(test.images, digits[[10, 11]])


@pytest.mark.parametrize("layout, words", [
    ("missing", ["does not exist"]),
    ("empty", ["holds no class subfolders"]),
    ("one class", ["one class", "at least 2"]),
    ("no readable picture", ["Class ring", "no picture pillow can read"]),
    ("too few pictures", ["Class bar", "has 5 readable", "at least 6"]),
    ("too many broken", ["5 of 41 files", "at most 10%"]),
    ("too many classes", ["4 class subfolders", "at most 3"]),
])
def test_a_bad_folder_is_one_clear_line(tmp_path, monkeypatch, layout, words):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "one class":
        (root / "only").mkdir()
        Image.new("L", (28, 28)).save(root / "only" / "a.png")
    elif layout == "no readable picture":
        make_folder(root, per_class=6, broken=0)
        for name in os.listdir(root / "ring"):
            if os.path.isfile(root / "ring" / name):
                open(root / "ring" / name, "wb").write(b"broken")
        for name in os.listdir(root / "ring" / "more"):
            os.remove(root / "ring" / "more" / name)
    elif layout == "too few pictures":
        make_folder(root, per_class=5, broken=0)
    elif layout == "too many broken":
        make_folder(root, per_class=12, broken=5)
    elif layout == "too many classes":
        monkeypatch.setattr(image_folder, "MAX_CLASSES", 3)
        for name in "abcd":
            (root / name).mkdir()
    with pytest.raises(DataError) as error:
        datasets.load(f"folder:{root}", None, "train")
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_dataset_names_are_checked():
    assert datasets.check_name("folder:~/x") == "folder:" + os.path.expanduser("~/x")
    for bad in ("", "folder:", None):
        with pytest.raises(DataError):
            datasets.check_name(bad)


def test_classes_are_found_by_name_then_index():
    assert datasets.class_index(CLASSES, "ring") == 2
    assert datasets.class_index(CLASSES, "1") == 1 and datasets.class_index(CLASSES, 0) == 0
    for bad in ("shoe", 3, "-1", True, 1.0):
        with pytest.raises(ValueError, match="the classes are bar, cross, ring"):
            datasets.class_index(CLASSES, bad)


# ---------------------------------------------------------------------------
# TFDS (no network: tfds.testing.mock_data; builders' metadata is in TFDS's code)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tfds():
    return pytest.importorskip("tensorflow_datasets",
                               reason="tensorflow-datasets is not installed")


def test_fashion_mnist_through_tfds_has_its_class_names(tfds, tmp_path):
    with tfds.testing.mock_data(num_examples=9):
        found = datasets.load("fashion_mnist", str(tmp_path), "train", download=False)
    assert found.images.shape == (9, 28, 28) and found.images.dtype == np.uint8
    assert found.classes[:2] == ("T-shirt/top", "Trouser") and len(found.classes) == 10
    assert found.labels.dtype == np.int32 and found.labels.max() < 10


def test_emnist_letters_are_the_26_letters_from_label_1():
    classes = data._RELABELLED["emnist/letters"][1]
    assert classes[0] == "A" and classes[-1] == "Z" and len(classes) == 26
    labels = data._relabel(np.array([1, 26, 5]), "emnist/letters", 26, "x")
    assert labels.tolist() == [0, 25, 4]
    with pytest.raises(DataError, match="label 27"):
        data._relabel(np.array([1, 27]), "emnist/letters", 26, "x")


def test_a_tfds_set_of_colour_images_is_refused_saying_what_is_needed(tfds):
    with pytest.raises(DataError) as error:
        datasets.load("cifar10", None, "train", download=False)
    assert "32x32x3" in str(error.value) and "28x28x1 uint8 (grayscale)" in str(error.value)


def test_idx_files_of_another_dataset_load_with_its_names(tfds, tmp_path):
    from tests.synthetic import write_idx_arrays
    rng = np.random.default_rng(0)
    write_idx_arrays(tmp_path, rng.integers(0, 255, (5, 28, 28)), np.arange(5))
    found = datasets.load("fashion_mnist", str(tmp_path), "train")
    assert found.classes[0] == "T-shirt/top" and found.labels.tolist() == [0, 1, 2, 3, 4]


def test_emnist_idx_files_with_their_own_names_load_both_splits(tfds, tmp_path):
    """EMNIST's files are `emnist-letters-test-...`, not LeCun's `t10k-...`; its
    letters are labelled from 1."""
    from tests.synthetic import write_idx_arrays
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 3)):
        write_idx_arrays(tmp_path, rng.integers(0, 255, (count, 28, 28)),
                         np.arange(1, count + 1), split)
        for kind in ("images-idx3", "labels-idx1"):
            lecun = f"{'t10k' if split == 'test' else 'train'}-{kind}-ubyte.gz"
            emnist = f"emnist-letters-{split}-{kind}-ubyte.gz"
            os.rename(tmp_path / lecun, tmp_path / emnist)
    found = datasets.load("emnist/letters", str(tmp_path), "test")
    assert found.labels.tolist() == [0, 1, 2] and found.classes[:3] == ("A", "B", "C")
    assert len(datasets.load("emnist/letters", str(tmp_path), "train").labels) == 6
    assert len(datasets.source_files("emnist/letters", str(tmp_path))) == 4


def test_mnist_by_default_reads_as_it_always_has(tmp_path):
    """The default dataset is MNIST through `data.load_mnist`, in its order,
    labelled "0" to "9" (the 10-class train step against its reference is in
    tests/test_training.py; a 20-step run compared bit for bit with the code
    before --dataset is in docs/datasets.md)."""
    from tests.synthetic import write_idx_arrays
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (30, 28, 28)), rng.integers(0, 10, 30)
    write_idx_arrays(tmp_path, images, labels)
    from gan.config import RunOptions
    default = RunOptions(workdir="w").dataset
    assert default == "mnist"
    found = datasets.load(default, str(tmp_path), "train")
    want_images, want_labels = data.load_mnist(str(tmp_path), "train")
    np.testing.assert_array_equal(found.images, want_images)
    np.testing.assert_array_equal(found.labels, want_labels)
    np.testing.assert_array_equal(found.labels, labels)
    assert found.classes == tuple("0123456789") and found.skipped == 0


# ---------------------------------------------------------------------------
# Class names kept: records, generator files, grids
# ---------------------------------------------------------------------------


def test_a_generator_file_keeps_its_class_names(tmp_path):
    import jax
    from gan.config import Config
    from gan.training import create_train_states
    g, _ = create_train_states(Config(ema_decay=0.0), jax.random.key(0), len(CLASSES))
    path = str(tmp_path / "g.msgpack")
    weights.save(path, {"params": g.params, "batch_stats": g.batch_stats}, 3, Config(),
                 classes=CLASSES, dataset="folder:/x")
    back = weights.read_file(path)
    assert back.classes == CLASSES and back.dataset == "folder:/x"
    assert back.variables["params"]["deconv1"]["kernel"].shape[2] == 100 + 3
    # The shipped file (from before names were kept) draws the ten digits.
    assert weights.load().classes == datasets.DIGITS


def test_a_run_on_other_classes_does_not_resume(tmp_path):
    from gan.config import Config
    from gan.errors import TrainError
    saved = record.make(Config(), {"examples": 3}, "folder:/a", CLASSES)
    with pytest.raises(TrainError, match="other classes .bar, cross, ring"):
        record.check_continues("w", saved, record.make(Config(), {"examples": 3}))
    record.check_continues("w", saved, json.loads(json.dumps(saved)))  # itself: fine


def test_a_grid_of_up_to_ten_classes_is_the_seeds_and_more_wrap_named():
    rng = np.random.default_rng(0)
    ten = rng.integers(0, 256, (100, 28, 28)).astype(np.uint8)
    assert np.array_equal(np.asarray(images.class_grid(ten, datasets.DIGITS, 2)),
                          np.asarray(images.grid_image(ten, 10, 10, 2)))
    names = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    many = rng.integers(100, 256, (26 * 10, 28, 28)).astype(np.uint8)
    picture = np.asarray(images.class_grid(many, names))
    block = images.grid_image(many[:100], 10, 10)
    # Three blocks of ten rows, each with its names' strip on the left.
    assert picture.shape == (block.height, 3 * (block.width + images.NAME_WIDTH))
    strip = picture[:, :images.NAME_WIDTH]
    assert strip.max() > 128                                   # names are written
    # The last block's rows past the 26th class are blank (pad grey and black).
    assert picture[:, -block.width:][2 + 6 * 30:].max() == images.GRID_PAD_VALUE
    assert picture[:, -block.width:][2 + 5 * 30:2 + 6 * 30 - 2, 2:30].min() >= 100


# ---------------------------------------------------------------------------
# A run on a folder, end to end: train, sample, evaluate (marked slow: left out
# of the quick loop, `pytest -m "not slow"`)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """Two epochs on the three-class folder (batch 10: 3 steps an epoch), with
    `eval_every`: the run's classifier is trained beside it on first need."""
    from gan import loop
    from gan.config import Config, RunOptions
    root = tmp_path_factory.mktemp("folder_run")
    shapes = make_folder(root / "shapes")
    workdir = str(root / "run")
    loop.train_and_evaluate(Config(batch_size=10, epochs=2), RunOptions(
        workdir=workdir, dataset=f"folder:{shapes}", eval_every=2, progress=False))
    return root, shapes, workdir


@pytest.mark.slow
def test_a_folder_run_keeps_its_classes_everywhere(folder_run):
    from gan import checkpoint, classifier
    from gan.digit_writer import DigitWriter, WriterError
    from tensorboard.backend.event_processing import event_accumulator
    root, shapes, workdir = folder_run
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["classes"] == list(CLASSES) and saved["dataset"] == f"folder:{shapes}"
    assert checkpoint.restore(workdir).classes == CLASSES
    for source in (workdir, os.path.join(workdir, weights.GENERATOR_FILE)):
        writer = DigitWriter.load(source)
        assert writer.classes == CLASSES and not writer.writes_digits
    cells, _ = writer.grid(["ring", 0], per_digit=3)
    assert cells.shape == (2, 3, 28, 28)
    np.testing.assert_array_equal(cells[1], writer.grid("bar", 3)[0][0])
    with pytest.raises(WriterError, match="needs a generator of the digits"):
        writer.number("12")
    with pytest.raises(WriterError, match="draws 3 classes, but 10 names were given"):
        DigitWriter(writer.variables)
    # The grids have a row per class; the classifier was trained and cached.
    grid = Image.open(os.path.join(workdir, "grid.png"))
    assert grid.height == 3 * (28 * 2 + 2) + 2
    judge = classifier.load(os.path.join(workdir, classifier.RUN_FILE))
    assert judge.classes == CLASSES and judge.data["examples"] == 30
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert any("cond_acc" in r for r in rows)
    events = event_accumulator.EventAccumulator(workdir, size_guidance={"tensors": 0})
    events.Reload()
    text = events.Tensors("classes/text_summary")[0].tensor_proto.string_val[0]
    assert text.decode() == "bar, cross, ring"


@pytest.mark.slow
def test_sample_and_evaluate_speak_the_runs_class_names(folder_run, capsys):
    import evaluate
    import sample
    root, shapes, workdir = folder_run
    out = root / "s.npz"
    assert sample.main(["--checkpoint", workdir, "--classes", "ring,1",
                        "--per-class", "2", "--npz", str(out)]) == 0
    saved = np.load(out)
    assert saved["class_names"].tolist() == list(CLASSES)
    assert saved["labels"].tolist() == [2, 2, 1, 1] and saved["images"].shape == (4, 28, 28)
    assert evaluate.main(["--checkpoint", workdir, "--num-samples", "30"]) == 0
    table = capsys.readouterr().out
    assert "worst class" in table and all(f"  {c} " in table for c in CLASSES)


@pytest.mark.slow
@pytest.mark.parametrize("args, words", [
    (["--number", "12"], "needs a generator of the digits 0-9"),
    (["--digits", "12"], "choose them with --classes"),
    (["--classes", "shoe"], "no class 'shoe': the classes are bar, cross, ring"),
    (["--classes", "ring", "--number", "1"], "--classes makes a grid"),
])
def test_sample_refuses_what_a_folder_run_cannot_draw(folder_run, capsys, args, words):
    import sample
    _, _, workdir = folder_run
    with pytest.raises(SystemExit) as exited:
        sample.main(["--checkpoint", workdir, "--out", "never.png", *args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(lines) == 1 and words in lines[0], lines
    assert not os.path.exists("never.png")


@pytest.mark.slow
def test_a_generator_meets_data_of_other_classes_in_one_line(folder_run, tmp_path,
                                                             capsys):
    import evaluate
    from tests.synthetic import write_idx_arrays
    _, _, workdir = folder_run
    rng = np.random.default_rng(0)
    for split in data.SPLITS:
        write_idx_arrays(tmp_path, rng.integers(0, 255, (20, 28, 28)),
                         np.arange(20) % 10, split)
    with pytest.raises(SystemExit) as exited:
        evaluate.main(["--checkpoint", workdir, "--dataset", "mnist",
                       "--data-dir", str(tmp_path)])
    line = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and "draws other classes (bar, cross, ring)" in line
    assert "dataset mnist has (0, 1, 2" in line


@pytest.mark.slow
def test_a_folder_run_resumes_only_on_its_classes(folder_run, tmp_path):
    from gan import loop
    from gan.config import Config, RunOptions
    from gan.errors import TrainError
    root, shapes, workdir = folder_run
    other = make_folder(tmp_path / "other", per_class=8)
    os.rename(os.path.join(other, "ring"), os.path.join(other, "rung"))
    with pytest.raises(TrainError, match="other classes"):
        loop.train_and_evaluate(Config(batch_size=10, epochs=3), RunOptions(
            workdir=workdir, dataset=f"folder:{other}", progress=False))
    # The same classes and counts, one picture changed: other data.
    import shutil
    edited = shutil.copytree(shapes, tmp_path / "edited")
    Image.fromarray(shape("cross", 28, 28)).save(os.path.join(edited, "bar", "00.png"))
    with pytest.raises(TrainError, match="other data"):
        loop.train_and_evaluate(Config(batch_size=10, epochs=3), RunOptions(
            workdir=workdir, dataset=f"folder:{edited}", progress=False))
    with pytest.raises(TrainError, match="inside the dataset folder"):
        loop.train_and_evaluate(Config(batch_size=10), RunOptions(
            workdir=os.path.join(shapes, "bar", "w"), dataset=f"folder:{shapes}",
            progress=False))
    assert not os.path.exists(os.path.join(shapes, "bar", "w"))


@pytest.mark.slow
def test_the_web_page_of_a_folder_run_picks_classes(folder_run, tmp_path):
    """No number box and no sketchpad (its classes are not digits): a class
    picker of the run's names, and a grid with a row per class picked."""
    from gan import webapp
    from gan.digit_writer import DigitWriter
    _, _, workdir = folder_run
    writer = DigitWriter.load(workdir)
    picture, path, status = webapp.render_classes(writer, ["ring", "bar"], 3, 5, True,
                                                  str(tmp_path))
    cells, _ = writer.grid(["ring", "bar"], 3, 5, verify=True)
    want = np.asarray(images.class_grid(cells.reshape(-1, 28, 28), ["ring", "bar"],
                                        webapp.SCALE))
    np.testing.assert_array_equal(picture, want)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), want)
    assert "ring, bar" in status and "redrawn" in status
    for wanted, per_class, words in [([], 3, "pick at least one class"),
                                     (["owl"], 3, "no class 'owl'"),
                                     (["ring"], 17, "between 1 and 16"),
                                     ("ring", "8", "must be a whole number")]:
        out, path, status = webapp.render_classes(writer, wanted, per_class, 0, False,
                                                  str(tmp_path / "bad"))
        assert out is None and path is None and words in status and "⚠" in status
    page = webapp.build(writer, str(tmp_path))
    props = {c["props"].get("elem_id"): c["props"] for c in page.config["components"]}
    assert [tuple(c) for c in props["classes"]["choices"]] == [(c, c) for c in CLASSES]
    assert "number" not in props and "sketch" not in props
