"""LRR's boundary mask (Ghiasi & Fowlkes, ECCV 2016, Sec. 4, "boundary masking").

The refinement added at a finer pyramid level is multiplied by a mask that is large
only near the coarser level's class boundaries. The reference
(golnazghiasi/LRR `modelInitialization/LRRAddMasking.m`) builds it from the coarser
level's softmax p as `maxpool(p) + maxpool(-p)`, both MatConvNet max-pools with stride
1, window `size` (9 in the paper's nets) and padding `size // 2` on every side.
MatConvNet's max-pool clips each window to the image (`pooling_cpu.cpp`: accumulator
starts at -inf, padded positions are skipped), so padding behaves as -inf and the mask is

    mask[n, y, x, c] = max_{window} p[n, ., ., c] - min_{window} p[n, ., ., c]

over the in-image part of the `size x size` window centred on (y, x). The reference's
mask has a gradient (its pooling, negation and sum layers all backpropagate), and so has
this one.

LRR's decoder computes it on class planes `[N, C, H, W]` (`axes=(2, 3)`; `softmax` for the
probabilities): XLA's CPU loops then vectorise along the W pixels of a row instead of over
the C classes of a pixel (`docs/throughput.md`, "LRR's step").
"""

import functools

import chex
import jax
import jax.numpy as jnp
from jax import lax


def _window_max(x: jnp.ndarray, size: int, axis: int) -> jnp.ndarray:
    """Stride-1 max over `size` consecutive entries along `axis`, centred, -inf padded.

    Doubling ("sparse table"): `m_w[i] = max(x[i : i + w])` for w = 1, 2, 4, ... up to the
    largest power of two `w <= size`, then two overlapping windows of width w cover one of
    width `size`: `max(m_w[i], m_w[i + size - w])`. That is log2(size) + 1 elementwise maxima
    of shifted slices, which XLA fuses, forward and backward.
    """
    axis %= x.ndim
    pad = size // 2
    widths = [(0, 0)] * x.ndim
    widths[axis] = (pad, pad)
    m = jnp.pad(x, widths, constant_values=-jnp.inf)
    width = 1
    while 2 * width <= size:
        length = m.shape[axis] - width
        m = jnp.maximum(lax.slice_in_dim(m, 0, length, axis=axis),
                        lax.slice_in_dim(m, width, width + length, axis=axis))
        width *= 2
    n = x.shape[axis]
    return jnp.maximum(lax.slice_in_dim(m, 0, n, axis=axis),
                       lax.slice_in_dim(m, size - width, size - width + n, axis=axis))


def _max_pool_same(x: jnp.ndarray, size: int, axes: tuple[int, int] = (1, 2)) -> jnp.ndarray:
    """Stride-1 `size x size` max-pool over the two spatial `axes` of `x` (`[N, H, W, C]`
    by default) with -inf padding `size // 2`.

    Computed separably, a `size x 1` pool then a `1 x size` pool (the max over a rectangle is
    the max over its rows' maxima, so the values equal the 2-D pool's exactly), each as
    elementwise maxima of shifted slices (`_window_max`) rather than `lax.reduce_window`:
    on CPU, reduce_window's backward (select_and_scatter) made the masks half of LRR's train
    step (`python -m benchmarks.kernels`). Gradients at ties differ only in how they are split
    among the tied inputs (jnp.maximum halves them, select_and_scatter picks one).
    """
    return _window_max(_window_max(x, size, axes[0] % x.ndim), size, axes[1] % x.ndim)


def boundary_mask(prob: jnp.ndarray, size: int, *, axes: tuple[int, int] = (1, 2)) -> jnp.ndarray:
    """`maxpool(p) + maxpool(-p)` per class: `[N, H, W, C] -> [N, H, W, C]`, values in [0, 1] for p in [0, 1].

    Args:
      prob: class probabilities p (softmax of the coarser level), `[N, H, W, C]`, float; or
        any rank-4 layout whose spatial axes `axes` name, e.g. LRR's class planes
        `[N, C, H, W]` with `axes=(2, 3)` (the same values; only the layout differs).
      size: odd window size (stride 1, padding `size // 2`, so the shape is kept).
      axes: the (height, width) axes of `prob`.

    Returns:
      The windowed max minus min of p, the shape of `prob`.
    """
    chex.assert_rank(prob, 4)
    if not jnp.issubdtype(prob.dtype, jnp.floating):
        raise ValueError(f"boundary_mask: prob must be floating point, got {prob.dtype}")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"boundary_mask: window size must be a positive odd integer, got {size}")
    axes = tuple(a % prob.ndim for a in axes)
    if len(axes) != 2 or axes[0] == axes[1]:
        raise ValueError(f"boundary_mask: axes must name two different axes, got {axes}")
    # Both pools as one, on p and -p stacked along an axis that is not pooled: half the
    # loops, each twice as long (the same maxima, so the same values and gradients).
    stack = min(set(range(prob.ndim)) - set(axes))
    n = prob.shape[stack]
    pools = _max_pool_same(jnp.concatenate([prob, -prob], stack), size, axes)
    return lax.slice_in_dim(pools, 0, n, axis=stack) + lax.slice_in_dim(pools, n, 2 * n, axis=stack)


def pairwise(op, items: list) -> jnp.ndarray:
    """`op` over `items`, as a balanced tree."""
    while len(items) > 1:
        items = [op(a, b) for a, b in zip(items[::2], items[1::2])] + items[len(items) // 2 * 2:]
    return items[0]


def _softmax(logits: jnp.ndarray, axis: int) -> jnp.ndarray:
    classes = [lax.index_in_dim(logits, c, axis, keepdims=False).astype(jnp.float32)
               for c in range(logits.shape[axis])]
    top = pairwise(jnp.maximum, classes)
    exps = [jnp.exp(z - top) for z in classes]
    total = pairwise(jnp.add, exps)
    return jnp.stack([e / total for e in exps], axis)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def softmax(logits: jnp.ndarray, axis: int) -> jnp.ndarray:
    """Softmax over the class `axis` of class planes (LRR's `[N, C, H, W]`: `axis=1`), in f32.

    `jax.nn.softmax(logits, axis)` to float rounding, written class by class: the maximum and
    the sum over the classes are element-wise operations on the C planes, and so is the
    derivative's sum (see `_softmax_jvp`). As reductions over a major axis, XLA:CPU hands them
    to YNNPACK, which took ~40x as long as the element-wise loop for `[5, 16, 96, 96]`
    (6.1 ms against 0.16), and without a custom derivative the transposes of the per-class
    slices are C zero-padded copies of the planes.
    """
    return _softmax(logits, axis)


@softmax.defjvp
def _softmax_jvp(axis, primals, tangents):
    (logits,), (t,) = primals, tangents
    p = _softmax(logits, axis)
    pt = p * t.astype(jnp.float32)
    # dp = p t - p sum_c(p t). The class sum is a reduction here and its broadcast back a
    # stack of copies, so that reverse mode transposes them into a broadcast and a sum of
    # slices (element-wise), not into a reduction over the class axis and padded copies.
    total = jnp.sum(pt, axis=axis)
    return p, pt - p * jnp.stack([total] * p.shape[axis], axis)
