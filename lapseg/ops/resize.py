"""PyTorch-compatible resizing and adaptive average pooling, NHWC.

`jax.image.resize` uses half-pixel centres and antialiases when shrinking, so it
matches neither `align_corners=True` nor PyTorch's (non-antialiased) default. The
references this library follows (Caffe Interp, semseg, refinenet-pytorch, ...) are
written against PyTorch's `F.interpolate` and `F.adaptive_avg_pool2d`, so those are
the semantics reproduced here, to 1e-5 in f32 (`tests/ops/test_resize.py`).

Every float op is separable, per axis a matrix `M[out, in]` built in numpy from the static
shapes at trace time, applied in one of two forms:

- 'dense': one einsum, `Y[n, p, q, c] = sum_{h, w} Mh[p, h] * X[n, h, w, c] * Mw[q, w]`.
  A matmul is the fast path on TPU/GPU for short axes, but it costs `2 * in` FLOPs per
  output and axis, most of them multiplications by zero: ICNet's x4 upsampling of its
  logits to 1024 x 2048 alone is 30.6 GFLOPs this way.
- 'taps': bilinear weights have two non-zeros per row, so `Y[p] = w0[p] X[i0[p]] +
  w1[p] X[i1[p]]` along the axis: two gathers and a weighted sum, about 3 FLOPs per
  output and axis. Its gradient, `M^T G`, is the transpose of a gather, which XLA writes
  as a scatter-add (serial and several times slower than the gather on CPU); the
  gradient is therefore computed as gathers too, `dX[i] = sum_k V[i, k] G[J[i, k]]` over
  the outputs `J[i, :]` that read input `i` (`transposed_taps`), by a `jax.custom_jvp`
  whose tangent is written as the linear transpose of that gather form, so that reverse
  mode transposes it back into gathers (forward mode and higher orders work too; only a
  forward-mode tangent pays the scatter).

`resize_bilinear(..., method='auto')` (the default) picks per axis: 'taps' when the input
axis is longer than `DENSE_MAX_INPUT` (where the dense row costs more than the taps'
gathers), 'dense' otherwise. Both are exact to float rounding; `adaptive_avg_pool` (few
bins) stays dense.
"""

import functools
from typing import Sequence, Union

import chex
import jax
import jax.numpy as jnp
import numpy as np

from lapseg.ops.sizes import pair as _pair

Size = Union[int, Sequence[int]]

# `method='auto'`: an axis whose input is longer than this is resized with the two-tap
# form. At 24 -> 96 the taps already beat the dense matrix on a 2-core CPU (forward and
# backward, `python -m benchmarks.flops --timing`); on accelerators a short matmul is cheap,
# so only axes past this length switch.
DENSE_MAX_INPUT = 16
METHODS = ("auto", "dense", "taps")


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
    i0, i1, w0, w1 = bilinear_taps(in_size, out_size, align_corners)
    matrix = np.zeros((out_size, in_size))
    np.add.at(matrix, (np.arange(out_size), i0), w0)
    np.add.at(matrix, (np.arange(out_size), i1), w1)
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


