"""`lapseg predict IMAGES...`: files, directories and glob patterns, in order, each image
once; a directory or pattern that matches nothing is a one-line error naming it. Images
are read upright (EXIF orientation)."""

import os
import re
import types

import numpy as np
import PIL.Image
import pytest

from lapseg.cli import common, predict
from lapseg.train import config as config_lib
from tests.cli.helpers import run


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """tmp_path as the working dir, with `a/` (b.png, c.JPG, d.jpeg, notes.txt, .hidden.png,
    sub/e.png), `x.png` and the empty dir `empty/`."""
    monkeypatch.chdir(tmp_path)
    for name in ("a/b.png", "a/c.JPG", "a/d.jpeg", "a/notes.txt", "a/.hidden.png", "a/sub/e.png",
                 "x.png"):
        os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
        open(name, "wb").close()
    os.mkdir("empty")
    os.mkdir("a/folder.png")  # a directory with an image's name is no image
    return tmp_path


def _paths(*args):
    return predict.image_paths("lapseg predict", list(args))


def test_a_directory_gives_its_images_sorted_not_recursive(tree):
    assert _paths("a") == ["a/b.png", "a/c.JPG", "a/d.jpeg"]


def test_a_pattern_is_expanded_sorted(tree):
    assert _paths("a/*.p*") == ["a/b.png"]  # glob skips hidden files
    assert _paths("a/*.png") == ["a/b.png"]  # a/folder.png is a directory: never matched
    assert _paths("a/*/*.png") == ["a/sub/e.png"]
    assert _paths("a/[cd].*") == ["a/c.JPG", "a/d.jpeg"]


def test_files_directories_and_patterns_mix_in_order_each_once(tree):
    assert _paths("x.png", "a", "a/sub/*.png", "./a/b.png", "x.png", "a/d.jpeg") == [
        "x.png", "a/b.png", "a/c.JPG", "a/d.jpeg", "a/sub/e.png"]
    assert _paths(str(tree / "a" / "d.jpeg"), "a") == [
        str(tree / "a" / "d.jpeg"), "a/b.png", "a/c.JPG"]  # the first spelling is kept


@pytest.mark.parametrize("arg, message", [
    ("empty", "no .png/.jpg/.jpeg images in directory empty"),
    ("a/sub/..//sub/*.jpg", "no image files match 'a/sub/..//sub/*.jpg'"),
    ("nowhere/*.png", "no image files match 'nowhere/*.png'"),
    ("missing.png", "no such image file: missing.png"),
])
def test_what_matches_nothing_is_a_one_line_error_naming_it(tree, arg, message):
    with pytest.raises(SystemExit) as exit_:
        _paths("x.png", arg)
    assert str(exit_.value) == f"lapseg predict: {message}"


def test_the_command_names_an_empty_match_before_restoring_anything(tree):
    config_lib.save(config_lib.base_config(), tree / "w")  # a work dir with no checkpoint
    for arg, message in [("empty", "in directory empty"), ("a/*.gif", "match 'a/*.gif'")]:
        code = run("predict", "--workdir", tree / "w", "x.png", arg)
        assert isinstance(code, str) and "\n" not in code, code
        assert code.startswith("lapseg predict: no ") and message in code, code
    code = run("predict", "--workdir", tree / "w", "a")  # found: then the missing checkpoint
    assert isinstance(code, str) and "no checkpoint in" in code, code


def test_an_exif_rotated_photo_is_predicted_and_written_upright(tmp_path, monkeypatch):
    """Issue #26: a phone photo stored sideways with EXIF orientation 6 (rotate 90 degrees
    clockwise to view) was predicted, and written, sideways."""
    stored = np.zeros((32, 48, 3), np.uint8)
    stored[:16, :16, 0] = 255  # a red block in the stored top-left corner
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # Orientation
    PIL.Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    with PIL.Image.open(tmp_path / "phone.jpg") as jpeg:  # the stored pixels, decoded
        upright = np.rot90(np.asarray(jpeg), k=-1)  # 48 high, 32 wide; the block top-right
    assert upright[:16, 16:, 0].mean() > 200 and upright[16:, :, 0].mean() < 50
    given = []

    def predictor(image):  # class 1 where the image is red
        given.append(image)
        return (image[..., 0] > 128).astype(np.int32)

    info = types.SimpleNamespace(num_classes=2, ignore_label=255, class_names=("bg", "fg"),
                                 palette=np.array([[0, 0, 0], [0, 255, 0], [255, 255, 255]],
                                                  np.uint8))
    monkeypatch.setattr(common, "restore_predictor", lambda *args, **kwargs: (predictor, info, 1))
    config_lib.save(config_lib.base_config(), tmp_path / "w")
    assert run("predict", "--workdir", tmp_path / "w", f"--output_dir={tmp_path / 'out'}",
               tmp_path / "phone.jpg") == 0
    (image,) = given
    assert image.shape == (48, 32, 3)
    np.testing.assert_array_equal(image, upright)
    with PIL.Image.open(tmp_path / "out" / "phone_label.png") as png:
        np.testing.assert_array_equal(np.asarray(png), upright[..., 0] > 128)
    with PIL.Image.open(tmp_path / "out" / "phone_overlay.png") as png:
        assert png.size == (32 * 11, 48 * 11)  # upright, enlarged to a long side >= 512


