"""Cityscapes, PASCAL VOC (+ SBD) and ADE20K read from tiny copies of their authors' folder
layouts (tests/data/layouts.py): the mapped labels, `lapseg train` for 2 steps and `lapseg
eval --split=val` (and VOC's `train_aug`) whose `num_images` and `class_pixels` equal a
numpy count of the labels, and one line naming the file for each bad file. No TensorFlow."""

import json
import sys

import numpy as np
import PIL.Image
import pytest
import scipy.io

from lapseg import data
from tests.cli import helpers
from tests.data import layouts


@pytest.fixture(autouse=True)
def _toy(monkeypatch):
    helpers.register_toy(monkeypatch)


def test_no_tensorflow():
    assert "tensorflow" not in sys.modules  # the readers, tfds and grain never import it


def _labels(source):
    return sorted(source[i]["label"].tobytes() for i in range(len(source)))


def _expected(labels):
    return sorted(label.tobytes() for label in labels)


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    expected = layouts.make_cityscapes(tmp_path / "cs")
    assert data.splits("cityscapes", data_dir=tmp_path / "tfds", source_dir=tmp_path / "cs") == (
        "train", "val")
    for split in ("train", "val"):
        source = data.load_source("cityscapes", split, data_dir=tmp_path / "tfds",
                                  source_dir=tmp_path / "cs")
        assert _labels(source) == _expected(expected[split])  # incl. the labelTrainIds file
        assert source[0]["image"].shape == (32, 64, 3)
    assert data.dataset_info("cityscapes").num_classes == 19


def test_voc_splits_and_train_aug(tmp_path):
    expected, voc_root, sbd_root = layouts.make_voc(tmp_path)
    location = {"data_dir": tmp_path / "tfds", "source_dir": voc_root.parent, "sbd_dir": sbd_root}
    assert data.splits("voc", **location) == ("train", "val", "trainval", "train_aug")
    for split in ("train", "val", "trainval", "train_aug"):
        source = data.load_source("voc", split, **location)
        assert _labels(source) == _expected(expected[split].values()), split
    sizes = data.image_sizes(data.load_source("voc", "val", decode=False, **location))
    assert sorted(map(tuple, sizes)) == sorted(m.shape for m in expected["val"].values())
    no_sbd = {**location, "sbd_dir": None}
    assert data.splits("voc", **no_sbd) == ("train", "val", "trainval")
    with pytest.raises(data.DataError, match="train_aug needs SBD: set config.data.sbd_dir"):
        data.load_source("voc", "train_aug", **no_sbd)


def test_ade20k_reduces_the_zero_label(tmp_path):
    expected, _ = layouts.make_ade20k(tmp_path)
    for split in ("train", "val", "validation"):
        source = data.load_source("ade20k", split, data_dir=tmp_path / "tfds", source_dir=tmp_path)
        assert _labels(source) == _expected(expected["val" if split != "train" else "train"])
    info = data.dataset_info("ade20k")
    assert (info.num_classes, info.class_names[0], info.class_names[-1]) == (150, "wall", "flag")


def _train_and_eval(tmp_path, dataset, source_dir, *extra, splits=("val",)):
    """`lapseg train` (2 steps, toy model) then `lapseg eval --split=S`: the eval JSONs."""
    (tmp_path / "toy.py").write_text(helpers.TOY_CONFIG)
    workdir = tmp_path / "w"
    assert helpers.run("train", f"--config={tmp_path / 'toy.py'}", "--workdir", workdir,
                       f"--config.data.data_dir={tmp_path / 'tfds'}",
                       f"--config.data.dataset={dataset}", f"--config.data.source_dir={source_dir}",
                       "--config.num_train_steps=2", *extra) == 0
    reports = {}
    for split in splits:
        assert helpers.run("eval", "--workdir", workdir, f"--split={split}") == 0
        reports[split] = json.loads((workdir / f"eval_{split}.json").read_text())
    return workdir, reports


