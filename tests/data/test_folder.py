"""The `folder` dataset: a synthetic folder (build, read, fingerprint rebuilds, every error),
and 40 + 10 real CamVid pairs as a folder that trains 30 steps and evaluates."""

import json
import logging
import os
import pickle
import shutil

import ml_collections
import numpy as np
import PIL.Image
import pytest

from lapseg import cli, data, models
from lapseg.data import camvid, folder
from lapseg.data import info as info_lib
from lapseg.train import loop
from lapseg.train.config import base_config
from tests.cli import helpers

SIZE = (24, 32)  # (H, W) of the synthetic images
NAMES = ["background", "cat", "dog"]


def _mask(value=None):
    mask = np.arange(SIZE[0] * SIZE[1]).reshape(SIZE) % 4  # classes 0..2, and 3 -> 255 below
    mask = np.where(mask == 3, 255, mask).astype(np.uint8)
    return mask if value is None else np.full(SIZE, value, np.uint8)


def _write(root, split, stem, *, mask=None, image_size=SIZE, suffix=".png"):
    """Writes images/<split>/<stem><suffix> (noise) and masks/<split>/<stem>.png."""
    rng = np.random.default_rng(len(stem))
    image = rng.integers(0, 256, (*image_size, 3), dtype=np.uint8)
    for kind in ("images", "masks"):
        (root / kind / split).mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(image).save(root / "images" / split / f"{stem}{suffix}")
    mask = _mask() if mask is None else mask
    PIL.Image.fromarray(mask).save(root / "masks" / split / f"{stem}.png")
    return image


def _classes(root, **fields):
    (root / "classes.json").write_text(json.dumps({"names": NAMES, "ignore_label": 255, **fields}))


@pytest.fixture
def source_dir(tmp_path):
    """A folder dataset: 2 train pairs (one a JPEG image) and 1 val pair of 24x32, 3 classes."""
    root = tmp_path / "mine"
    _write(root, "train", "a")
    _write(root, "train", "b", suffix=".jpg")
    _write(root, "val", "c")
    _classes(root)
    return root


def _load(source_dir, data_dir, split="train"):
    return data.load_source("folder", split, data_dir=data_dir, source_dir=source_dir)


def _builds(data_dir):
    """The fingerprint directories under data_dir/folder."""
    return sorted(os.listdir(data_dir / "folder"))


def test_builds_and_reads(source_dir, tmp_path):
    train = _load(source_dir, tmp_path / "tfds")
    validation = _load(source_dir, tmp_path / "tfds", "validation")
    assert (len(train), len(validation)) == (2, 1)
    example = validation[0]
    np.testing.assert_array_equal(example["image"],
                                  np.asarray(PIL.Image.open(source_dir / "images/val/c.png")))
    np.testing.assert_array_equal(example["label"], _mask())
    assert example["label"].dtype == np.uint8
    jpeg = [train[i]["image"] for i in range(2) if train[i]["image"].shape == (*SIZE, 3)]
    assert len(jpeg) == 2  # the JPEG decodes to RGB like the PNG
    again = pickle.loads(pickle.dumps(validation))  # as grain sends it to worker processes
    np.testing.assert_array_equal(again[0]["label"], _mask())
    with pytest.raises(ValueError, match="no split 'test'; it has train, val"):
        _load(source_dir, tmp_path / "tfds", "test")
    info = data.dataset_info("folder", source_dir)
    assert (info.name, info.num_classes, info.ignore_label, info.image_size) == (
        "folder", 3, 255, None)
    assert info.class_names == tuple(NAMES)
    assert info.palette.shape == (4, 3) and tuple(info.palette[-1]) == folder.IGNORE_COLOR
    assert "folder" in data.names()


def test_converts_grayscale_images_and_palette_masks(source_dir, tmp_path):
    gray = np.random.default_rng(0).integers(0, 256, SIZE, dtype=np.uint8)
    PIL.Image.fromarray(gray).save(source_dir / "images/val/c.png")  # mode L
    indexed = PIL.Image.frombytes("P", SIZE[::-1], _mask().tobytes())  # VOC-style mask
    indexed.putpalette(info_lib.pascal_palette(256).ravel().tolist())
    indexed.save(source_dir / "masks/val/c.png")
    example = _load(source_dir, tmp_path / "tfds", "validation")[0]
    np.testing.assert_array_equal(example["image"], np.repeat(gray[..., None], 3, -1))
    np.testing.assert_array_equal(example["label"], _mask())


def test_palette_from_classes_json(source_dir):
    colours = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    _classes(source_dir, palette=colours)
    palette = data.dataset_info("folder", source_dir).palette
    np.testing.assert_array_equal(palette, [*colours, folder.IGNORE_COLOR])
    _classes(source_dir, palette=[*colours, [10, 11, 12]])
    np.testing.assert_array_equal(data.dataset_info("folder", source_dir).palette[-1], [10, 11, 12])


