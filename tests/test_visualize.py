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


def _contour_reference(label, width):
    """A pixel is on the contour when a pixel within `width` (in x and y) differs: loops."""
    height, wide = label.shape
    want = np.zeros(label.shape, bool)
    for y in range(height):
        for x in range(wide):
            window = label[max(0, y - width):y + width + 1, max(0, x - width):x + width + 1]
            want[y, x] = (window != label[y, x]).any()
    return want


def test_contour_against_loops():
    label = _label()
    for width in (0, 1, 2):
        np.testing.assert_array_equal(visualize.contour(label, width),
                                      _contour_reference(label, width))


def test_overlay_blends_colors_over_the_image_and_outlines_regions():
    label = _label()
    image = np.random.default_rng(1).integers(0, 256, (*label.shape, 3), np.uint8)
    got = visualize.overlay(image, label, PALETTE, ignore_label=IGNORE, alpha=0.25, outline=0)
    colors = PALETTE[np.where(label == IGNORE, 3, label)].astype(np.float64)
    want = np.round(0.75 * image + 0.25 * colors)
    want[label == IGNORE] = image[label == IGNORE]
    np.testing.assert_array_equal(got, want.astype(np.uint8))
    outlined = visualize.overlay(image, label, PALETTE, ignore_label=IGNORE, alpha=0.25)
    rim = _contour_reference(label, visualize.OUTLINE) & (label != IGNORE)
    assert rim.any()  # (random ids: nearly every pixel is on a rim; blocks below)
    np.testing.assert_array_equal(outlined[rim], PALETTE[label[rim]])  # the class colour
    np.testing.assert_array_equal(outlined[~rim], want.astype(np.uint8)[~rim])
    with pytest.raises(ValueError, match="image must be uint8 \\[7, 9, 3\\]"):
        visualize.overlay(image[:5], label, PALETTE, ignore_label=IGNORE)


def test_overlay_leaves_background_and_ignored_pixels_untouched():
    label = np.zeros((20, 30), np.int64)  # class 0: background
    label[3:12, 4:15], label[10:18, 18:28], label[0, :] = 1, 2, IGNORE
    image = np.random.default_rng(2).integers(0, 256, (20, 30, 3), np.uint8)
    got = visualize.overlay(image, label, PALETTE, ignore_label=IGNORE, background=0)
    untouched = (label == 0) | (label == IGNORE)
    np.testing.assert_array_equal(got[untouched], image[untouched])
    rim = _contour_reference(label, visualize.OUTLINE) & ~untouched
    np.testing.assert_array_equal(got[rim], PALETTE[label[rim]])
    inside = ~untouched & ~rim
    assert inside.any()
    np.testing.assert_array_equal(
        got[inside], np.round(0.5 * image[inside] + 0.5 * PALETTE[label[inside]]))


def test_background_class_rule():
    assert visualize.background_class(("background", "cat")) == 0
    assert visualize.background_class(("Void", "cat")) == 0
    assert visualize.background_class(("sky", "background")) is None  # only class 0
    assert visualize.background_class(("road", "car")) is None


def test_label_png_palette_is_the_class_colors(tmp_path):
    label = np.arange(21 * 4).reshape(4, 21) % 21  # every VOC class
    voc = visualize.palette_for("voc")
    visualize.label_png(label, voc, ignore_label=255).save(tmp_path / "voc.png")
    with PIL.Image.open(tmp_path / "voc.png") as png:
        assert png.mode == "P"
        np.testing.assert_array_equal(np.asarray(png), label)
        entries = np.array(png.getpalette()).reshape(-1, 3)
    np.testing.assert_array_equal(entries[:21], voc[:21])
    np.testing.assert_array_equal(entries[255], voc[21])  # the ignore label's colour
    assert (entries[1:21].max(-1) >= 64).all()  # visible colours, not ids 1..20 as grey


