"""Tests for lapseg.ops.boundary: LRR's maxpool(p) + maxpool(-p) boundary mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lapseg.ops import boundary


def _window_range(p, size):
    """Max minus min of p over the in-image part of each size x size window (numpy loop).

    MatConvNet's max-pool clips windows to the image (pooling_cpu.cpp), which is what
    the padded -inf in boundary_mask must reproduce at the borders.
    """
    n, h, w, c = p.shape
    half = size // 2
    out = np.zeros_like(p)
    for y in range(h):
        for x in range(w):
            win = p[:, max(y - half, 0) : y + half + 1, max(x - half, 0) : x + half + 1]
            out[:, y, x] = win.max(axis=(1, 2)) - win.min(axis=(1, 2))
    return out


@pytest.mark.parametrize("size,h,w", [(1, 4, 5), (3, 5, 4), (5, 6, 7), (7, 9, 6), (9, 7, 11), (15, 20, 18)])
def test_boundary_mask_matches_sliding_window(size, h, w):
    # Reference: direct numpy sliding-window max - min, borders clipped to the image.
    logits = np.random.default_rng(size).standard_normal((2, h, w, 3)).astype(np.float32)
    prob = np.asarray(jax.nn.softmax(logits, axis=-1))
    got = boundary.boundary_mask(prob, size)
    np.testing.assert_allclose(got, _window_range(prob, size), atol=1e-6, rtol=0)


def test_boundary_mask_is_zero_inside_regions_and_one_on_edges():
    # A hard two-region map: the mask is 1 within size // 2 of the edge, 0 elsewhere,
    # including at the image border (zero padding would wrongly give 1 there).
    prob = np.zeros((1, 8, 10, 2), np.float32)
    prob[0, :, :5, 0] = 1.0
    prob[0, :, 5:, 1] = 1.0
    mask = np.asarray(boundary.boundary_mask(prob, 3))
    want_cols = np.array([0, 0, 0, 0, 1, 1, 0, 0, 0, 0], np.float32)
    for c in range(2):
        np.testing.assert_array_equal(mask[0, :, :, c], np.broadcast_to(want_cols, (8, 10)))


def test_boundary_mask_gradient_matches_fused_pool():
    # The separable pools route each window's gradient to the same argmax as one 2-D pool.
    size = 5
    prob = jax.nn.softmax(jax.random.normal(jax.random.key(0), (2, 9, 8, 3)), axis=-1)
    cotangent = jax.random.normal(jax.random.key(1), prob.shape)

    def fused(p):
        pool = lambda x: jax.lax.reduce_window(x, -np.inf, jax.lax.max, (1, size, size, 1),
                                               (1, 1, 1, 1), ((0, 0), (2, 2), (2, 2), (0, 0)))
        return pool(p) + pool(-p)

    got = jax.vjp(lambda p: boundary.boundary_mask(p, size), prob)[1](cotangent)[0]
    want = jax.vjp(fused, prob)[1](cotangent)[0]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [0, 2, 4])
def test_boundary_mask_rejects_even_size(size):
    with pytest.raises(ValueError, match="odd"):
        boundary.boundary_mask(np.zeros((1, 4, 4, 2), np.float32), size)


def test_boundary_mask_rejects_integer_input():
    with pytest.raises(ValueError, match="floating"):
        boundary.boundary_mask(np.zeros((1, 4, 4, 2), np.int32), 3)


def test_boundary_mask_on_class_planes_is_the_nhwc_mask():
    # LRR's decoder pools [N, C, H, W] planes over axes (2, 3): the same maxima, so the same
    # values and gradients as on NHWC, ties included (p = 1/C everywhere in a flat region).
    logits = np.random.default_rng(3).standard_normal((2, 11, 13, 4)).astype(np.float32)
    logits[:, :5, :6] = 0.0  # a flat corner: every window there ties
    prob = jax.nn.softmax(logits, axis=-1)
    cotangent = jax.random.normal(jax.random.key(2), prob.shape)
    planes = lambda x: np.transpose(x, (0, 3, 1, 2))  # noqa: E731
    got, vjp = jax.vjp(lambda p: boundary.boundary_mask(p, 9, axes=(2, 3)), planes(prob))
    want, want_vjp = jax.vjp(lambda p: boundary.boundary_mask(p, 9), prob)
    np.testing.assert_array_equal(got, planes(want))
    np.testing.assert_array_equal(vjp(planes(cotangent))[0], planes(want_vjp(cotangent)[0]))
    np.testing.assert_allclose(want, _window_range(np.asarray(prob), 9), atol=1e-6, rtol=0)


def test_boundary_mask_rejects_one_axis_twice():
    with pytest.raises(ValueError, match="two different axes"):
        boundary.boundary_mask(np.zeros((1, 4, 4, 2), np.float32), 3, axes=(1, -3))


@pytest.mark.parametrize("axis", [0, 1, 3])
def test_softmax_is_jax_softmax_in_both_modes(axis):
    # Forward, reverse and forward-over-reverse (the Hessian-vector products of
    # benchmarks/lrr_curvature.py) against jax.nn.softmax, in f32 from bfloat16 too.
    rng = np.random.default_rng(axis)
    logits = jnp.asarray(3 * rng.standard_normal((2, 5, 6, 7)), jnp.float32)
    t = jnp.asarray(rng.standard_normal(logits.shape), jnp.float32)
    ours = lambda z: boundary.softmax(z, axis)  # noqa: E731
    ref = lambda z: jax.nn.softmax(z, axis=axis)  # noqa: E731
    np.testing.assert_allclose(ours(logits), ref(logits), atol=1e-6, rtol=0)
    np.testing.assert_allclose(jax.jvp(ours, (logits,), (t,))[1], jax.jvp(ref, (logits,), (t,))[1],
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(jax.vjp(ours, logits)[1](t)[0], jax.vjp(ref, logits)[1](t)[0],
                               atol=1e-6, rtol=0)
    loss = lambda f: lambda z: jnp.sum(boundary.boundary_mask(f(z), 3, axes=(2, 3)) * t)  # noqa: E731
    hvp = lambda f: jax.jvp(jax.grad(loss(f)), (logits,), (t,))[1]  # noqa: E731
    np.testing.assert_allclose(hvp(ours), hvp(ref), atol=1e-5, rtol=0)
    half = boundary.softmax(logits.astype(jnp.bfloat16), axis)
    assert half.dtype == jnp.float32
    np.testing.assert_allclose(half, ref(logits.astype(jnp.bfloat16).astype(jnp.float32)), atol=1e-6)
