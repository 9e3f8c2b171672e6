"""LRR's boundary mask (Ghiasi & Fowlkes, ECCV 2016, Sec. 4, "boundary masking").

The refinement added at a finer pyramid level is multiplied by a mask that is large
only near the coarser level's class boundaries. The reference
(golnazghiasi/LRR `modelInitialization/LRRAddMasking.m`) builds it from the coarser
level's softmax p as `maxpool(p) + maxpool(-p)`, both MatConvNet max-pools with stride
1, window `size` (9 in the paper's nets) and padding `size // 2` on every side.
MatConvNet's max-pool clips each window to the image (`pooling_cpu.cpp`: accumulator
starts at -inf, padded positions are skipped), so padding behaves as -inf and the mask is

    mask[n, y, x, c] = max_{window} p[n, ., ., c] - min_{window} p[n, ., ., c]

over the in-image part of the `size x size` window centred on (y, x).
"""

import chex
import jax.numpy as jnp
from jax import lax


def _window_max(x: jnp.ndarray, size: int, axis: int) -> jnp.ndarray:
    """Stride-1 max over `size` consecutive entries along `axis`, centred, -inf padded.

    Doubling ("sparse table"): `m_w[i] = max(x[i : i + w])` for w = 1, 2, 4, ... up to the
    largest power of two `w <= size`, then two overlapping windows of width w cover one of
    width `size`: `max(m_w[i], m_w[i + size - w])`. That is log2(size) + 1 elementwise maxima
    of shifted slices, which XLA fuses, forward and backward.
    """
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


def _max_pool_same(x: jnp.ndarray, size: int) -> jnp.ndarray:
    """Stride-1 `size x size` max-pool of `[N, H, W, C]` with -inf padding `size // 2`.

    Computed separably, a `size x 1` pool then a `1 x size` pool (the max over a rectangle is
    the max over its rows' maxima, so the values equal the 2-D pool's exactly), each as
    elementwise maxima of shifted slices (`_window_max`) rather than `lax.reduce_window`:
    on CPU, reduce_window's backward (select_and_scatter) made the masks half of LRR's train
    step (`python -m benchmarks.kernels`). Gradients at ties differ only in how they are split
    among the tied inputs (jnp.maximum halves them, select_and_scatter picks one).
    """
    return _window_max(_window_max(x, size, 1), size, 2)


def boundary_mask(prob: jnp.ndarray, size: int) -> jnp.ndarray:
    """`maxpool(p) + maxpool(-p)` per class: `[N, H, W, C] -> [N, H, W, C]`, values in [0, 1] for p in [0, 1].

    Args:
      prob: class probabilities p (softmax of the coarser level), `[N, H, W, C]`, float.
      size: odd window size (stride 1, padding `size // 2`, so the shape is kept).

    Returns:
      The windowed max minus min of p, `[N, H, W, C]`.
    """
    chex.assert_rank(prob, 4)
    if not jnp.issubdtype(prob.dtype, jnp.floating):
        raise ValueError(f"boundary_mask: prob must be floating point, got {prob.dtype}")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"boundary_mask: window size must be a positive odd integer, got {size}")
    return _max_pool_same(prob, size) + _max_pool_same(-prob, size)
