"""PyramidPooling against PyTorch references: semseg's PPM (adaptive, concat) and
ICNet's Caffe pooling pyramid (fixed kernels/strides, sum)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lapseg.layers.ppm import PyramidPooling, caffe_average_matrix

# ICNet Cityscapes prototxt (conv5_3_pool{1,2,3,6}) on its 33 x 65 conv5_3.
ICNET_KERNELS = ((33, 65), (17, 33), (13, 25), (8, 15))
ICNET_STRIDES = ((33, 65), (16, 32), (10, 20), (5, 10))


def test_caffe_cells_match_prototxt_bins():
    """ICNet's kernels/strides give 1, 2, 3, 6 cells on its 33 x 65 map, windows clipped."""
    for bins, (kh, kw), (sh, sw) in zip((1, 2, 3, 6), ICNET_KERNELS, ICNET_STRIDES):
        assert caffe_average_matrix(33, kh, sh).shape == (bins, 33)
        assert caffe_average_matrix(65, kw, sw).shape == (bins, 65)
    last_window = np.r_[np.zeros(20), np.full(13, 1 / 13)]  # [20, 33): clipped 13-wide window
    np.testing.assert_allclose(caffe_average_matrix(33, 13, 10)[2], last_window)


def test_adaptive_concat_matches_semseg_ppm():
    """semseg `model/pspnet.py` PPM: AdaptiveAvgPool2d, 1x1 conv, BN, ReLU, interp (ac), cat."""
    torch = pytest.importorskip("torch")
    from tests.layers import torch_reference as ref

    channels, reduction, bins = 8, 3, (1, 2, 3, 6)
    torch.manual_seed(0)
    nn = torch.nn
    features = nn.ModuleList(
        nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(channels, reduction, 1, bias=False),
                      nn.BatchNorm2d(reduction), nn.ReLU())
        for b in bins)
    ref.randomize(features)
    x = np.random.default_rng(0).standard_normal((2, 13, 11, channels)).astype(np.float32)
    xt = ref.to_torch(x)
    with torch.no_grad():
        want = torch.cat([xt] + [nn.functional.interpolate(f(xt), xt.shape[2:], mode="bilinear",
                                                           align_corners=True) for f in features], 1)
    params, stats = {}, {}
    for i, f in enumerate(features):
        params[f"branch{i}"], stats[f"branch{i}"] = ref.conv_bn(f[1], f[2])
    module = PyramidPooling(bins, features=reduction)
    apply = jax.jit(lambda v, x: module.apply(v, x, train=False))
    got = apply({"params": params, "batch_stats": stats}, x)
    ref.assert_parity(got, ref.to_numpy(want), "PPM adaptive/concat parity", 1e-5)


def test_fixed_sum_matches_caffe_pooling_pyramid():
    """ICNet conv5_3_sum: x + sum_b Interp(AVE Pooling k_b / s_b (x)); Caffe's pooling is
    PyTorch's avg_pool2d in ceil mode for kernel >= stride."""
    torch = pytest.importorskip("torch")
    from tests.layers import torch_reference as ref

    x = np.random.default_rng(1).standard_normal((1, 33, 65, 4)).astype(np.float32)
    xt = ref.to_torch(x)
    with torch.no_grad():
        pooled = [torch.nn.functional.avg_pool2d(xt, k, s, ceil_mode=True)
                  for k, s in zip(ICNET_KERNELS, ICNET_STRIDES)]
        want = xt + sum(torch.nn.functional.interpolate(p, (33, 65), mode="bilinear", align_corners=True)
                        for p in pooled)
    assert [tuple(p.shape[2:]) for p in pooled] == [(1, 1), (2, 2), (3, 3), (6, 6)]
    module = PyramidPooling(pooling="fixed", kernels=ICNET_KERNELS, strides=ICNET_STRIDES,
                            branch_conv=False, fusion="sum")
    got = jax.jit(lambda x: module.apply({}, x, train=False))(x)
    ref.assert_parity(got, ref.to_numpy(want), "PPM fixed/sum parity", 1e-5)


def test_shapes_and_train_mode():
    x = jnp.ones((2, 7, 9, 16))
    module = PyramidPooling()
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))
    assert variables["params"]["branch3"]["conv"]["kernel"].shape == (1, 1, 16, 4)  # in / 4
    y, updates = jax.eval_shape(
        lambda v: module.apply(v, x, train=True, mutable=["batch_stats"]), variables)
    assert y.shape == (2, 7, 9, 32)
    assert set(updates["batch_stats"]) == {f"branch{i}" for i in range(4)}


@pytest.mark.parametrize("kwargs, match", [
    (dict(pooling="max"), "pooling"),
    (dict(fusion="mean"), "fusion"),
    (dict(bins=(0, 2)), "bins"),
    (dict(pooling="fixed"), "kernels and strides"),
    (dict(pooling="fixed", kernels=(3,), strides=(3,)), "4 bins"),
    (dict(pooling="fixed", kernels=(2, 2, 2, 2), strides=(3, 3, 3, 3)), "smaller than stride"),
    (dict(kernels=(3, 3, 3, 3)), "pooling='fixed' only"),
    (dict(branch_conv=False, features=4), "branch_conv"),
])  # fmt: skip
def test_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PyramidPooling(**kwargs)


def test_sum_needs_matching_width():
    with pytest.raises(ValueError, match="fusion='sum'"):
        jax.eval_shape(lambda: PyramidPooling(fusion="sum", features=4).init(
            jax.random.key(0), jnp.ones((1, 6, 6, 8)), train=False))
