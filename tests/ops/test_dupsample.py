"""Tests for lapseg.ops.dupsample: DUpsample and the DCR space_to_depth / depth_to_space pair."""

import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads

from lapseg.ops import dupsample as dup


def _random(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _depth_to_space_by_index(x, r):
    """`out[n, r*i + a, r*j + b, c] = x[n, i, j, (a*r + b)*C + c]` (TF's DCR), element by element."""
    n, h, w, depth = x.shape
    c = depth // (r * r)
    out = np.zeros((n, r * h, r * w, c), x.dtype)
    for i in range(h):
        for j in range(w):
            for a in range(r):
                for b in range(r):
                    out[:, r * i + a, r * j + b, :] = x[:, i, j, (a * r + b) * c : (a * r + b + 1) * c]
    return out


@pytest.mark.parametrize("r,c,h,w", [(1, 3, 2, 2), (2, 3, 3, 4), (4, 2, 2, 3)])
def test_depth_to_space_matches_index_formula(r, c, h, w):
    # Reference: the DCR index formula in a plain numpy loop.
    x = _random(np.random.default_rng(r), 2, h, w, r * r * c)
    np.testing.assert_array_equal(dup.depth_to_space(x, r), _depth_to_space_by_index(x, r))


@pytest.mark.parametrize("r", [1, 2, 4])
def test_space_to_depth_round_trip(r):
    y = _random(np.random.default_rng(r), 2, 3 * r, 2 * r, 5)
    packed = dup.space_to_depth(y, r)
    assert packed.shape == (2, 3, 2, r * r * 5)
    np.testing.assert_array_equal(dup.depth_to_space(packed, r), y)
    np.testing.assert_array_equal(dup.space_to_depth(dup.depth_to_space(packed, r), r), packed)


@pytest.mark.parametrize("r,l,c,h,w", [(2, 4, 3, 3, 2), (4, 8, 5, 2, 3), (16, 6, 2, 2, 1)])
def test_dupsample_matches_1x1_conv_then_depth_to_space(r, l, c, h, w):
    # Reference: XLA's 1x1 convolution to r*r*C channels, then the index-loop DCR
    # depth_to_space above (the DUpsampling reference: conv1x1 + TF reshape).
    rng = np.random.default_rng(r + l)
    f, mat = _random(rng, 2, h, w, l), _random(rng, l, r * r * c)
    conv = lax.conv_general_dilated(
        f,
        mat[None, None],
        window_strides=(1, 1),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )
    want = _depth_to_space_by_index(np.asarray(conv), r)
    got = dup.dupsample(f, mat, r)
    assert got.shape == (2, r * h, r * w, c)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_dupsample_inverts_space_to_depth_on_its_span():
    # With an orthonormal W, projecting label patches onto W and back through
    # dupsample is the identity on patches in W's span (the PCA use of DUpsample).
    r, c, l = 2, 3, 12  # l = r*r*c: W is square orthogonal, the span is everything
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((l, l)))
    w = q.T.astype(np.float32)  # rows orthonormal
    y = _random(np.random.default_rng(1), 1, 4, 6, c)
    features = np.asarray(dup.space_to_depth(y, r)) @ w.T
    np.testing.assert_allclose(dup.dupsample(features, w, r), y, atol=1e-5, rtol=0)


def test_dupsample_is_not_pixel_shuffle():
    # Documents the DCR choice: PyTorch's pixel_shuffle (CRD, channel index c*r*r + a*r + b)
    # gives a different image from the same 1x1-conv output once C > 1.
    torch = pytest.importorskip("torch")
    r, c = 2, 3
    x = _random(np.random.default_rng(0), 1, 2, 2, r * r * c)
    crd = torch.nn.functional.pixel_shuffle(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), r)
    crd = crd.numpy().transpose(0, 2, 3, 1)
    dcr = np.asarray(dup.depth_to_space(x, r))
    assert not np.allclose(dcr, crd)
    # ... and they agree once the channels are regrouped from (a, b, c) to (c, a, b).
    regrouped = x.reshape(1, 2, 2, r, r, c).transpose(0, 1, 2, 5, 3, 4).reshape(1, 2, 2, -1)
    crd = torch.nn.functional.pixel_shuffle(torch.from_numpy(regrouped.transpose(0, 3, 1, 2).copy()), r)
    np.testing.assert_array_equal(dcr, crd.numpy().transpose(0, 2, 3, 1))


def test_dupsample_gradients():
    # Reference: finite differences (jax.test_util.check_grads), forward and reverse mode.
    rng = np.random.default_rng(3)
    f, mat = _random(rng, 1, 2, 3, 4), _random(rng, 4, 2 * 2 * 3)
    check_grads(lambda f, w: dup.dupsample(f, w, 2), (f, mat), order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: dup.space_to_depth(np.zeros((1, 3, 4, 1)), 2), "not divisible"),
        (lambda: dup.depth_to_space(np.zeros((1, 1, 1, 6)), 2), "not divisible"),
        (lambda: dup.dupsample(np.zeros((1, 2, 2, 3)), np.zeros((4, 8)), 2), "channels"),
        (lambda: dup.dupsample(np.zeros((1, 2, 2, 4)), np.zeros((4, 6)), 2), "multiple"),
    ],
)
def test_bad_shapes_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
