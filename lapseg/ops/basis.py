"""Learned-basis reconstruction (LRR) and fixed bilinear upsampling, as one einsum.

Ghiasi & Fowlkes, "Laplacian Pyramid Reconstruction and Refinement for Semantic
Segmentation", ECCV 2016, Sec. 3: each class score map is reconstructed at `s` times
the resolution as a sum of K basis functions `B[2s, 2s, k, c]` (2s x 2s, overlapping
by half a tile with each neighbour) weighted by low-resolution coefficients. In the
reference (golnazghiasi/LRR, MatConvNet) this is a grouped deconvolution with kernel
2s, stride s, crop s/2; FCN's (and LRR's) bilinear upsampling is the same layer with
a fixed bilinear kernel (fcn.berkeleyvision.org `surgery.py: upsample_filt`,
LRR `modelInitialization/bilinear_u.m`).

Both are computed here by `_overlapping_tiles`: a transposed convolution whose
kernel (2s) is twice its stride (s) touches every output pixel from exactly the 2 x 2
nearest input pixels, so it is one dense einsum over those four neighbours, no
dilated zeros and no grouped convolution.
"""

import chex
import jax.numpy as jnp
import numpy as np


def _overlapping_tiles_planes(x: jnp.ndarray, kernel: jnp.ndarray, offset: int) -> jnp.ndarray:
    """`_overlapping_tiles` on class-major arrays: `x` `[C, N, H, W, K]` -> `[C, N, sH, sW]`.

    `Y[c, n, s*q + m - offset, s*r + l - offset]
       = sum_k sum_{u,v in {0,1}} kernel[m + s*u, l + s*v, k, c] * x[c, n, q - u, r - v, k]`.
    The einsum batches over c, so both operands and its result are class-major; the callers
    transpose in and out of it (XLA folds those transposes into the copies around the einsum).
    """
    channels, n, h, w, num_bases = x.shape
    stride = kernel.shape[0] // 2
    padded = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
    # Z[c, n, i, j, u, v, k] = x[c, n, i - u, j - v, k] for i in [0, H], j in [0, W].
    shifts = jnp.stack(
        [padded[:, :, 1 - u : 2 - u + h, 1 - v : 2 - v + w] for u in (0, 1) for v in (0, 1)], axis=4
    ).reshape(channels, n, h + 1, w + 1, 2, 2, num_bases)
    # Kernel row index m + s*u -> (u, m), column index l + s*v -> (v, l).
    tiles = kernel.reshape(2, stride, 2, stride, num_bases, channels).transpose(5, 0, 2, 4, 1, 3)
    # c n i j u v k, c u v k a b -> c n i j a b: per class, sum over the four neighbours
    # (u, v) and the K bases; a plain batched matmul [nij, uvk] x [uvk, ab].
    y = jnp.einsum("cnijuvk,cuvkab->cnijab", shifts, tiles)
    # The tile offsets (a, b) next to (i, j), then merged: planes [C, N, rows, cols].
    y = y.transpose(0, 1, 2, 4, 3, 5).reshape(channels, n, (h + 1) * stride, (w + 1) * stride)
    return y[:, :, offset : offset + stride * h, offset : offset + stride * w]


LAYOUTS = ("NHWC", "NCHW")