@functools.lru_cache(maxsize=512)
def bilinear_taps(in_size: int, out_size: int, align_corners: bool):
    """The two non-zeros of each row of `bilinear_matrix(in_size, out_size, align_corners)`.

    Returns:
      `(i0, i1, w0, w1)`: int32 `[out_size]` source indices (`i0` non-decreasing,
      `i1 = min(i0 + 1, in - 1)`) and float64 `[out_size]` weights `1 - frac` and `frac`
      (`i0 == i1` at the clamped end, where the weights sum to 1 on one input). Read-only.
    """
    d = np.arange(out_size, dtype=np.float64)
    if align_corners:
        src = d * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros_like(d)
    else:
        src = np.maximum((d + 0.5) * (in_size / out_size) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = src - i0
    taps = (i0.astype(np.int32), i1.astype(np.int32), 1.0 - frac, frac)
    for array in taps:
        array.flags.writeable = False
    return taps


@functools.lru_cache(maxsize=512)
def transposed_taps(in_size: int, out_size: int, align_corners: bool):
    """The non-zeros of each *column* of the bilinear matrix: `M^T` as gathers.

    Returns:
      `(index, weight)`, int32 and float64 `[in_size, K]`: input `i` receives
      `sum_k weight[i, k] * G[index[i, k]]` from the output-side array `G`; K is the most
      outputs any input feeds (at most `2 out / (in - 1) + 1`, about twice the upsampling
      factor; <= 3 when shrinking), shorter columns padded with weight 0. Read-only.
    """
    i0, i1, w0, w1 = bilinear_taps(in_size, out_size, align_corners)
    outputs = np.arange(out_size)
    rows = np.concatenate([i0, i1]).astype(np.int64)
    cols = np.concatenate([outputs, outputs])
    vals = np.concatenate([w0, w1])
    keep = vals != 0.0
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    # Merge duplicate (input, output) pairs (i0 == i1 at the clamped end).
    key = rows * out_size + cols
    unique, inverse = np.unique(key, return_inverse=True)
    merged = np.zeros(len(unique))
    np.add.at(merged, inverse, vals)
    rows, cols = unique // out_size, unique % out_size
    counts = np.bincount(rows, minlength=in_size)
    width = max(int(counts.max()), 1)
    slot = np.arange(len(rows)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[rows]
    index = np.zeros((in_size, width), np.int32)
    weight = np.zeros((in_size, width))
    index[rows, slot] = cols
    weight[rows, slot] = merged
    for array in (index, weight):
        array.flags.writeable = False
    return index, weight


def _compute_dtype(dtype):
    """Taps accumulate in at least f32 (bf16 inputs are gathered as bf16, summed in f32)."""
    return jnp.promote_types(dtype, jnp.float32)


def _weights(values: np.ndarray, axis: int, ndim: int, dtype) -> jnp.ndarray:
    shape = [1] * ndim
    shape[axis] = len(values)
    return jnp.asarray(values.reshape(shape), dtype)


def _take(x: jnp.ndarray, index: np.ndarray, axis: int, *, is_sorted: bool) -> jnp.ndarray:
    return jnp.take(x, jnp.asarray(index), axis=axis, mode="clip", indices_are_sorted=is_sorted,
                    unique_indices=False)


def _taps_forward(x, axis, out_size, align_corners):
    """`M X` along `axis` by two gathers (M: `bilinear_matrix(x.shape[axis], out_size)`)."""
    i0, i1, w0, w1 = bilinear_taps(x.shape[axis], out_size, align_corners)
    dtype = _compute_dtype(x.dtype)
    y = _take(x, i0, axis, is_sorted=True).astype(dtype) * _weights(w0, axis, x.ndim, dtype)
    if np.any(w1):
        y = y + _take(x, i1, axis, is_sorted=True).astype(dtype) * _weights(w1, axis, x.ndim, dtype)
    return y.astype(x.dtype)


def _taps_adjoint(g, axis, in_size, align_corners):
    """`M^T G` along `axis` by gathers (`transposed_taps`): the gradient of `_taps_forward`."""
    index, weight = transposed_taps(in_size, g.shape[axis], align_corners)
    dtype = _compute_dtype(g.dtype)
    out = None
    for k in range(index.shape[1]):
        term = _take(g, index[:, k], axis, is_sorted=False).astype(dtype)
        term = term * _weights(weight[:, k], axis, g.ndim, dtype)
        out = term if out is None else out + term
    return out.astype(g.dtype)


# Jitted, so that an eager call computes what the same call inside a jitted model does:
# op by op, the products and sums round differently from XLA's fused loop (by an ulp).
_taps_forward_jit = jax.jit(_taps_forward, static_argnums=(1, 2, 3))
_taps_adjoint_jit = jax.jit(_taps_adjoint, static_argnums=(1, 2, 3))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _resize_axis_taps(x, axis, out_size, align_corners):
    return _taps_forward_jit(x, axis, out_size, align_corners)


@_resize_axis_taps.defjvp
def _resize_axis_taps_jvp(axis, out_size, align_corners, primals, tangents):
    (x,), (t,) = primals, tangents
    y = _resize_axis_taps(x, axis, out_size, align_corners)
    # The tangent `M t`, written as the transpose of the gather-form adjoint: evaluated it
    # is a scatter-add, but reverse mode transposes it back into `_taps_adjoint`'s gathers
    # instead of transposing `_taps_forward`'s gathers into scatter-adds.
    def adjoint(g):
        return _taps_adjoint_jit(g, axis, x.shape[axis], align_corners)

    (ty,) = jax.linear_transpose(adjoint, jax.ShapeDtypeStruct(y.shape, y.dtype))(t)
    return y, ty


def _resize_axis_dense(x, axis, out_size, align_corners):
    matrix = jnp.asarray(bilinear_matrix(x.shape[axis], out_size, align_corners), x.dtype)
    spec = "ph,nhwc->npwc" if axis == 1 else "qw,nhwc->nhqc"
    return jnp.einsum(spec, matrix, x, precision=jax.lax.Precision.HIGHEST)


def _axis_method(method: str, in_size: int, out_size: int) -> str:
    del out_size
    if method != "auto":
        return method
    return "taps" if in_size > DENSE_MAX_INPUT else "dense"


def resize_bilinear(x: jnp.ndarray, size: Size, align_corners: bool, *, method: str = "auto") -> jnp.ndarray:
    """Bilinear resize equal to PyTorch `F.interpolate(mode='bilinear', align_corners=...)`.

    `Y = Mh X Mw^T` per image and channel, with `M = bilinear_matrix(in, out, align_corners)`
    per axis (see there for the source-coordinate formulas); up- and downsampling alike,
    without antialiasing.

    Args:
      x: `[N, H, W, C]` floating point.
      size: output `(h, w)` (or one int for both).
      align_corners: PyTorch's flag. True maps corner pixel centres onto each other (Caffe
        Interp, most segmentation references); False uses half-pixel centres.
      method: 'dense' (one einsum with both matrices), 'taps' (two gathers and a weighted
        sum per axis; its gradient is gathers too) or 'auto' (per axis: 'taps' for inputs
        longer than `DENSE_MAX_INPUT`, else 'dense'). The same values to float rounding. An
        axis whose length does not change is returned as it is (the identity) by all three.

    Returns:
      `[N, h, w, C]` in x's dtype.
    """
    _check_float_nhwc(x, "resize_bilinear")
    if method not in METHODS:
        raise ValueError(f"resize_bilinear: method must be one of {METHODS}, got {method!r}")
    out_h, out_w = _pair(size, "resize_bilinear: size")
    _, in_h, in_w, _ = x.shape
    sizes = {axis: out for axis, (inp, out) in {1: (in_h, out_h), 2: (in_w, out_w)}.items()
             if inp != out}  # an axis of unchanged length is the identity, for either flag
    methods = {axis: _axis_method(method, x.shape[axis], out) for axis, out in sizes.items()}
    if len(sizes) == 2 and set(methods.values()) == {"dense"}:
        return _separable(
            x, bilinear_matrix(in_h, out_h, align_corners), bilinear_matrix(in_w, out_w, align_corners)
        )
    # One pass per axis; with two, the one that leaves the smaller intermediate goes first.
    order = (1, 2) if out_h * in_w <= in_h * out_w else (2, 1)
    for axis in (a for a in order if a in sizes):
        resize_axis = _resize_axis_taps if methods[axis] == "taps" else _resize_axis_dense
        x = resize_axis(x, axis, sizes[axis], align_corners)
    return x


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


def matlab_nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index (0-based) of each output index for MATLAB `imresize(A, [rows cols],
    'nearest')`, evaluated in float64 as MATLAB's `imresize.m` does (MathWorks source, read
    from a public copy of R2013-era `imresize.m`; MATLAB itself not run here):

    - `scale = output_size ./ A_2d_size` (`deriveScaleFromSize`);
    - 'nearest' is the `box` kernel, `f = (-0.5 <= x) & (x < 0.5)`, width 1, with
      antialiasing off ("For the 'nearest' method, the default is false", `parseMethodArg`);
    - `contributions`: `u = x/scale + 0.5 * (1 - 1/scale)` for 1-based output `x`,
      `left = floor(u - kernel_width/2)`, candidates `left + (0:P-1)` with
      `P = ceil(kernel_width) + 2`, weights `box(u - indices)`, indices clamped by
      `min(max(1, indices), in_length)`; the one candidate of weight 1 is the source.

    In exact arithmetic this is `floor((i + 1/2) * in / out)`, the pixel under the output
    pixel's centre, like PyTorch's 'nearest-exact' (`nearest_indices(centered=True)`,
    float32); the three differ only where `(i + 1/2) * in / out` is an integer (a tie
    between two pixels), which each rounds its own way, e.g. 6 -> 5: MATLAB takes 2 for
    output 2, the exact floor 3. For integer factors (`in = f out`) and for odd `in` (no
    ties) they agree (`tests/decoders/test_refinenet.py`).
    """
    scale = out_size / in_size
    u = np.arange(1, out_size + 1, dtype=np.float64) / scale + 0.5 * (1 - 1 / scale)
    candidates = np.floor(u - 0.5)[:, None] + np.arange(3)
    distance = u[:, None] - candidates
    hit = (-0.5 <= distance) & (distance < 0.5)  # exactly one per row
    source = candidates[np.arange(out_size), np.argmax(hit, axis=1)]
    return (np.clip(source, 1, in_size) - 1).astype(np.int64)


def resize_nearest(labels: jnp.ndarray, size: Size, *, centered: bool = False,
                   matlab: bool = False) -> jnp.ndarray:
    """Nearest-neighbour resize of label maps, equal to PyTorch `F.interpolate(mode='nearest')`
    (or, `centered`, `mode='nearest-exact'`; or, `matlab`, MATLAB `imresize(..., 'nearest')`).

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
      matlab: sample block centres with MATLAB's rounding (`matlab_nearest_indices`; the
        label downsampling of guosheng/refinenet, `main/cnn_layer_dense_softmaxloss_forward.m`
        `imresize(one_gt_mask, node_map_size, 'nearest')`); implies centres.

    Returns:
      `[N, h, w]` in labels' dtype.
    """
    chex.assert_rank(labels, 3)
    out_h, out_w = _pair(size, "resize_nearest: size")
    _, in_h, in_w = labels.shape
    if matlab:
        rows, cols = matlab_nearest_indices(in_h, out_h), matlab_nearest_indices(in_w, out_w)
    else:
        rows = nearest_indices(in_h, out_h, centered=centered)
        cols = nearest_indices(in_w, out_w, centered=centered)
    return labels[:, rows[:, None], cols[None, :]]
