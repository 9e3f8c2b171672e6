"""Tests for the two-tap (gather) form of lapseg.ops.resize.resize_bilinear.

References: PyTorch's F.interpolate (values and autograd gradients; those tests skip without
torch), the dense-matrix form (`method='dense'`, itself tested against torch in
test_resize.py) and `bilinear_matrix` for the tap tables.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from lapseg.ops import resize

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - torch is optional
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

SIZES = [
    ((7, 9), (16, 13)),  # up, non-integer factors
    ((33, 45), (9, 11)),  # down
    ((5, 8), (5, 8)),  # identity
    ((12, 1), (1, 6)),  # size-1 axes
    ((16, 24), (128, 96)),  # x8 / x4 (ICNet's final upsampling factor)
    ((64, 40), (32, 20)),  # x1/2 (ICNet's input shrink)
]


def _random(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@needs_torch
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("in_hw,out_hw", SIZES)
def test_taps_match_torch_values_and_gradients(in_hw, out_hw, align_corners):
    # Reference: torch F.interpolate(mode='bilinear') forward and its autograd backward for
    # a random cotangent, in float64: at x8 torch's own float32 backward is 1.5e-5 off
    # (scatter of ~16 terms per input), lapseg's float32 taps 3e-6.
    x = _random(sum(in_hw), 2, *in_hw, 3)
    cotangent = _random(1 + sum(out_hw), 2, *out_hw, 3)
    xt = _nchw(x).double().requires_grad_(True)
    yt = F.interpolate(xt, size=out_hw, mode="bilinear", align_corners=align_corners)
    yt.backward(_nchw(cotangent).double())

    def fn(v):
        return resize.resize_bilinear(v, out_hw, align_corners=align_corners, method="taps")

    y, vjp = jax.vjp(fn, x)
    assert y.shape == (2, *out_hw, 3) and y.dtype == np.float32
    np.testing.assert_allclose(y, _nhwc(yt), atol=1e-5, rtol=0)
    np.testing.assert_allclose(vjp(cotangent)[0], _nhwc(xt.grad), atol=1e-5, rtol=0)
    y32 = F.interpolate(_nchw(x), size=out_hw, mode="bilinear", align_corners=align_corners)
    np.testing.assert_allclose(y, _nhwc(y32), atol=1e-5, rtol=0)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("in_hw,out_hw", SIZES + [((40, 3), (3, 90)), ((256, 32), (1024, 128))])
def test_taps_equal_dense(in_hw, out_hw, align_corners):
    # Reference: the dense-matrix path, values, reverse and forward mode.
    x = _random(3, 1, *in_hw, 2)
    t = _random(4, 1, *in_hw, 2)
    cotangent = _random(5, 1, *out_hw, 2)
    outs = {}
    for method in ("dense", "taps"):
        def fn(v, method=method):
            return resize.resize_bilinear(v, out_hw, align_corners=align_corners, method=method)
        y, vjp = jax.vjp(fn, x)
        outs[method] = (y, vjp(cotangent)[0], jax.jvp(fn, (x,), (t,))[1])
    for dense, taps in zip(outs["dense"], outs["taps"]):
        np.testing.assert_allclose(taps, dense, atol=1e-5, rtol=0)


@pytest.mark.parametrize("align_corners", [True, False])
def test_taps_gradients_to_second_order(align_corners):
    x = _random(6, 1, 20, 23, 2).astype(np.float64)
    with jax.enable_x64(True):
        check_grads(
            lambda v: resize.resize_bilinear(v, (45, 9), align_corners=align_corners, method="taps"),
            (x,),
            order=2,
            modes=("fwd", "rev"),
        )


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize(
    "in_size,out_size", [(1, 5), (5, 1), (7, 7), (4, 29), (29, 4), (256, 1024), (1024, 512), (3, 2)])
def test_tap_tables_rebuild_the_matrix(in_size, out_size, align_corners):
    matrix = resize.bilinear_matrix(in_size, out_size, align_corners)
    i0, i1, w0, w1 = resize.bilinear_taps(in_size, out_size, align_corners)
    rebuilt = np.zeros_like(matrix)
    np.add.at(rebuilt, (np.arange(out_size), i0), w0)
    np.add.at(rebuilt, (np.arange(out_size), i1), w1)
    np.testing.assert_allclose(rebuilt, matrix, atol=1e-12)
    assert np.all(np.diff(i0) >= 0)
    index, weight = resize.transposed_taps(in_size, out_size, align_corners)
    transposed = np.zeros((in_size, out_size))
    np.add.at(transposed, (np.repeat(np.arange(in_size), index.shape[1]), index.ravel()), weight.ravel())
    np.testing.assert_allclose(transposed, matrix.T, atol=1e-12)
    # Each input feeds the outputs whose source lies within one input step of it.
    assert index.shape[1] <= 2 * out_size / max(in_size - 1, 1) + 1


def test_taps_gradient_is_gathers_not_scatters():
    # XLA's scatter-add (a gather's transpose) is serial on CPU; the backward uses the
    # transposed tap tables as gathers instead.
    x = jnp.zeros((1, 40, 30, 3))

    def loss(v):
        return jnp.sum(resize.resize_bilinear(v, (90, 17), align_corners=True, method="taps") ** 2)

    hlo = jax.jit(jax.grad(loss)).lower(x).as_text()
    assert "gather" in hlo and "scatter" not in hlo


def test_auto_uses_taps_on_long_axes_only():
    def dots(shape, size):
        jaxpr = jax.make_jaxpr(lambda v: resize.resize_bilinear(v, size, align_corners=True))(
            jnp.zeros(shape))
        return str(jaxpr).count("dot_general")

    assert dots((1, 64, 64, 3), (256, 256)) == 0
    assert dots((1, 6, 6, 3), (12, 12)) > 0
    assert dots((1, 6, 64, 3), (12, 256)) == 1  # dense on the short axis only


def test_auto_and_taps_keep_bfloat16_and_vmap():
    x = jnp.asarray(_random(7, 2, 30, 20, 3))
    y = resize.resize_bilinear(x.astype(jnp.bfloat16), (61, 41), align_corners=False, method="taps")
    assert y.dtype == jnp.bfloat16
    want = resize.resize_bilinear(x, (61, 41), align_corners=False, method="dense")
    np.testing.assert_allclose(y.astype(np.float32), want, atol=0.05, rtol=0.02)
    batched = jax.vmap(lambda v: resize.resize_bilinear(v, (61, 41), align_corners=False, method="taps"))(
        x[:, None])
    np.testing.assert_allclose(batched[:, 0], resize.resize_bilinear(x, (61, 41), False, method="taps"),
                               atol=0, rtol=0)


def test_large_upsampling_costs_few_flops():
    # ICNet's final x4 upsampling of 19-class logits to 1024 x 2048: 30.6 GFLOPs as dense
    # matrices, ~3 FLOPs per output element and axis as taps.
    def flops(method):
        fn = jax.jit(lambda v: resize.resize_bilinear(v, (1024, 2048), align_corners=True, method=method))
        cost = fn.lower(jax.ShapeDtypeStruct((1, 256, 512, 19), jnp.float32)).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    assert flops("dense") > 25e9
    assert flops("auto") < 0.5e9


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="method"):
        resize.resize_bilinear(np.zeros((1, 4, 4, 1), np.float32), (8, 8), align_corners=True, method="area")