def test_rebuilt_when_the_folder_changes_reused_when_not(source_dir, tmp_path, monkeypatch):
    data_dir = tmp_path / "tfds"
    _load(source_dir, data_dir)
    first = _builds(data_dir)
    assert len(first) == 1

    def no_reads(*args):
        raise AssertionError(f"rebuilt: read {args[0]}")

    with monkeypatch.context() as patch:  # unchanged: opened, not rebuilt
        patch.setattr(folder, "read_pair", no_reads)
        assert len(_load(source_dir, data_dir, "validation")) == 1
    assert _builds(data_dir) == first

    _write(source_dir, "val", "c", mask=_mask(2))  # edited mask: a fresh build
    stat = (source_dir / "masks/val/c.png").stat()
    os.utime(source_dir / "masks/val/c.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    np.testing.assert_array_equal(_load(source_dir, data_dir, "validation")[0]["label"], _mask(2))
    assert len(_builds(data_dir)) == 2
    _write(source_dir, "train", "d")  # an added pair
    assert len(_load(source_dir, data_dir)) == 3
    (source_dir / "classes.json").write_text(json.dumps({"names": ["bg", "cat", "dog"]}))
    assert len(_load(source_dir, data_dir)) == 3  # classes.json counts too
    assert len(_builds(data_dir)) == 4


def test_hidden_and_system_files_are_skipped_and_said_once(source_dir, tmp_path, caplog):
    """Issue #26: a Thumbs.db (or desktop.ini, ...) stopped the build ('not a .png')."""
    clean = folder.fingerprint(source_dir)
    for name in ("images/train/Thumbs.db", "images/train/desktop.ini", "images/val/.DS_Store",
                 "masks/train/._a.png", "masks/val/Desktop.ini", "images/__MACOSX/train/._b.jpg",
                 "masks/.DS_Store", "images/train/@eaDir/a.png@SynoEAStream"):
        (source_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (source_dir / name).write_bytes(b"not an image")
    assert folder.fingerprint(source_dir) == clean  # they are no part of the dataset
    caplog.set_level(logging.INFO, logger="lapseg.data.folder")
    assert len(_load(source_dir, tmp_path / "tfds")) == 2
    assert len(_load(source_dir, tmp_path / "tfds", "validation")) == 1
    said = [r.getMessage() for r in caplog.records if r.name == "lapseg.data.folder"]
    assert len(said) == 1 and "skipped 8 hidden or system files" in said[0], said


def _remove(path):
    shutil.rmtree(path) if path.is_dir() else path.unlink()


# (what to do to the fixture's folder, the error's pattern): every error is a ValueError of
# one line naming the file.
BROKEN = {
    "image without mask": (lambda r: _remove(r / "masks/train/b.png"),
                           r"image \S*/images/train/b.jpg has no mask \S*/masks/train/b.png"),
    "mask without image": (lambda r: PIL.Image.fromarray(_mask()).save(r / "masks/train/z.png"),
                           r"mask \S*/masks/train/z.png has no image"),
    "size mismatch": (lambda r: _write(r, "train", "a", image_size=(20, 32)),
                      r"images/train/a.png is 20x32 \(HxW\) but its mask "
                      r"\S*/masks/train/a.png is 24x32"),
    "id out of range": (lambda r: _write(r, "val", "c", mask=_mask(7)),
                        r"mask \S*/masks/val/c.png holds value 7; "
                        r".* 0..2 and the ignore label 255"),
    "corrupt image": (lambda r: (r / "images/train/a.png").write_bytes(b"not a png"),
                      r"cannot read image \S*/images/train/a.png"),
    "truncated mask": (lambda r: (r / "masks/val/c.png").write_bytes(
                           (r / "masks/val/c.png").read_bytes()[:60]),
                       r"cannot read mask \S*/masks/val/c.png"),
    "colour mask": (lambda r: PIL.Image.new("RGB", SIZE[::-1]).save(r / "masks/val/c.png"),
                    r"mask \S*/masks/val/c.png is RGB; expected a single-channel PNG"),
    "jpeg mask": (lambda r: PIL.Image.new("L", SIZE[::-1]).save(r / "masks/val/c.jpg"),
                  r"mask \S*/masks/val/c.jpg is not a .png"),
    "unknown image type": (lambda r: (r / "images/val/c.tif").write_bytes(b""),
                           r"image \S*/images/val/c.tif is not a .png, .jpg or .jpeg"),
    "empty split": (lambda r: [_remove(r / "images/val/c.png"), _remove(r / "masks/val/c.png")],
                    r"\S*/images/val holds no images"),
    "no train split": (lambda r: [_remove(r / "images/train"), _remove(r / "masks/train")],
                       r"\S*/images/train does not exist; a folder dataset needs a train split"),
    "masks without images": (lambda r: (r / "masks/test").mkdir(),
                             r"\S*/masks/test exists but \S*/images/test does not"),
    "unknown split dir": (lambda r: (r / "images/extra").mkdir(),
                          r"\S*/images/extra is not a split directory"),
    "no classes.json": (lambda r: _remove(r / "classes.json"),
                        r"\S*/classes.json does not exist; write it"),
    "classes.json not JSON": (lambda r: (r / "classes.json").write_text("{names: x"),
                              r"\S*/classes.json is not valid JSON"),
    "no names": (lambda r: (r / "classes.json").write_text('{"ignore_label": 255}'),
                 r"classes.json: names must be a list"),
    "unknown key": (lambda r: (r / "classes.json").write_text('{"names": ["a"], "ignore": 3}'),
                    r"classes.json must be an object with keys names"),
    "ignore is a class id": (lambda r: _classes(r, ignore_label=1),
                             r"classes.json: ignore_label 1 is not an integer in 3..255"),
    "bad palette": (lambda r: _classes(r, palette=[[0, 0, 0]]),
                    r"classes.json: palette must be 3 \(or 4"),
    "no source dir": (lambda r: shutil.rmtree(r), r"source directory \S*/mine does not exist"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_errors_name_the_file(source_dir, tmp_path, case):
    breaks, pattern = BROKEN[case]
    breaks(source_dir)
    for _ in range(2):  # a failed build fails the same way again
        with pytest.raises(ValueError, match=pattern) as error:
            _load(source_dir, tmp_path / "tfds")
        message = str(error.value)
        assert message.startswith("folder: ") and "\n" not in message, message


def test_needs_a_source_dir(tmp_path):
    with pytest.raises(ValueError, match="'folder' needs a source directory.*source_dir"):
        data.dataset_info("folder")
    with pytest.raises(ValueError, match="needs a source directory"):
        data.load_source("folder", "train", data_dir=tmp_path)


def _camvid_folder(camvid_dir, root, counts):
    """`counts` ({split: n}) of the first CamVid pairs as a folder dataset in `root`."""
    for split, count in counts.items():
        source = {"train": "train", "val": "val"}[split]
        for kind, sub in (("images", source), ("masks", f"{source}annot")):
            (root / kind / split).mkdir(parents=True)
            for path in sorted((camvid_dir / sub).glob("*.png"))[:count]:
                shutil.copy(path, root / kind / split / path.name)
    (root / "classes.json").write_text(
        json.dumps({"names": list(camvid.CLASS_NAMES), "ignore_label": camvid.IGNORE_LABEL}))


def test_camvid_as_a_folder_trains_and_evaluates(camvid_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(models._MODELS, "toy", "tests.train.toy:toy")  # pylint: disable=protected-access
    root = tmp_path / "camvid_folder"
    _camvid_folder(camvid_dir, root, {"train": 40, "val": 10})
    config = base_config()
    config.model = "toy"
    config.model_kwargs = ml_collections.ConfigDict({"width": 4})
    config.data.dataset = "folder"
    config.data.source_dir = str(root)
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.crop_size = (64, 64)
    config.data.batch_size = 8  # one example per virtual device
    config.num_train_steps = 30
    config.log_every_steps = 10
    config.checkpoint_every_steps = 30
    workdir = tmp_path / "work"
    result = loop.train_and_evaluate(config, str(workdir))
    assert result["step"] == 30 and result["per_class_iou"].shape == (11,)
    assert np.isfinite(result["miou"])

    assert cli.main(["eval", "--workdir", str(workdir)]) == 0
    report = json.loads((workdir / "eval_val.json").read_text())
    assert (report["num_images"], report["step"]) == (10, 30)
    assert report["class_names"] == list(camvid.CLASS_NAMES)
    assert "no split 'test'; it has train, val" in helpers.run(
        "eval", "--workdir", workdir, "--split=test")

    bad = root / "masks" / "val" / sorted(os.listdir(root / "masks" / "val"))[3]
    label = np.array(PIL.Image.open(bad))
    label[0, 0] = 12
    PIL.Image.fromarray(label).save(bad)
    message = helpers.run("eval", "--workdir", workdir)
    assert f"mask {bad} holds value 12" in message and "\n" not in message


def test_reading_does_not_advise_opencv(source_dir, tmp_path):
    """tfds logs once per process (absl) that OpenCV would decode faster; lapseg decodes
    with PIL on purpose, so a fresh process reading a source prints no such hint."""
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    script = (
        "import logging, sys\n"
        "from absl import logging as absl_logging\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "absl_logging.set_verbosity(absl_logging.INFO)\n"
        "from lapseg import data\n"
        f"source = data.load_source('folder', 'train', data_dir={str(tmp_path / 'tfds')!r}, "
        f"source_dir={str(source_dir)!r})\n"
        "print(source[1]['image'].shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, cwd=os.getcwd(), check=True)
    assert "(24, 32, 3)" in out.stdout
    assert "OpenCV" not in out.stdout + out.stderr
