"""Palette PNGs, colour images and overlays against direct numpy computations."""

import numpy as np
import PIL.Image
import pytest

from lapseg import visualize
from lapseg.data import camvid

PALETTE = np.array([[10, 20, 30], [200, 0, 0], [0, 250, 5], [9, 9, 9]], np.uint8)  # 3 classes
IGNORE = 255


def _label():
    label = np.random.default_rng(0).integers(0, 3, (7, 9))
    label[2:4, 3:6] = IGNORE
    return label


def test_colorize_looks_up_classes_and_ignore_color():
    label = _label()
    rgb = visualize.colorize(label, PALETTE, ignore_label=IGNORE)
    for y in range(label.shape[0]):
        for x in range(label.shape[1]):
            row = 3 if label[y, x] == IGNORE else label[y, x]
            np.testing.assert_array_equal(rgb[y, x], PALETTE[row])
    with pytest.raises(ValueError, match="label value 7 is neither a class id"):
        visualize.colorize(np.full((2, 2), 7), PALETTE, ignore_label=IGNORE)


def test_label_png_round_trips_class_ids_and_colors(tmp_path):
    label = _label()
    visualize.label_png(label, PALETTE, ignore_label=IGNORE).save(tmp_path / "label.png")
    with PIL.Image.open(tmp_path / "label.png") as png:
        assert png.mode == "P"
        np.testing.assert_array_equal(np.asarray(png), label)
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")),
                                      visualize.colorize(label, PALETTE, ignore_label=IGNORE))
    with pytest.raises(ValueError, match="int \\[H, W\\] map"):
        visualize.label_png(label.astype(np.float32), PALETTE, ignore_label=IGNORE)


def test_overlay_blends_colors_over_the_image():
    label = _label()
    image = np.random.default_rng(1).integers(0, 256, (*label.shape, 3), np.uint8)
    got = visualize.overlay(image, label, PALETTE, ignore_label=IGNORE, alpha=0.25)
    colors = PALETTE[np.where(label == IGNORE, 3, label)].astype(np.float64)
    want = np.round(0.75 * image + 0.25 * colors)
    want[label == IGNORE] = image[label == IGNORE]
    np.testing.assert_array_equal(got, want.astype(np.uint8))
    with pytest.raises(ValueError, match="image must be uint8 \\[7, 9, 3\\]"):
        visualize.overlay(image[:5], label, PALETTE, ignore_label=IGNORE)


def test_palettes():
    # VOC devkit colours: aeroplane, person, tvmonitor, and void (index 255).
    voc = visualize.palette_for("voc")
    np.testing.assert_array_equal(voc[[1, 15, 20, 21]],
                                  [[128, 0, 0], [192, 128, 128], [0, 64, 128], [224, 224, 192]])
    assert voc.shape == (21 + 1, 3) and voc.dtype == np.uint8
    np.testing.assert_array_equal(visualize.palette_for("camvid"), camvid.PALETTE)
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        visualize.palette_for("nope")
