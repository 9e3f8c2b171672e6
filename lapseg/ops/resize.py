"""PyTorch-compatible resizing and adaptive average pooling, NHWC.

`jax.image.resize` uses half-pixel centres and antialiases when shrinking, so it
matches neither `align_corners=True` nor PyTorch's (non-antialiased) default. The
references this library follows (Caffe Interp, semseg, refinenet-pytorch, ...) are
written against PyTorch's `F.interpolate` and `F.adaptive_avg_pool2d`, so those are
the semantics reproduced here, to 1e-5 in f32 (`tests/ops/test_resize.py`).

Every float op is separable: a per-axis matrix `M[out, in]` is built in numpy from the
static shapes at trace time and applied by one einsum,
`Y[n, p, q, c] = sum_{h, w} Mh[p, h] * X[n, h, w, c] * Mw[q, w]`.
A matmul is the fast path on TPU/GPU and is trivially differentiable (its gradient is
the transposed matrices), unlike a gather.
"""

from typing import Sequence, Union

import chex
import jax
import jax.numpy as jnp
import numpy as np

Size = Union[int, Sequence[int]]


def _pair(size: Size, name: str) -> tuple[int, int]:
    """`int` or `(h, w)` -> `(h, w)` of positive ints."""
    pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(pair) != 2 or any(int(s) != s or s < 1 for s in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {size!r}")
    return int(pair[0]), int(pair[1])


def _check_float_nhwc(x: jnp.ndarray, name: str) -> None:
    chex.assert_rank(x, 4)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name}: x must be floating point, got {x.dtype} (resize labels with resize_nearest)")


def _separable(x: jnp.ndarray, rows: np.ndarray, cols: np.ndarray) -> jnp.ndarray:
    """`Y[n, p, q, c] = sum_{h, w} rows[p, h] * X[n, h, w, c] * cols[q, w]`."""
    rows = jnp.asarray(rows, x.dtype)
    cols = jnp.asarray(cols, x.dtype)
    # HIGHEST: f32 inputs must not be rounded to bf16/TF32 on TPU/GPU (parity with PyTorch).
    return jnp.einsum("ph,nhwc,qw->npqc", rows, x, cols, precision=jax.lax.Precision.HIGHEST)


