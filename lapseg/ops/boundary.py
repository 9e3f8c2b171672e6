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


def _max_pool_same(x: jnp.ndarray, size: int) -> jnp.ndarray:
    """Stride-1 `size x size` max-pool of `[N, H, W, C]` with -inf padding `size // 2`.

    Computed separably, a `size x 1` pool then a `1 x size` pool: the max over a rectangle is
    the max over its rows' maxima, so the values equal the 2-D pool's exactly, while each
    output reads 2 size inputs instead of size^2. On CPU the fused 9x9 pool's forward+backward
    is ~7x slower (`python -m benchmarks.kernels`), and it dominated LRR's train step.
    """
    pad = size // 2
    for window in ((1, size, 1, 1), (1, 1, size, 1)):
        padding = tuple((pad, pad) if w > 1 else (0, 0) for w in window)
        x = lax.reduce_window(x, -jnp.inf, lax.max, window_dimensions=window,
                              window_strides=(1, 1, 1, 1), padding=padding)
    return x


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
