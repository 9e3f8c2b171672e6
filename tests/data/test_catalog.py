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
    pet = catalog.CATALOG["oxford_iiit_pet"].label_map
    assert pet[[1, 2, 3]].tolist() == [1, 0, 255]  # pet, background, border


def test_standardize_picks_keys_and_channel():
    entry = catalog.CATALOG["oxford_iiit_pet"]
    mask = np.zeros((4, 5, 1), np.uint8)
    mask[..., 0] = 2  # background
    image = np.ones((4, 5, 3), np.uint8)
    example = entry.standardize({"image": image, "segmentation_mask": mask})
    assert example["image"] is image
    assert example["label"].shape == (4, 5) and (example["label"] == 0).all()


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
    message = r"not prepared in .*lapseg\[tf\].*tfds build oxford_iiit_pet --file_format=array_record"
    with pytest.raises(data.DataError, match=message):
        data.load_source("oxford_iiit_pet", "train", data_dir=tmp_path)


def test_unknown_name_and_misplaced_source_dir(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'pascal'.*camvid"):
        data.load_source("pascal", "train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="source_dir is for camvid, folder, cityscapes, voc, "
                       "ade20k only"):
        data.load_source("shapes", "train", data_dir=tmp_path, source_dir=tmp_path)
