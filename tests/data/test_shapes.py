"""The generated `shapes` dataset: deterministic, complete, and colour carries no class."""

import time

import numpy as np
import pytest

from lapseg import data
from lapseg.data import shapes

TINY = dict(name="tiny", image_size=64, num_train=6, num_validation=3)


def _build_tiny(data_dir):
    builder = shapes.Shapes(
        data_dir=data_dir, config=shapes.ShapesConfig(**TINY), file_format="array_record"
    )
    builder.download_and_prepare(file_format="array_record")
    return builder


def _split(data_dir, split):
    source = data.load_source("shapes", split, data_dir=data_dir)
    images = np.stack([source[i]["image"] for i in range(len(source))])
    labels = np.stack([source[i]["label"] for i in range(len(source))])
    return images, labels


def test_build_is_deterministic(tmp_path):
    start = time.perf_counter()
    first = _build_tiny(tmp_path / "a")
    print(f"\ntiny shapes build: {time.perf_counter() - start:.2f} s")
    second = _build_tiny(tmp_path / "b")
    for split in ("train", "validation"):
        name = f"shapes-{split}.array_record-00000-of-00001"
        assert (first.data_path / name).read_bytes() == (second.data_path / name).read_bytes()
    a, b = first.as_data_source("train"), second.as_data_source("train")
    assert len(a) == TINY["num_train"]
    for i in range(3):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
        np.testing.assert_array_equal(a[i]["label"], b[i]["label"])
        assert a[i]["image"].shape == (64, 64, 3)


def test_examples_depend_on_seed_split_and_index():
    config = shapes.ShapesConfig(**TINY)
    reference = shapes.generate_example(config, 0, 0)[0]
    assert not np.array_equal(reference, shapes.generate_example(config, 0, 1)[0])
    assert not np.array_equal(reference, shapes.generate_example(config, 1, 0)[0])
    other_seed = shapes.ShapesConfig(**TINY, seed=1)
    assert not np.array_equal(reference, shapes.generate_example(other_seed, 0, 0)[0])


@pytest.mark.parametrize("split, count", [("train", 2000), ("validation", 200)])
def test_labels_cover_every_class(shapes_dir, split, count):
    images, labels = _split(shapes_dir, split)
    assert images.shape == (count, 96, 96, 3) and images.dtype == np.uint8
    assert labels.shape == (count, 96, 96) and labels.dtype == np.uint8
    values, pixels = np.unique(labels, return_counts=True)
    assert values.tolist() == [0, 1, 2, 3, 4, 255]
    fraction = dict(zip(values.tolist(), pixels / labels.size))
    assert 0.02 < fraction[255] < 0.2  # a thin band on boundaries
    assert all(fraction[c] > 0.02 for c in range(1, 5))  # every shape class is common


def test_colour_does_not_predict_class(shapes_dir):
    images, labels = _split(shapes_dir, "train")
    means = np.stack([images[labels == c].mean(axis=0) for c in range(5)])  # [class, rgb]
    print(f"\nmean RGB per class:\n{means.round(1)}")
    # Colour drawn per region from one distribution: all class means near 127.5.
    # (A colour-coded dataset would put them ~100 apart.)
    assert np.abs(means - means.mean(axis=0)).max() < 8


def test_dataset_info_matches_build(shapes_dir):
    info = data.dataset_info("shapes")
    assert info.num_classes == 5 and info.ignore_label == 255
    assert info.palette.shape == (6, 3) and info.image_size == (96, 96)
    assert data.dataset_info("shapes/128").image_size == (128, 128)
    with pytest.raises(ValueError, match="no config 'nope'"):
        data.dataset_info("shapes/nope")