def bilinear_matrix(in_size: int, out_size: int, align_corners: bool) -> np.ndarray:
    """Per-axis linear-interpolation weights of PyTorch's `F.interpolate(mode='bilinear')`.

    Source coordinate of output index d (PyTorch `area_pixel_compute_source_index`, size given):
      align_corners=True:  `s = d * (in - 1) / (out - 1)` (`s = 0` when out == 1);
      align_corners=False: `s = max((d + 0.5) * in / out - 0.5, 0)` (half-pixel, clamped at 0).
    Then `i0 = floor(s)`, `i1 = min(i0 + 1, in - 1)`, `M[d, i0] += 1 - (s - i0)`, `M[d, i1] += s - i0`.
    No antialiasing when shrinking, as in PyTorch.

    Returns:
      `M`, float64 `[out_size, in_size]`, rows summing to 1.
    """
    d = np.arange(out_size, dtype=np.float64)
    if align_corners:
        src = d * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros_like(d)
    else:
        src = np.maximum((d + 0.5) * (in_size / out_size) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = src - i0
    matrix = np.zeros((out_size, in_size))
    np.add.at(matrix, (np.arange(out_size), i0), 1.0 - frac)
    np.add.at(matrix, (np.arange(out_size), i1), frac)
    return matrix


def adaptive_average_matrix(in_size: int, bins: int) -> np.ndarray:
    """Per-axis averaging weights of PyTorch's adaptive average pooling.

    Bin i averages inputs `floor(i * in / bins) <= h < ceil((i + 1) * in / bins)` (bins may
    overlap when `in` is not a multiple of `bins`; PyTorch `start_index` / `end_index`).

    Returns:
      float64 `[bins, in_size]`, rows summing to 1.
    """
    i = np.arange(bins)
    start = (i * in_size) // bins
    end = -((-(i + 1) * in_size) // bins)  # ceil division in integers
    h = np.arange(in_size)
    inside = (h[None, :] >= start[:, None]) & (h[None, :] < end[:, None])
    return inside / (end - start)[:, None]


def resize_bilinear(x: jnp.ndarray, size: Size, align_corners: bool) -> jnp.ndarray:
    """Bilinear resize equal to PyTorch `F.interpolate(mode='bilinear', align_corners=...)`.

    `Y = Mh X Mw^T` per image and channel, with `M = bilinear_matrix(in, out, align_corners)`
    per axis (see there for the source-coordinate formulas); up- and downsampling alike,
    without antialiasing.

    Args:
      x: `[N, H, W, C]` floating point.
      size: output `(h, w)` (or one int for both).
      align_corners: PyTorch's flag. True maps corner pixel centres onto each other (Caffe
        Interp, most segmentation references); False uses half-pixel centres.

    Returns:
      `[N, h, w, C]` in x's dtype.
    """
    _check_float_nhwc(x, "resize_bilinear")
    out_h, out_w = _pair(size, "resize_bilinear: size")
    _, in_h, in_w, _ = x.shape
    return _separable(
        x, bilinear_matrix(in_h, out_h, align_corners), bilinear_matrix(in_w, out_w, align_corners)
    )


def adaptive_avg_pool(x: jnp.ndarray, bins: Size) -> jnp.ndarray:
    """Adaptive average pooling equal to PyTorch `F.adaptive_avg_pool2d(x, bins)`.

    `Y[n, i, j, c] = mean of X[n, h, w, c] over floor(i*H/bh) <= h < ceil((i+1)*H/bh)` and the
    same for w (PSPNet's pyramid pooling in the PyTorch ports; Caffe's PSP used fixed kernels
    and strides instead, which this is not).

    Args:
      x: `[N, H, W, C]` floating point.
      bins: `bh` (square) or `(bh, bw)`.

    Returns:
      `[N, bh, bw, C]` in x's dtype.
    """
    _check_float_nhwc(x, "adaptive_avg_pool")
    bins_h, bins_w = _pair(bins, "adaptive_avg_pool: bins")
    _, in_h, in_w, _ = x.shape
    return _separable(x, adaptive_average_matrix(in_h, bins_h), adaptive_average_matrix(in_w, bins_w))


def nearest_indices(in_size: int, out_size: int, *, centered: bool = False) -> np.ndarray:
    """Source index of each output index for PyTorch `F.interpolate(mode='nearest')`, or with
    `centered` for `mode='nearest-exact'`.

    `src = min(floor((d + c) * scale), in - 1)` with `scale = in / out` and `c = 0` ('nearest':
    the top-left pixel of each block) or `c = 1/2` ('nearest-exact': the pixel nearest the
    block's centre), evaluated in float32 as PyTorch's `nearest_neighbor_compute_source_index`
    / `nearest_neighbor_exact_compute_source_index` do, so that the rare ratios where float32
    rounding moves the floor agree too.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    offset = np.float32(0.5 if centered else 0.0)
    src = np.floor((np.arange(out_size, dtype=np.float32) + offset) * scale).astype(np.int64)
    return np.minimum(src, in_size - 1)


def resize_nearest(labels: jnp.ndarray, size: Size, *, centered: bool = False) -> jnp.ndarray:
    """Nearest-neighbour resize of label maps, equal to PyTorch `F.interpolate(mode='nearest')`
    (or, `centered`, `mode='nearest-exact'`).

    `Y[n, p, q] = X[n, src_h(p), src_w(q)]` with `src(d) = floor(d * in / out)`, the top-left
    pixel of each block, or `floor((d + 1/2) * in / out)`, the pixel at the block's centre
    (see `nearest_indices`). A map downsampled by an integer factor f for an output whose
    pixels are f x f blocks with half-pixel centres (what `bilinear_upsample` and LRR's
    reconstruction assume) wants the centre: the top-left pixel is (f - 1) / 2 pixels off.
    Labels are always resized this way, never bilinearly.

    Args:
      labels: `[N, H, W]` of any dtype (integer class ids in practice).
      size: output `(h, w)` (or one int for both).
      centered: sample block centres instead of top-left corners.

    Returns:
      `[N, h, w]` in labels' dtype.
    """
    chex.assert_rank(labels, 3)
    out_h, out_w = _pair(size, "resize_nearest: size")
    _, in_h, in_w = labels.shape
    rows = nearest_indices(in_h, out_h, centered=centered)
    cols = nearest_indices(in_w, out_w, centered=centered)
    return labels[:, rows[:, None], cols[None, :]]