def test_enlarge_to_the_display_size():
    assert visualize.display_scale(40, 60) == 9 and visualize.display_scale(600, 100) == 1
    assert visualize.display_scale(256, 100) == 2
    label = _label()
    image = np.random.default_rng(3).integers(0, 256, (*label.shape, 3), np.uint8)
    scale = visualize.display_scale(*label.shape)
    big_image, big_label = visualize.enlarge(image, label, scale=scale)
    assert max(big_label.shape) >= 512 and big_image.shape == (*big_label.shape, 3)
    np.testing.assert_array_equal(big_label[::scale, ::scale], label)  # nearest: ids stay ids
    np.testing.assert_array_equal(big_label, np.kron(label, np.ones((scale, scale), int)))
    want = PIL.Image.fromarray(image).resize(big_label.shape[::-1], PIL.Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(big_image, np.asarray(want))


def _has_color(picture, color) -> bool:
    return bool((picture.reshape(-1, 3) == color).all(-1).any())


def test_legend_shows_each_class_color():
    names = ("a", "bee", "sea")
    strip = visualize.legend(names, PALETTE)
    assert strip.dtype == np.uint8 and strip.ndim == 3
    for color in PALETTE[:3]:
        assert _has_color(strip, color)
    only = visualize.legend(names, PALETTE, classes=[2, IGNORE], ignore_label=IGNORE)
    assert _has_color(only, PALETTE[2]) and _has_color(only, PALETTE[3])
    assert not _has_color(only, PALETTE[1])
    narrow = visualize.legend(names, PALETTE, width=60)  # wraps onto rows
    assert narrow.shape[1] == 60 and narrow.shape[0] > strip.shape[0]
    with pytest.raises(ValueError, match="legend class 7"):
        visualize.legend(names, PALETTE, classes=[7])


def test_side_by_side_panels():
    label = _label()
    label[label == IGNORE] = 2
    image = np.random.default_rng(4).integers(0, 256, (*label.shape, 3), np.uint8)
    truth = _label()
    names = ("a", "bee", "sea")
    scale = visualize.display_scale(*label.shape)
    two = visualize.side_by_side(image, label, PALETTE, class_names=names, ignore_label=IGNORE)
    three = visualize.side_by_side(image, label, PALETTE, class_names=names,
                                   ignore_label=IGNORE, ground_truth=truth)
    panel_width = label.shape[1] * scale
    assert panel_width >= 512 and two.shape[1] < three.shape[1]
    assert three.shape[1] - two.shape[1] == panel_width + 8  # one more panel and its gap
    big_image, big_label = visualize.enlarge(image, label, scale=scale)
    big_truth = visualize.enlarge(label=truth, scale=scale)[1]

    def contains(picture, panel):  # the panel appears whole somewhere in the picture
        rows, cols = np.nonzero((picture[..., :] == panel[0, 0]).all(-1))
        return any(np.array_equal(picture[r:r + panel.shape[0], c:c + panel.shape[1]], panel)
                   for r, c in zip(rows, cols))

    assert contains(three, big_image)
    assert contains(three, visualize.colorize(big_label, PALETTE, ignore_label=IGNORE))
    assert contains(three, visualize.colorize(big_truth, PALETTE, ignore_label=IGNORE))
    assert _has_color(three, PALETTE[3])  # the ground truth's ignored pixels, and legend
    with pytest.raises(ValueError, match="ground truth is"):
        visualize.side_by_side(image, label, PALETTE, class_names=names, ignore_label=IGNORE,
                               ground_truth=truth[:3])


def test_palettes():
    # VOC devkit colours: aeroplane, person, tvmonitor, and void (index 255).
    voc = visualize.palette_for("voc")
    np.testing.assert_array_equal(voc[[1, 15, 20, 21]],
                                  [[128, 0, 0], [192, 128, 128], [0, 64, 128], [224, 224, 192]])
    assert voc.shape == (21 + 1, 3) and voc.dtype == np.uint8
    np.testing.assert_array_equal(visualize.palette_for("camvid"), camvid.PALETTE)
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        visualize.palette_for("nope")