@pytest.mark.parametrize("dataset", ["cityscapes", "ade20k", "voc"])
def test_trains_and_evaluates_with_class_pixels(tmp_path, dataset):
    if dataset == "cityscapes":
        expected, source_dir, extra = layouts.make_cityscapes(tmp_path / "cs"), tmp_path / "cs", ()
    elif dataset == "ade20k":
        (expected, source_dir), extra = layouts.make_ade20k(tmp_path), ()
    else:
        expected, source_dir, sbd_root = layouts.make_voc(tmp_path)
        extra = (f"--config.data.sbd_dir={sbd_root}", "--config.data.train_split=train_aug")
        expected = {split: list(labels.values()) for split, labels in expected.items()}
    splits = ("val", "train_aug") if dataset == "voc" else ("val",)
    _, reports = _train_and_eval(tmp_path, dataset, source_dir, *extra, splits=splits)
    num_classes = data.dataset_info(dataset).num_classes
    for split, report in reports.items():
        assert report["num_images"] == len(expected[split])
        assert report["class_pixels"] == layouts.class_pixels(expected[split], num_classes)
        assert report["step"] == 2 and len(report["per_class_iou"]) == num_classes


def test_wrong_eval_split_lists_the_splits(tmp_path):
    expected, source_dir, sbd_root = layouts.make_voc(tmp_path)
    del expected
    workdir, _ = _train_and_eval(tmp_path, "voc", source_dir, f"--config.data.sbd_dir={sbd_root}",
                                 splits=())
    helpers.one_line(helpers.run("eval", "--workdir", workdir, "--split=test"), "lapseg eval:",
                     "voc has no split 'test'; it has train, val, trainval, train_aug")


# Each bad file: (how to break the tiny layout, the words the one-line error must hold).
def _missing_mask(root):
    path = next((root / "cs" / "gtFine" / "val").rglob("*_labelIds.png"))
    path.unlink()
    return path.name.replace("_gtFine_labelIds.png", "_leftImg8bit.png"), "has no label"


def _id_out_of_range(root):
    path = next((root / "cs" / "gtFine" / "val").rglob("*_labelIds.png"))
    ids = np.array(PIL.Image.open(path))
    ids[0, 0] = 40
    PIL.Image.fromarray(ids).save(path)
    return str(path), "holds id 40, outside the dataset's range (labelIds 0..33)"


def _bad_mat(root):
    path = root / "benchmark_RELEASE" / "dataset" / "cls" / "s1.mat"
    path.write_bytes(b"not a MATLAB file")
    return str(path), "cannot read SBD mask"


def _mat_without_segmentation(root):
    path = root / "benchmark_RELEASE" / "dataset" / "cls" / "s0.mat"
    scipy.io.savemat(path, {"something": np.zeros((2, 2))})
    return str(path), "cannot read SBD mask"


def _list_names_missing_image(root):
    listed = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"
    listed.write_text("v0\nv9\n")
    return str(listed), "names v9, but its image"


def _empty_split(root):
    listed = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"
    listed.write_text("\n")
    return "split val is empty", "voc:"


def _ade_missing_annotation(root):
    path = next((root / "ADEChallengeData2016" / "annotations" / "validation").glob("*.png"))
    path.unlink()
    return path.stem + ".jpg", "has no annotation"


def _ade_id_out_of_range(root):
    path = next((root / "ADEChallengeData2016" / "annotations" / "validation").glob("*.png"))
    ids = np.array(PIL.Image.open(path))
    ids[0, 0] = 200
    PIL.Image.fromarray(ids).save(path)
    return str(path), "holds id 200, outside the dataset's range (ids 0..150)"


def _unreadable_image(root):
    path = next((root / "cs" / "leftImg8bit" / "val").rglob("*.png"))
    path.write_bytes(path.read_bytes()[:100])
    return str(path), "cannot read image"


