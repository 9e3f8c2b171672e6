"""tfds catalog adapters: the table's label mappings, and the error when not prepared."""

import numpy as np
import pytest

from lapseg import data
from lapseg.data import catalog


@pytest.mark.parametrize("name", sorted(catalog.CATALOG))
def test_entries_are_consistent(name):
    entry = catalog.CATALOG[name]
    info = data.dataset_info(name)  # DatasetInfo checks names, palette and ignore label
    assert info is entry.info and info.name == name
    stored = np.arange(256, dtype=np.uint8)
    mapped = entry.label_map[stored]
    assert set(mapped.tolist()) == set(range(info.num_classes)) | {info.ignore_label}


def test_label_mappings():
    cityscapes = catalog.CATALOG["cityscapes"].label_map
    assert cityscapes[[0, 7, 8, 26, 33, 34]].tolist() == [255, 0, 1, 13, 18, 255]
    pet = catalog.CATALOG["oxford_iiit_pet"].label_map
    assert pet[[1, 2, 3]].tolist() == [1, 0, 255]  # pet, background, border
    ade = catalog.CATALOG["scene_parse150"].label_map
    assert ade[[0, 1, 100, 101]].tolist() == [255, 0, 99, 255]


def test_standardize_picks_keys_and_channel():
    entry = catalog.CATALOG["scene_parse150"]
    annotation = np.zeros((4, 5, 3), np.uint8)
    annotation[..., 0] = 3  # category 3 in R, instance ids in G
    annotation[..., 1] = 7
    image = np.ones((4, 5, 3), np.uint8)
    example = entry.standardize({"image": image, "annotation": annotation})
    assert example["image"] is image
    assert example["label"].shape == (4, 5) and (example["label"] == 2).all()


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
    message = r"not prepared in .*lapseg\[tf\].*tfds build oxford_iiit_pet --file_format=array_record"
    with pytest.raises(FileNotFoundError, match=message):
        data.load_source("oxford_iiit_pet", "train", data_dir=tmp_path)


def test_unknown_name_and_misplaced_source_dir(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'voc'.*camvid"):
        data.load_source("voc", "train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="source_dir is for camvid and folder only"):
        data.load_source("shapes", "train", data_dir=tmp_path, source_dir=tmp_path)