def _fake_run(monkeypatch, tmp_path):
    """A work dir whose 'model' labels class 1 where the red channel is over 128 (shapes'
    palette and class names, class 0 'background'), without restoring anything."""
    from lapseg import data  # pylint: disable=import-outside-toplevel

    info = data.dataset_info("shapes")
    monkeypatch.setattr(common, "restore_predictor", lambda *args, **kwargs: (
        lambda image: (image[..., 0] > 128).astype(np.int32), info, 1))
    config_lib.save(config_lib.base_config(), tmp_path / "w")
    return info


def test_masks_add_a_ground_truth_panel(tmp_path, monkeypatch):
    from lapseg import visualize  # pylint: disable=import-outside-toplevel

    info = _fake_run(monkeypatch, tmp_path)
    image = np.zeros((30, 40, 3), np.uint8)
    image[5:20, 5:25, 0] = 255
    PIL.Image.fromarray(image).save(tmp_path / "im.png")
    truth = np.zeros((30, 40), np.uint8)
    truth[6:22, 5:25], truth[:2] = 2, 255
    (tmp_path / "masks").mkdir()
    PIL.Image.fromarray(truth).save(tmp_path / "masks" / "im.png")
    assert run("predict", "--workdir", tmp_path / "w", f"--output_dir={tmp_path / 'out'}",
               f"--masks={tmp_path / 'masks'}", tmp_path / "im.png") == 0
    pred = (image[..., 0] > 128).astype(np.int32)
    with PIL.Image.open(tmp_path / "out" / "im_panels.png") as png:
        panels = np.asarray(png)
    np.testing.assert_array_equal(panels, visualize.side_by_side(
        image, pred, info.palette, class_names=info.class_names, ignore_label=255,
        ground_truth=truth.astype(np.int64)))
    without = visualize.side_by_side(image, pred, info.palette, class_names=info.class_names,
                                     ignore_label=255)
    assert panels.shape[1] > without.shape[1] and max(panels.shape[:2]) >= 512
    with PIL.Image.open(tmp_path / "out" / "im_overlay.png") as png:
        overlay = np.asarray(png)
    big_image, big_pred = visualize.enlarge(image, pred, scale=13)  # 40 * 13 >= 512
    assert overlay.shape == big_image.shape
    np.testing.assert_array_equal(overlay[big_pred == 0], big_image[big_pred == 0])


@pytest.mark.parametrize("mask, message", [
    (None, "--masks: cannot read the ground truth .*im.png"),
    (np.zeros((5, 5), np.uint8), r"--masks: .*im.png is \(5, 5\) .*its image \(30, 40\)"),
    (np.full((30, 40), 9, np.uint8), r"--masks: .*im.png holds value 9, neither a class id"),
])
def test_bad_masks_are_one_line_errors(tmp_path, monkeypatch, mask, message):
    _fake_run(monkeypatch, tmp_path)
    PIL.Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "im.png")
    (tmp_path / "masks").mkdir()
    if mask is not None:
        PIL.Image.fromarray(mask).save(tmp_path / "masks" / "im.png")
    got = run("predict", "--workdir", tmp_path / "w", f"--output_dir={tmp_path / 'out'}",
              f"--masks={tmp_path / 'masks'}", tmp_path / "im.png")
    assert isinstance(got, str) and "\n" not in got and re.search(message, got), got
    got = run("predict", "--workdir", tmp_path / "w", f"--masks={tmp_path / 'nowhere'}",
              tmp_path / "im.png")
    assert isinstance(got, str) and "is not a directory" in got, got
