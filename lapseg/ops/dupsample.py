"""Data-dependent upsampling (Tian et al., "Decoders Matter", CVPR 2019, Sec. 3.1).

DUpsample replaces bilinear upsampling by a linear map `W` from a low-dimensional
feature `F[n, h, w, :]` to the `r x r x C` patch of class scores it stands for.
`W` is fitted to the training labels by PCA (`lapseg.bases.dupsampling_matrix`).

Patch order is (a, b, c): row offset a, column offset b, class c, i.e. TensorFlow's
DCR `depth_to_space` (the reference code's reshape), *not* PyTorch's `pixel_shuffle`
(which is CRD). `space_to_depth` and `depth_to_space` below use the same order, so
`dupsample(space_to_depth(y, r) @ W^+, W, r)` reconstructs `y` when `W` spans it.
"""

import chex
import jax.numpy as jnp
import numpy as np

from lapseg.ops.basis import cosine_frequencies


def space_to_depth(x: jnp.ndarray, ratio: int) -> jnp.ndarray:
    """Folds `ratio x ratio` blocks into channels in (a, b, c) order.

    `out[n, i, j, (a * r + b) * C + c] = x[n, r*i + a, r*j + b, c]`.

    Args:
      x: `[N, H, W, C]` with H and W divisible by `ratio`.
      ratio: block size r.

    Returns:
      `[N, H/r, W/r, r*r*C]`.
    """
    chex.assert_rank(x, 4)
    n, height, width, channels = x.shape
    if height % ratio or width % ratio:
        raise ValueError(
            f"space_to_depth: spatial size {height}x{width} is not divisible by ratio {ratio}"
        )
    h, w = height // ratio, width // ratio
    x = x.reshape(n, h, ratio, w, ratio, channels)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h, w, ratio * ratio * channels)


def depth_to_space(x: jnp.ndarray, ratio: int) -> jnp.ndarray:
    """Inverse of `space_to_depth`: `[N, h, w, r*r*C] -> [N, r*h, r*w, C]` (DCR order)."""
    chex.assert_rank(x, 4)
    n, h, w, depth = x.shape
    if depth % (ratio * ratio):
        raise ValueError(f"depth_to_space: depth {depth} is not divisible by ratio^2 = {ratio**2}")
    channels = depth // (ratio * ratio)
    x = x.reshape(n, h, w, ratio, ratio, channels)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h * ratio, w * ratio, channels)


def dupsample(features: jnp.ndarray, w: jnp.ndarray, ratio: int) -> jnp.ndarray:
    """Data-dependent upsampling as one einsum.

    `Y[n, r*h + a, r*w + b, c] = sum_l F[n, h, w, l] * W[l, (a*r + b)*C + c]`

    Equal to a 1x1 convolution to `r*r*C` channels followed by `depth_to_space`
    (DCR order); see `tests/ops/test_dupsample.py`.

    Args:
      features: `F`, `[N, h, w, L]`.
      w: `W`, `[L, r*r*C]` (rows are the PCA directions of label patches).
      ratio: upsampling factor r.

    Returns:
      `[N, r*h, r*w, C]` in the dtype of `features` and `w` promoted.
    """
    chex.assert_rank([features, w], [4, 2])
    num_dims, depth = w.shape
    if features.shape[-1] != num_dims:
        raise ValueError(
            f"dupsample: features have {features.shape[-1]} channels but w has {num_dims} rows"
        )
    if depth % (ratio * ratio):
        raise ValueError(f"dupsample: w has {depth} columns, not a multiple of ratio^2 = {ratio**2}")
    n, h, wd, _ = features.shape
    w = w.reshape(num_dims, ratio, ratio, depth // (ratio * ratio))
    # One einsum into the natural dot layout [n, h, w, (a b c)], then the DCR interleave
    # of (h, a) and (w, b) as an explicit transpose. Writing the interleave into the
    # einsum output ('nhwl,labc->nhawbc') is the same maths but XLA then emits the dot as
    # [abc, nhw] plus a full transpose of the output: 1.5x slower fwd and 1.25x fwd+bwd
    # on CPU (benchmarks/kernels.py sizes).
    y = jnp.einsum("nhwl,labc->nhwabc", features, w)
    return y.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * ratio, wd * ratio, -1)


def cosine_matrix(ratio: int, num_classes: int, dim: int) -> np.ndarray:
    """Default DUpsampling matrix before any fit: `[dim, r*r*C]` float32, orthonormal rows.

    Row `(p, q, c)` is the 2-D DCT-II function of frequency `(p, q)` over the `r x r` block,
    on class c alone: `W[row, (a*r + b)*C + c] = d_p(a) d_q(b)` with
    `d_p(a) = sqrt((1 if p == 0 else 2) / r) cos(pi p (a + 1/2) / r)`. Rows run over
    frequencies lowest first and, within one, over classes; with `dim >= C` the code can
    express every block-constant class map, like bilinear upsampling of block averages.
    `lapseg.bases` replaces it with the PCA of the labels.
    """
    depth = ratio * ratio * num_classes
    if not 1 <= dim <= depth:
        raise ValueError(f"cosine_matrix: dim={dim} must be in [1, ratio*ratio*num_classes={depth}]")
    centres = (np.arange(ratio) + 0.5) / ratio

    def dct(p):
        return np.sqrt((1.0 if p == 0 else 2.0) / ratio) * np.cos(np.pi * p * centres)

    frequencies = cosine_frequencies(-(-dim // num_classes), ratio)
    rows = []
    for p, q in frequencies:
        block = np.outer(dct(p), dct(q))  # [a, b]
        for c in range(num_classes):
            row = np.zeros((ratio, ratio, num_classes))
            row[:, :, c] = block
            rows.append(row.reshape(-1))
    return np.stack(rows[:dim]).astype(np.float32)
