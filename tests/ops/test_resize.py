"""Tests for lapseg.ops.resize against PyTorch's own F.interpolate / F.adaptive_avg_pool2d.

PyTorch (CPU) is the reference because the papers' public implementations were written
against exactly these functions; the tests skip cleanly without torch.
"""

import jax
import numpy as np
import pytest
from jax.test_util import check_grads

from lapseg.ops import resize

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _torch_nhwc(fn, x, *args, **kwargs):
    """Runs a torch NCHW function on an NHWC numpy array and returns NHWC numpy."""
    out = fn(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), *args, **kwargs)
    return out.numpy().transpose(0, 2, 3, 1)


def _random(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize(
    "in_hw,out_hw",
    [((7, 9), (16, 13)), ((33, 45), (9, 11)), ((5, 8), (5, 8)), ((12, 1), (1, 6)), ((4, 6), (13, 6))],
)
def test_resize_bilinear_matches_torch(in_hw, out_hw, align_corners):
    # Reference: torch F.interpolate(mode='bilinear') (no antialias), up, down, identity, size 1.
    x = _random(sum(in_hw), 2, *in_hw, 3)
    want = _torch_nhwc(F.interpolate, x, size=out_hw, mode="bilinear", align_corners=align_corners)
    got = resize.resize_bilinear(x, out_hw, align_corners=align_corners)
    assert got.shape == (2, *out_hw, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_resize_bilinear_is_not_jax_image_resize():
    # Documents why ops.resize exists: jax.image.resize antialiases when shrinking.
    x = _random(0, 1, 33, 45, 2)
    ours = resize.resize_bilinear(x, (9, 11), align_corners=False)
    theirs = jax.image.resize(x, (1, 9, 11, 2), "bilinear")
    assert np.abs(np.asarray(ours) - np.asarray(theirs)).max() > 1e-2


@pytest.mark.parametrize("align_corners", [True, False])
def test_resize_bilinear_gradients(align_corners):
    x = _random(1, 1, 5, 7, 2).astype(np.float64)
    with jax.enable_x64(True):
        check_grads(
            lambda v: resize.resize_bilinear(v, (8, 4), align_corners=align_corners),
            (x,),
            order=2,
            modes=("fwd", "rev"),
        )


@pytest.mark.parametrize("in_hw", [(13, 17), (60, 45), (6, 6)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6, (2, 5)])
def test_adaptive_avg_pool_matches_torch(in_hw, bins):
    # Reference: torch F.adaptive_avg_pool2d (floor/ceil bin edges, overlapping bins).
    x = _random(in_hw[0], 2, *in_hw, 4)
    want = _torch_nhwc(F.adaptive_avg_pool2d, x, bins)
    got = resize.adaptive_avg_pool(x, bins)
    bh, bw = (bins, bins) if isinstance(bins, int) else bins
    assert got.shape == (2, bh, bw, 4)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "in_hw,out_hw", [((7, 9), (16, 13)), ((33, 45), (9, 11)), ((360, 480), (45, 60)), ((11, 13), (29, 3))]
)
def test_resize_nearest_matches_torch(in_hw, out_hw):
    # Reference: torch F.interpolate(mode='nearest') on uint8 labels (exact equality).
    labels = np.random.default_rng(0).integers(0, 12, (2, *in_hw), dtype=np.uint8)
    want = F.interpolate(torch.from_numpy(labels)[:, None], size=out_hw, mode="nearest")[:, 0].numpy()
    got = resize.resize_nearest(labels, out_hw)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("in_hw,out_hw", [((64, 96), (8, 12)), ((96, 96), (24, 24)), ((33, 45), (9, 11))])
def test_centered_resize_nearest_samples_block_centres(in_hw, out_hw):
    # References: torch F.interpolate(mode='nearest-exact'); for integer factors f, the numpy
    # block centre `f i + f // 2` (the pixel nearest the centre f i + (f - 1) / 2, ties down-right).
    labels = np.random.default_rng(1).integers(0, 12, (2, *in_hw), dtype=np.uint8)
    got = resize.resize_nearest(labels, out_hw, centered=True)
    want = F.interpolate(torch.from_numpy(labels)[:, None], size=out_hw, mode="nearest-exact")[:, 0]
    np.testing.assert_array_equal(got, want.numpy())
    fh, fw = in_hw[0] // out_hw[0], in_hw[1] // out_hw[1]
    if (fh * out_hw[0], fw * out_hw[1]) == in_hw:
        np.testing.assert_array_equal(got, labels[:, fh // 2 :: fh, fw // 2 :: fw])


def test_nearest_indices_match_torch_float32_rounding():
    # Reference: torch nearest on an index ramp, for every in/out size pair up to 64; catches the
    # float32-vs-exact floor differences (15 pairs here, e.g. in=26, out=22) an exact formula misses.
    for in_size in range(1, 65):
        ramp = torch.arange(in_size, dtype=torch.float32)[None, None]
        for out_size in range(1, 65):
            want = F.interpolate(ramp, size=out_size, mode="nearest")[0, 0].numpy().astype(np.int64)
            np.testing.assert_array_equal(resize.nearest_indices(in_size, out_size), want)


@pytest.mark.parametrize(
    "fn,arg",
    [(resize.resize_bilinear, (0, 3)), (resize.adaptive_avg_pool, (2, 2.5)), (resize.resize_nearest, (4,))],
)
def test_bad_sizes_raise(fn, arg):
    x = np.zeros((1, 4, 4, 1), np.float32) if fn is not resize.resize_nearest else np.zeros((1, 4, 4), np.int32)
    kwargs = {"align_corners": True} if fn is resize.resize_bilinear else {}
    with pytest.raises(ValueError, match="positive int"):
        fn(x, arg, **kwargs)


def test_integer_input_to_bilinear_raises():
    with pytest.raises(ValueError, match="floating point"):
        resize.resize_bilinear(np.zeros((1, 4, 4, 1), np.int32), (2, 2), align_corners=True)