@pytest.mark.parametrize("dataset,split,breaker", [
    ("cityscapes", "val", _missing_mask),
    ("cityscapes", "val", _id_out_of_range),
    ("cityscapes", "val", _unreadable_image),
    ("voc", "train_aug", _bad_mat),
    ("voc", "train_aug", _mat_without_segmentation),
    ("voc", "val", _list_names_missing_image),
    ("voc", "val", _empty_split),
    ("ade20k", "val", _ade_missing_annotation),
    ("ade20k", "val", _ade_id_out_of_range),
])
def test_every_bad_file_is_one_line_naming_it(tmp_path, dataset, split, breaker):
    if dataset == "cityscapes":
        layouts.make_cityscapes(tmp_path / "cs")
        source_dir, extra = tmp_path / "cs", ()
    elif dataset == "voc":
        _, voc_root, sbd_root = layouts.make_voc(tmp_path)
        source_dir, extra = voc_root, (f"--config.data.sbd_dir={sbd_root}",)
    else:
        layouts.make_ade20k(tmp_path)
        source_dir, extra = tmp_path, ()
    names, words = breaker(tmp_path)
    (tmp_path / "toy.py").write_text(helpers.TOY_CONFIG)
    message = helpers.run(
        "train", f"--config={tmp_path / 'toy.py'}", "--workdir", tmp_path / "w",
        f"--config.data.data_dir={tmp_path / 'tfds'}", f"--config.data.dataset={dataset}",
        f"--config.data.source_dir={source_dir}", f"--config.data.train_split={split}",
        "--config.num_train_steps=2", *extra)
    helpers.one_line(message, "lapseg train:", names, words)


def _fake_pet_build(data_dir, monkeypatch):
    """A prepared tfds `oxford_iiit_pet` (train 4, test 2; no validation split) written
    without downloading: its builder's split generators replaced by random examples."""
    import io  # pylint: disable=import-outside-toplevel

    from etils import epath  # pylint: disable=import-outside-toplevel
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    from tensorflow_datasets.datasets.oxford_iiit_pet import (  # pylint: disable=import-outside-toplevel
        oxford_iiit_pet_dataset_builder as pet)

    def png(array):
        out = io.BytesIO()
        PIL.Image.fromarray(array).save(out, format="PNG")
        return out.getvalue()

    def examples(count, rng):
        for i in range(count):
            yield f"k{i}", {
                "image": png(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)),
                "segmentation_mask": png(rng.integers(1, 4, (40, 48), dtype=np.uint8)),
                "label": 0, "species": 0, "file_name": f"f{i}.jpg",
                "head_bbox": tfds.features.BBox(0.1, 0.1, 0.5, 0.5)}

    rng = np.random.default_rng(0)
    monkeypatch.setattr(pet.Builder, "_split_generators",
                        lambda self, dl: {"train": examples(4, rng), "test": examples(2, rng)})
    # tfds finds a packaged builder's file through `importlib_resources`, which it does not
    # install; naming the file skips that (as lapseg's own builders do). Reading a prepared
    # build does not need it.
    had_path = "code_path" in vars(pet.Builder)
    pet.Builder.code_path = epath.Path(pet.__file__)
    try:
        tfds.builder("oxford_iiit_pet", data_dir=data_dir).download_and_prepare(
            file_format="array_record")
    finally:
        if not had_path:
            del pet.Builder.code_path


def test_a_catalog_dataset_without_validation_trains_to_its_last_step(tmp_path, monkeypatch,
                                                                       caplog):
    _fake_pet_build(tmp_path / "tfds", monkeypatch)
    assert data.splits("oxford_iiit_pet", data_dir=tmp_path / "tfds") == ("train", "test")
    (tmp_path / "toy.py").write_text(helpers.TOY_CONFIG)
    with caplog.at_level("WARNING", logger="lapseg"):
        assert helpers.run("train", f"--config={tmp_path / 'toy.py'}", "--workdir", tmp_path / "w",
                           f"--config.data.data_dir={tmp_path / 'tfds'}",
                           "--config.data.dataset=oxford_iiit_pet", "--config.num_train_steps=4",
                           "--config.eval_every_steps=2") == 0
    said = [r.getMessage() for r in caplog.records if "no validation split" in r.getMessage()]
    assert len(said) == 1 and "it has train, test" in said[0], said
    assert (tmp_path / "w" / "checkpoints" / "4").is_dir()
    assert not (tmp_path / "w" / "best").exists()
    assert helpers.run("eval", "--workdir", tmp_path / "w", "--split=test") == 0
    report = json.loads((tmp_path / "w" / "eval_test.json").read_text())
    assert (report["num_images"], report["step"]) == (2, 4)
