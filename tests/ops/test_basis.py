"""Tests for lapseg.ops.basis: LRR reconstruction and bilinear upsampling kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads

from benchmarks.kernels import grouped_conv_transpose
from lapseg.ops import basis
from tests.references import upsample_filt

RECONSTRUCT_CASES = [  # (s, K, C, H, W)
    (2, 1, 1, 3, 3),
    (2, 3, 2, 4, 5),
    (4, 10, 3, 3, 6),
    (8, 2, 4, 5, 2),
]


def _random(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("s,k,c,h,w", RECONSTRUCT_CASES)
def test_reconstruct_matches_grouped_lax_conv(s, k, c, h, w):
    # Reference: XLA's own grouped convolution with input dilation (what
    # lax.conv_transpose lowers to), built from the textbook transposed-conv identity
    # (kernel 2s, stride s, padding s/2: the benchmark's baseline).
    rng = np.random.default_rng(s * 100 + k)
    x, b = _random(rng, 2, h, w, k, c), _random(rng, 2 * s, 2 * s, k, c)
    got = basis.reconstruct(x, b)
    want = grouped_conv_transpose(x, b, precision=lax.Precision.HIGHEST)
    assert got.shape == (2, s * h, s * w, c)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_reconstruct_matches_lax_conv_transpose_block_diagonal():
    # Reference: jax.lax.conv_transpose itself, with the grouped kernel written out as a
    # dense block-diagonal [2s, 2s, K*C, C] kernel (zero between classes).
    s, k, c, h, w = 4, 3, 2, 3, 5
    rng = np.random.default_rng(0)
    x, b = _random(rng, 2, h, w, k, c), _random(rng, 2 * s, 2 * s, k, c)
    dense = np.einsum("hwkc,cd->hwckd", b, np.eye(c, dtype=np.float32)).reshape(2 * s, 2 * s, c * k, c)
    lhs = np.swapaxes(x, 3, 4).reshape(2, h, w, c * k)
    edge = 2 * s - 1 - s // 2
    # transpose_kernel=True flips the kernel and swaps its I/O axes: pass it as HWOI.
    want = lax.conv_transpose(
        lhs,
        np.swapaxes(dense, 2, 3),
        strides=(s, s),
        padding=((edge, edge), (edge, edge)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        transpose_kernel=True,
        precision=lax.Precision.HIGHEST,
    )
    np.testing.assert_allclose(basis.reconstruct(x, b), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("s,k,c,h,w", RECONSTRUCT_CASES)
def test_reconstruct_matches_torch_grouped_conv_transpose(s, k, c, h, w):
    # Reference: torch.nn.functional.conv_transpose2d(groups=C, padding=s/2) on CPU, the
    # layer the docstring promises, with the weight/channel mapping it documents.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(s * 10 + c)
    x, b = _random(rng, 2, h, w, k, c), _random(rng, 2 * s, 2 * s, k, c)
    weight = torch.from_numpy(np.ascontiguousarray(b.transpose(3, 2, 0, 1).reshape(k * c, 1, 2 * s, 2 * s)))
    inputs = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 3, 1, 2).reshape(2, c * k, h, w)))
    want = torch.nn.functional.conv_transpose2d(inputs, weight, stride=s, padding=s // 2, groups=c)
    np.testing.assert_allclose(basis.reconstruct(x, b), want.numpy().transpose(0, 2, 3, 1), atol=1e-5, rtol=0)


def test_reconstruct_gradients():
    # Reference: finite differences (jax.test_util.check_grads), forward and reverse mode.
    rng = np.random.default_rng(1)
    x, b = _random(rng, 1, 2, 3, 2, 2), _random(rng, 4, 4, 2, 2)
    check_grads(basis.reconstruct, (x, b), order=1, modes=("fwd", "rev"))


def test_reconstruct_jits_and_one_tile_is_the_basis():
    # A single unit coefficient reproduces its basis function, cropped by s/2 at the
    # top-left: the direct reading of the reconstruction equation.
    s = 4
    b = _random(np.random.default_rng(2), 2 * s, 2 * s, 2, 1)
    x = np.zeros((1, 3, 3, 2, 1), np.float32)
    x[0, 1, 1, 1, 0] = 1.0
    y = jax.jit(basis.reconstruct)(x, b)
    want = np.zeros((3 * s, 3 * s), np.float32)
    want[s - s // 2 : 3 * s - s // 2, s - s // 2 : 3 * s - s // 2] = b[:, :, 1, 0]
    np.testing.assert_allclose(y[0, :, :, 0], want, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "coeffs_shape,basis_shape,match",
    [
        ((1, 2, 2, 3, 2), (6, 6, 3, 2), "s even"),  # s = 3
        ((1, 2, 2, 3, 2), (8, 4, 3, 2), "s even"),  # not square
        ((1, 2, 2, 3, 2), (8, 8, 2, 3), "disagree"),
    ],
)
def test_reconstruct_rejects_bad_shapes(coeffs_shape, basis_shape, match):
    with pytest.raises(ValueError, match=match):
        basis.reconstruct(jnp.zeros(coeffs_shape), jnp.zeros(basis_shape))


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 8, 16, 64])
def test_bilinear_kernel_is_fcn_upsample_filt(size):
    # Reference: upsample_filt from fcn.berkeleyvision.org surgery.py, written out verbatim.
    want = upsample_filt(size)
    np.testing.assert_allclose(basis.bilinear_kernel(size), want, atol=1e-7, rtol=0)


def test_bilinear_deconv_weight_is_class_diagonal():
    weight = basis.bilinear_deconv_weight(4, 3)
    assert weight.shape == (4, 4, 3, 3)
    kernel = basis.bilinear_kernel(4)
    for i in range(3):
        for o in range(3):
            np.testing.assert_array_equal(weight[:, :, i, o], kernel if i == o else 0 * kernel)


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 8])
def test_bilinear_upsample_keeps_a_ramp_linear(factor):
    # Reference: the closed form. On a linear ramp bilinear interpolation is exact, so
    # away from the zero-padded border (f // 2 pixels) the output is the ramp sampled at
    # the half-pixel-centre coordinates (o + 0.5) / f - 0.5.
    h, w = 5, 7
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    x = (2.0 * rows - 3.0 * cols + 1.0).astype(np.float32)[None, :, :, None]
    y = np.asarray(basis.bilinear_upsample(jnp.asarray(x), factor))[0, :, :, 0]
    ys = (np.arange(factor * h) + 0.5) / factor - 0.5
    xs = (np.arange(factor * w) + 0.5) / factor - 0.5
    want = 2.0 * ys[:, None] - 3.0 * xs[None, :] + 1.0
    e = factor // 2
    interior = (slice(e, factor * h - e), slice(e, factor * w - e))
    assert y.shape == (factor * h, factor * w)
    np.testing.assert_allclose(y[interior], want[interior], atol=1e-5)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bilinear_upsample_interior_matches_jax_image_resize(factor):
    # Reference: jax.image.resize(method="linear"), half-pixel centres; it renormalises
    # at the border where the deconvolution sees zeros, so compare the interior only.
    x = _random(np.random.default_rng(factor), 1, 4, 6, 2)
    got = np.asarray(basis.bilinear_upsample(jnp.asarray(x), factor))
    want = np.asarray(jax.image.resize(x, (1, 4 * factor, 6 * factor, 2), method="linear"))
    e = factor // 2
    np.testing.assert_allclose(got[:, e:-e, e:-e], want[:, e:-e, e:-e], atol=1e-5, rtol=0)
    assert not np.allclose(got[:, 0], want[:, 0], atol=1e-3)  # the documented border difference


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bilinear_upsample_matches_torch_deconv(factor):
    # Reference: torch conv_transpose2d(groups=C) with FCN's kernel 2f - f % 2, stride f,
    # padding f // 2: the Caffe/MatConvNet bilinear Deconvolution, borders included.
    torch = pytest.importorskip("torch")
    c = 3
    x = _random(np.random.default_rng(factor), 2, 4, 5, c)
    size = 2 * factor - factor % 2
    weight = torch.from_numpy(np.repeat(basis.bilinear_kernel(size)[None, None], c, axis=0))
    want = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), weight, stride=factor, padding=factor // 2, groups=c
    )
    got = basis.bilinear_upsample(jnp.asarray(x), factor)
    np.testing.assert_allclose(got, want.numpy().transpose(0, 2, 3, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("factor", [0, 2.0])
def test_bilinear_upsample_rejects_bad_factor(factor):
    with pytest.raises(ValueError, match="factor"):
        basis.bilinear_upsample(jnp.zeros((1, 2, 2, 1)), factor)


def test_flat_field_gain_is_the_reconstruction_of_unit_coefficients():
    # Reference: reconstruct a constant unit coefficient field with the op itself and average
    # one interior period; the bilinear kernel's gain is 1.
    rng = np.random.default_rng(0)
    tiles = rng.normal(size=(8, 8, 3, 2)).astype(np.float32)
    gain = basis.flat_field_gain(tiles)
    for k in range(3):
        only_k = np.zeros((1, 6, 6, 3, 2), np.float32)
        only_k[..., k, :] = 1.0
        out = np.asarray(basis.reconstruct(jnp.asarray(only_k), jnp.asarray(tiles)))
        np.testing.assert_allclose(out[0, 8:12, 8:12].mean((0, 1)), gain[k], rtol=1e-5)
    np.testing.assert_allclose(basis.flat_field_gain(basis.bilinear_kernel(8)[:, :, None, None]), 1.0,
                               rtol=1e-6)


@pytest.mark.parametrize("s,k,c,h,w", RECONSTRUCT_CASES)
def test_reconstruct_nchw_is_the_nhwc_result_transposed(s, k, c, h, w):
    # LRR's decoder asks for class planes: the same einsum, only the output order differs.
    rng = np.random.default_rng(s * 10 + c)
    x, b = _random(rng, 2, h, w, k, c), _random(rng, 2 * s, 2 * s, k, c)
    nhwc = basis.reconstruct(x, b)
    nchw = basis.reconstruct(x, b, layout="NCHW")
    np.testing.assert_array_equal(nchw, np.transpose(nhwc, (0, 3, 1, 2)))
    cotangent = _random(rng, *nchw.shape)
    grads = jax.vjp(lambda x, b: basis.reconstruct(x, b, layout="NCHW"), x, b)[1](cotangent)
    want = jax.vjp(basis.reconstruct, x, b)[1](np.transpose(cotangent, (0, 2, 3, 1)))
    for got_grad, want_grad in zip(grads, want):
        np.testing.assert_allclose(got_grad, want_grad, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_bilinear_upsample_nchw_is_the_nhwc_result_transposed(factor):
    x = _random(np.random.default_rng(factor), 2, 4, 5, 3)
    nhwc = basis.bilinear_upsample(jnp.asarray(x), factor)
    nchw = basis.bilinear_upsample(jnp.asarray(x.transpose(0, 3, 1, 2)), factor, layout="NCHW")
    assert nchw.shape == (2, 3, 4 * factor, 5 * factor)
    np.testing.assert_array_equal(nchw, np.transpose(nhwc, (0, 3, 1, 2)))


def test_layout_must_be_nhwc_or_nchw():
    with pytest.raises(ValueError, match="layout"):
        basis.bilinear_upsample(jnp.zeros((1, 2, 2, 1)), 2, layout="CNHW")
    with pytest.raises(ValueError, match="layout"):
        basis.reconstruct(jnp.zeros((1, 2, 2, 1, 1)), jnp.zeros((4, 4, 1, 1)), layout="HWC")