def _overlapping_tiles(x: jnp.ndarray, kernel: jnp.ndarray, offset: int, layout: str = "NHWC") -> jnp.ndarray:
    """Per-class transposed convolution, kernel `2s`, stride `s`, output cropped by `offset`.

    `Y[n, s*q + m - offset, s*r + l - offset, c]
       = sum_k sum_{u,v in {0,1}} kernel[m + s*u, l + s*v, k, c] * x[n, q - u, r - v, k, c]`
    with `x` zero outside `[0, H) x [0, W)`, `q in [0, H]`, `m in [0, s)`, i.e. PyTorch's
    `conv_transpose2d(kernel 2s, stride s, padding offset)` with one kernel per class.

    Args:
      x: `[N, H, W, K, C]`.
      kernel: `[2s, 2s, K, C]`.
      offset: crop at the top-left, `0 <= offset <= s`.
      layout: of the result, 'NHWC' or 'NCHW'.

    Returns:
      `[N, s*H, s*W, C]` ('NHWC') or `[N, C, s*H, s*W]` ('NCHW').
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    # Class-major layout first: the einsum batches over c, and with c minor in every
    # operand XLA transposes the four-times-larger Z instead of x and runs about 2x
    # slower on CPU (alternatives and timings: benchmarks/kernels.py docstring).
    planes = _overlapping_tiles_planes(jnp.transpose(x, (4, 0, 1, 2, 3)), kernel, offset)
    return jnp.transpose(planes, (1, 2, 3, 0) if layout == "NHWC" else (1, 0, 2, 3))


def reconstruct(coeffs: jnp.ndarray, basis: jnp.ndarray, *, layout: str = "NHWC") -> jnp.ndarray:
    """LRR's learned-basis reconstruction: `[N, H, W, K, C] x [2s, 2s, K, C] -> [N, sH, sW, C]`.

    `Y[n, s*q + m - s/2, s*r + l - s/2, c]
       = sum_k sum_{u,v in {0,1}} B[m + s*u, l + s*v, k, c] * X[n, q - u, r - v, k, c]`
    (X zero outside the image, `m, l in [0, s)`), computed as one einsum over the 2 x 2
    neighbour shifts of X (see `_overlapping_tiles`).

    Equal to PyTorch's `ConvTranspose2d(K*C, C, kernel_size=2s, stride=s, padding=s/2,
    groups=C, bias=False)` with weight `[K*C, 1, 2s, 2s]`, where input channel `c*K + k`
    (group c) is `X[..., k, c]` and `weight[c*K + k, 0] = B[:, :, k, c]` (no flip), i.e.
    `weight = B.transpose(3, 2, 0, 1).reshape(K*C, 1, 2s, 2s)` and the NCHW input is
    `X.transpose(0, 4, 3, 1, 2).reshape(N, C*K, H, W)`; `tests/ops/test_basis.py` checks
    this and the same grouped convolution in `jax.lax`.

    Args:
      coeffs: X, `[N, H, W, K, C]` (K basis coefficients for each of C classes).
      basis: B, `[2s, 2s, K, C]`, s even (the reference crops s/2 on each side).
      layout: of the result: 'NHWC', or 'NCHW' (class planes, what LRR's decoder works on:
        the same einsum, only the copy after it writes another order).

    Returns:
      `[N, s*H, s*W, C]` ('NHWC') or `[N, C, s*H, s*W]` ('NCHW') in the promoted dtype of
      `coeffs` and `basis`.
    """
    chex.assert_rank([coeffs, basis], [5, 4])
    size = basis.shape[0]
    if basis.shape[1] != size or size % 4:
        raise ValueError(
            f"reconstruct: basis must be [2s, 2s, K, C] with s even, got {basis.shape}"
        )
    if coeffs.shape[3:] != basis.shape[2:]:
        raise ValueError(
            f"reconstruct: coeffs [N, H, W, K, C] = {coeffs.shape} and basis [2s, 2s, K, C] = "
            f"{basis.shape} disagree on (K, C)"
        )
    return _overlapping_tiles(coeffs, basis, offset=size // 4, layout=layout)


def bilinear_kernel(size: int) -> np.ndarray:
    """FCN's `upsample_filt(size)` (surgery.py): the `[size, size]` bilinear upsampling kernel.

    `f = ceil(size / 2)`, centre `ctr = f - 1` (size odd) or `f - 0.5` (size even),
    `K[i, j] = (1 - |i - ctr| / f) * (1 - |j - ctr| / f)`; identical to LRR's
    `bilinear_u.m`. For `size = 2f - f % 2` and stride f it interpolates linearly.
    """
    if size < 1:
        raise ValueError(f"bilinear_kernel: size must be positive, got {size}")
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 else factor - 0.5
    line = 1 - np.abs(np.arange(size) - center) / factor
    return np.outer(line, line).astype(np.float32)


def cosine_frequencies(count: int, size: int) -> list[tuple[int, int]]:
    """The `count` lowest 2-D cosine frequencies `(p, q)` on a `size x size` grid (`p, q < size`),
    ordered by p + q, then p."""
    if not 1 <= count <= size * size:
        raise ValueError(f"cosine_frequencies: count={count} must be in [1, size*size={size * size}]")
    grid = [(p, q) for p in range(size) for q in range(size)]
    return sorted(grid, key=lambda f: (f[0] + f[1], f[0]))[:count]


def cosine_bases(size: int, num_bases: int, num_classes: int) -> np.ndarray:
    """Default LRR bases before any fit: windowed 2-D cosines, `[size, size, K, C]` float32.

    `B[i, j, k, c] = bilinear_kernel(size)[i, j] cos(pi p_k (i + 1/2) / size) cos(pi q_k (j + 1/2) / size)`
    with `(p_k, q_k)` the k-th lowest frequency, the same for every class. Basis 0 is the
    bilinear kernel, so a model built on these defaults starts as the bilinear ablation,
    and the higher bases add smooth detail within each tile. `lapseg.bases` replaces them
    with bases fitted to the labels.
    """
    window = bilinear_kernel(size)
    centres = (np.arange(size) + 0.5) / size
    tiles = [window * np.outer(np.cos(np.pi * p * centres), np.cos(np.pi * q * centres))
             for p, q in cosine_frequencies(num_bases, size)]
    bases = np.stack(tiles, -1)[:, :, :, None]
    return np.broadcast_to(bases, (size, size, num_bases, num_classes)).astype(np.float32)


def flat_field_gain(bases: np.ndarray) -> np.ndarray:
    """Flat-field gain of every basis image, `[P, P, K, C] -> [K, C]`.

    The reconstruction of a constant unit coefficient field: tiles of size P placed every P/2
    pixels overlap four-fold, so each output pixel of the period sums four tile pixels and the
    mean over a period is `4 sum(B) / P^2`. The bilinear kernel's gain is 1; LRR's
    reference-scaled PCA bases have gains of 6-14 on `shapes`. Resizing a tile by block
    averages keeps its gain.
    """
    bases = np.asarray(bases, np.float64)
    return (4.0 * bases.sum((0, 1)) / (bases.shape[0] * bases.shape[1])).astype(np.float32)


def bilinear_deconv_weight(size: int, channels: int) -> np.ndarray:
    """`[size, size, C, C]` kernel with `bilinear_kernel(size)` on the class diagonal, 0 elsewhere.

    FCN initialises its learnable `Deconvolution` (C -> C, kernel 2f, stride f) with this
    (surgery.py `interp`); it is symmetric in space and in (in, out), so it is the same
    for `flax.linen.ConvTranspose` (HWIO) with or without `transpose_kernel`.
    """
    return np.einsum("hw,io->hwio", bilinear_kernel(size), np.eye(channels, dtype=np.float32))


def bilinear_upsample(x: jnp.ndarray, factor: int, *, layout: str = "NHWC") -> jnp.ndarray:
    """Fixed per-channel bilinear upsampling by an integer factor f: `[N, H, W, C] -> [N, fH, fW, C]`.

    Caffe/MatConvNet `Deconvolution` with `bilinear_kernel(2f - f % 2)`, stride f and
    padding (crop) `f // 2`, one kernel per channel (LRR's x2 is kernel 4, stride 2,
    pad 1). Output pixel o sits at input coordinate `(o + 0.5) / f - 0.5` (half-pixel
    centres), so the interior equals `jax.image.resize(..., 'linear')`; the outer
    `f // 2` rows and columns see the deconvolution's zero padding (they fade towards
    the border as in the references, not edge-clamped).

    FCN's upsampling layers (kernel 2f, no padding, a crop chosen per net, fixed or
    learned) are a `ConvTranspose` initialised from `bilinear_deconv_weight` instead.

    Args:
      x: `[N, H, W, C]` ('NHWC'), or `[N, C, H, W]` ('NCHW').
      factor: f >= 1.
      layout: of `x` and of the result.

    Returns:
      `[N, f*H, f*W, C]` ('NHWC') or `[N, C, f*H, f*W]` ('NCHW').
    """
    chex.assert_rank(x, 4)
    if layout not in LAYOUTS:
        raise ValueError(f"bilinear_upsample: layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "NCHW":
        x = jnp.transpose(x, (0, 2, 3, 1))
    if not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"bilinear_upsample: factor must be a positive integer, got {factor!r}")
    size = 2 * factor - factor % 2
    # An odd-sized kernel (2f - 1) gets a zero last row and column: the same
    # transposed convolution with a 2f kernel, which `_overlapping_tiles` needs.
    kernel = np.pad(bilinear_kernel(size), ((0, 2 * factor - size), (0, 2 * factor - size)))
    kernel = jnp.broadcast_to(jnp.asarray(kernel, x.dtype)[:, :, None, None], (*kernel.shape, 1, x.shape[-1]))
    return _overlapping_tiles(x[..., None, :], kernel, offset=factor // 2, layout=layout)
