"""Per-example transforms: normalisation constants, windowed resize, train/eval transforms."""

import numpy as np
import PIL.Image
import pytest

from lapseg.data import augment
from lapseg.ops.normalize import normalize

IGNORE = 11


def _pair(height=37, width=53, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    label = rng.integers(0, 11, (height, width), dtype=np.uint8)
    return image, label


def test_normalize_constants():
    pixel = np.array([[255, 128, 0]], np.uint8)
    torch = normalize(pixel, "torch")
    expected = [[(1 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, -0.406 / 0.225]]
    np.testing.assert_allclose(torch, expected, rtol=1e-6)
    caffe = normalize(pixel, "caffe")  # BGR order, 0-255, minus the BGR mean
    np.testing.assert_allclose(caffe, [[0 - 103.939, 128 - 116.779, 255 - 123.68]], rtol=1e-6)
    np.testing.assert_allclose(normalize(pixel, "none"), [[1, 128 / 255, 0]])
    assert torch.dtype == caffe.dtype == np.float32
    with pytest.raises(ValueError, match="unknown normalisation convention 'imagenet'"):
        normalize(pixel, "imagenet")


@pytest.mark.parametrize(
    "scaled, window",
    [((74, 106), (5, 7, 30, 40)), ((19, 27), (0, 0, 30, 40)), ((50, 60), (10, 20, 48, 48))],
)
def test_scaled_window_equals_resize_then_crop(scaled, window):
    """Reference: PIL resize of the whole pair, then slicing (what the window avoids)."""
    image, label = _pair()
    top, left, height, width = window
    full_image = np.asarray(PIL.Image.fromarray(image).resize(scaled[::-1], PIL.Image.BILINEAR))
    full_label = np.asarray(PIL.Image.fromarray(label).resize(scaled[::-1], PIL.Image.NEAREST))
    got_image, got_label = augment.scaled_window(image, label, scaled, top, left, height, width)
    np.testing.assert_array_equal(got_label, full_label[top : top + height, left : left + width])
    expected = full_image[top : top + height, left : left + width].astype(int)
    assert np.abs(got_image.astype(int) - expected).max() <= 1  # float rounding only


def _augment(scale_range, flip=False, crop=(32, 48)):
    return augment.TrainAugment(
        crop_size=crop, scale_range=scale_range, flip=flip, normalization="none", ignore_label=IGNORE
    )


def test_identity_settings_return_the_normalised_crop():
    image, label = _pair()
    out = _augment((1.0, 1.0)).random_map({"image": image, "label": label}, np.random.default_rng(0))
    assert out["image"].shape == (32, 48, 3) and out["image"].dtype == np.float32
    assert out["label"].shape == (32, 48) and out["label"].dtype == np.int32
    # The crop is somewhere in the image: find it by its label and compare the image.
    matches = [
        (top, left)
        for top in range(37 - 32 + 1)
        for left in range(53 - 48 + 1)
        if np.array_equal(label[top : top + 32, left : left + 48], out["label"])
    ]
    assert len(matches) == 1
    top, left = matches[0]
    np.testing.assert_allclose(out["image"], image[top : top + 32, left : left + 48] / 255, rtol=1e-6)


def test_small_scale_pads_with_zero_and_ignore():
    image, label = _pair()
    out = _augment((0.5, 0.5)).random_map({"image": image, "label": label}, np.random.default_rng(0))
    # 37x53 at scale 0.5 -> 18x26 (rounded), padded to 32x48 at the bottom and right.
    assert (out["label"][:18, :26] != IGNORE).all()
    assert (out["label"][18:] == IGNORE).all() and (out["label"][:, 26:] == IGNORE).all()
    assert (out["image"][18:] == 0).all() and (out["image"][:, 26:] == 0).all()


def test_flip_and_values_and_rng():
    image, label = _pair()
    element = {"image": image, "label": label}
    transform = _augment((0.5, 2.0), flip=True)
    outs = [transform.random_map(element, np.random.default_rng(seed)) for seed in range(8)]
    for out in outs:  # nearest-neighbour labels never invent values
        assert set(np.unique(out["label"])) <= set(np.unique(label)) | {IGNORE}
    again = transform.random_map(element, np.random.default_rng(3))
    np.testing.assert_array_equal(again["image"], outs[3]["image"])
    assert len({out["label"].tobytes() for out in outs}) == 8
    # With scale 1 and a full-size crop, the only randomness left is the flip.
    full = _augment((1.0, 1.0), flip=True, crop=(37, 53))
    flips = [full.random_map(element, np.random.default_rng(seed))["label"] for seed in range(8)]
    expected = {label.astype(np.int32).tobytes(), label[:, ::-1].astype(np.int32).tobytes()}
    assert {f.tobytes() for f in flips} == expected


def test_eval_pad():
    image, label = _pair()
    out = augment.EvalPad(size=(64, 64), normalization="none", ignore_label=IGNORE).map(
        {"image": image, "label": label}
    )
    np.testing.assert_array_equal(out["label"][:37, :53], label)
    assert (out["label"][37:] == IGNORE).all() and (out["label"][:, 53:] == IGNORE).all()
    np.testing.assert_allclose(out["image"][:37, :53], image / 255, rtol=1e-6)
    with pytest.raises(ValueError, match="37x53 does not fit the padded size 32x64"):
        augment.EvalPad(size=(32, 64), normalization="none", ignore_label=IGNORE).map(
            {"image": image, "label": label}
        )


@pytest.mark.parametrize("convention", ["torch", "caffe", "none"])
def test_normalize_uint8_is_normalize_bit_for_bit(convention):
    images = np.random.default_rng(1).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    got = augment.normalize_uint8(images, convention)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, normalize(images, convention))
    every_value = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    every_value[:, 0] = every_value[::-1, 0]  # channels differ, so a swapped order shows
    np.testing.assert_array_equal(augment.normalize_uint8(every_value, convention),
                                  normalize(every_value, convention))
    floats = images.astype(np.float32)  # anything but uint8: `normalize` itself
    np.testing.assert_array_equal(augment.normalize_uint8(floats, convention),
                                  normalize(floats, convention))


@pytest.mark.parametrize("scale_range, crop", [((0.5, 2.0), (32, 48)), ((0.5, 0.5), (32, 48)),
                                               ((1.0, 1.0), (37, 53))])
@pytest.mark.parametrize("convention", ["torch", "caffe"])
def test_crop_then_batch_normalisation_equals_train_augment(scale_range, crop, convention):
    """The pipeline's split (`TrainCrop` per example, `NormalizeBatch` per batch) gives
    exactly `TrainAugment`'s examples: same draws, same values, same padding."""
    kwargs = dict(crop_size=crop, scale_range=scale_range, flip=True, normalization=convention,
                  ignore_label=IGNORE)
    whole, split = augment.TrainAugment(**kwargs), augment.TrainCrop(**kwargs)
    elements = [dict(zip(("image", "label"), _pair(seed=seed))) for seed in range(6)]
    expected = [whole.random_map(e, np.random.default_rng(i)) for i, e in enumerate(elements)]
    crops = [split.random_map(e, np.random.default_rng(i)) for i, e in enumerate(elements)]
    assert crops[0]["image"].dtype == np.uint8 and crops[0]["label"].dtype == np.int32
    batch = {key: np.stack([c[key] for c in crops]) for key in crops[0]}
    got = augment.NormalizeBatch(convention).map(batch)
    assert set(got) == {"image", "label"}
    np.testing.assert_array_equal(got["image"], np.stack([e["image"] for e in expected]))
    np.testing.assert_array_equal(got["label"], np.stack([e["label"] for e in expected]))
    assert got["image"].dtype == np.float32 and got["label"].dtype == np.int32


def test_label_resize_samples_centres_as_matlab_imresize_nearest():
    """The labels' nearest resize (PIL's NEAREST, through `scaled_window`) samples the pixel
    under each output pixel's centre, as MATLAB's `imresize(mask, size, 'nearest')` does for
    guosheng/refinenet (`main/batch_do_data_crop.m`; numpy transcription of `imresize.m` in
    tests/decoders/matlab_reference.py). Odd input sizes: no ties between two pixels, where
    the two round differently."""
    from tests.decoders import matlab_reference

    _, label = _pair(37, 53)
    for scaled in ((26, 37), (74, 106), (45, 61), (13, 19)):  # down and up, 0.35 to 2
        _, got = augment.scaled_window(_pair(37, 53)[0], label, scaled, 0, 0, *scaled)
        np.testing.assert_array_equal(got, matlab_reference.imresize_nearest(label, scaled),
                                      err_msg=str(scaled))


def test_enlarged_size_is_refinenets_short_edge_rule():
    # guosheng/refinenet: todo_scale = 450 / short_edge when short_edge < 450, then
    # imresize(img, todo_scale), whose output is ceil(todo_scale * size).
    assert augment.enlarged_size((360, 480), 450) == (450, 600)  # CamVid: x1.25
    assert augment.enlarged_size((1024, 2048), 450) == (1024, 2048)  # Cityscapes: unchanged
    assert augment.enlarged_size((450, 333), 450) == (609, 450)  # ceil(450 / 333 * 450) = 609
    assert augment.enlarged_size((37, 53), None) == (37, 53)
    for h, w in ((37, 53), (13, 7), (300, 301), (449, 1000)):
        enlarged = augment.enlarged_size((h, w), 450)
        scale = 450.0 / min(h, w)
        assert enlarged == (int(np.ceil(scale * h)), int(np.ceil(scale * w)))
        assert min(enlarged) >= 450


def test_min_short_edge_enlarges_before_the_random_scale():
    """`min_short_edge`: the pair is resized as if first enlarged so its short edge is
    `min_short_edge` (here 45 for a 27 x 41 image: x5/3 -> 45 x 69), then scaled by the
    random factor; at scale 1 the whole enlarged pair is the PIL resize of the original to
    45 x 69 (image bilinear, label nearest); images already large enough are untouched."""
    image, label = _pair(27, 41)
    element = {"image": image, "label": label}
    enlarged = augment.enlarged_size((27, 41), 45)
    assert enlarged == (45, 69)  # ceil(45 / 27 * 41) = ceil(68.33)
    kwargs = dict(crop_size=(160, 160), flip=False, normalization="none", ignore_label=IGNORE)
    at_one = augment.TrainCrop(scale_range=(1.0, 1.0), min_short_edge=45, **kwargs)
    out = at_one.random_map(element, np.random.default_rng(0))
    np.testing.assert_array_equal(out["valid"], enlarged)
    want_label = np.asarray(PIL.Image.fromarray(label).resize((69, 45), PIL.Image.NEAREST))
    want_image = np.asarray(PIL.Image.fromarray(image).resize((69, 45), PIL.Image.BILINEAR))
    np.testing.assert_array_equal(out["label"][:45, :69], want_label)
    assert np.abs(out["image"][:45, :69].astype(int) - want_image.astype(int)).max() <= 1
    # The random factor multiplies the enlarged size: round(45 s) x round(69 s).
    scaled = augment.TrainCrop(scale_range=(0.5, 2.0), min_short_edge=45, **kwargs)
    for seed in range(6):
        s = np.random.default_rng(seed).uniform(0.5, 2.0)  # the transform's first draw
        got = scaled.random_map(element, np.random.default_rng(seed))["valid"]
        np.testing.assert_array_equal(got, (round(45 * s), round(69 * s)))
    # Short edge already >= min_short_edge (or None): the same draws and output as before.
    plain = augment.TrainAugment(scale_range=(0.5, 2.0), **kwargs)
    for min_edge in (27, 20, None):
        same = augment.TrainAugment(scale_range=(0.5, 2.0), min_short_edge=min_edge, **kwargs)
        a = plain.random_map(element, np.random.default_rng(5))
        b = same.random_map(element, np.random.default_rng(5))
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
