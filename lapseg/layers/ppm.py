"""Pyramid pooling module (PSPNet, Zhao et al., CVPR 2017, Sec. 3.2; ICNet's sum variant).

The feature map is average-pooled into `b x b` cells for every bin b (1, 2, 3, 6 in
both papers), each pooled map optionally reduced by a 1x1 conv + BN + ReLU, upsampled
back by align-corners bilinear interpolation (Caffe `Interp`, semseg's
`F.interpolate(..., align_corners=True)`) and fused with the input:

- `fusion='concat'` (PSPNet, hszhao/semseg `model/pspnet.py` `PPM`):
  `[x, branch_1, ..., branch_B]` along channels, `C + B * features` channels;
- `fusion='sum'` (ICNet, hszhao/ICNet `pspnet50_ICNet_*.prototxt`, `conv5_3_sum`):
  `x + sum_b branch_b`, C channels (ICNet has no conv per bin: `branch_conv=False`).

Two pooling geometries (docs/architecture.md, "Pitfalls"):

- `pooling='adaptive'`: PyTorch `AdaptiveAvgPool2d(b)`, bin i of an axis of length H
  averages `floor(i H / b) <= h < ceil((i + 1) H / b)` (`ops.resize.adaptive_avg_pool`);
  exactly b x b cells at any input size. PSPNet's PyTorch port uses it.
- `pooling='fixed'`: Caffe `Pooling` (AVE, no padding) with a fixed kernel and stride per
  bin, as the Caffe prototxts list them (ICNet Cityscapes at 1025 x 2049, features
  33 x 65: kernels (33, 65), (17, 33), (13, 25), (8, 15); strides (33, 65), (16, 32),
  (10, 20), (5, 10)). Caffe's ceil-mode output size
  `ceil((H - k) / s) + 1` (1 when `k >= H`), each window clipped to the image and
  averaged over its clipped size; this is also PyTorch
  `avg_pool2d(k, s, ceil_mode=True)` for `k >= s`. The cell count then depends on the
  input size; it equals the bin only at the size the kernels were chosen for.

Branch `i` is submodule `branch{i}` (a `ConvBN`: `conv`, `bn`), in the order of `bins`
(semseg's `ppm.features.{i}.1` / `.2`).
"""

from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lapseg.layers.conv import ConvBN
from lapseg.ops import resize
from lapseg.ops.sizes import pair

IntPair = int | tuple[int, int]


def caffe_average_matrix(in_size: int, kernel: int, stride: int) -> np.ndarray:
    """Per-axis weights of Caffe's AVE pooling without padding (ceil-mode output size).

    Cell i averages `i*s <= h < min(i*s + k, H)`; there are `ceil(max(H - k, 0) / s) + 1`
    cells. Requires `k >= s` (otherwise Caffe can place a window wholly outside the image).

    Returns:
      float64 `[cells, in_size]`, rows summing to 1.
    """
    if kernel < stride:
        raise ValueError(
            f"fixed pooling needs kernel >= stride, got kernel {kernel}, stride {stride}")
    cells = -(-max(in_size - kernel, 0) // stride) + 1
    start = np.arange(cells) * stride
    end = np.minimum(start + kernel, in_size)
    h = np.arange(in_size)
    inside = (h[None, :] >= start[:, None]) & (h[None, :] < end[:, None])
    return inside / (end - start)[:, None]


def fixed_avg_pool(x: jnp.ndarray, kernel: IntPair, stride: IntPair) -> jnp.ndarray:
    """Caffe AVE pooling (no padding): `[N, H, W, C] -> [N, h, w, C]`, see `caffe_average_matrix`.

    `Y[n, p, q, c] = sum_{h, w} Mh[p, h] * X[n, h, w, c] * Mw[q, w]`, one einsum as in
    `ops.resize` (a matmul, cheap to differentiate).
    """
    (kh, kw), (sh, sw) = pair(kernel, "kernel"), pair(stride, "stride")
    _, height, width, _ = x.shape
    rows = jnp.asarray(caffe_average_matrix(height, kh, sh), x.dtype)
    cols = jnp.asarray(caffe_average_matrix(width, kw, sw), x.dtype)
    return jnp.einsum("ph,nhwc,qw->npqc", rows, x, cols,
                      precision=jax.lax.Precision.HIGHEST)


class PyramidPooling(nn.Module):
    """PPM: `[N, H, W, C] -> [N, H, W, C + B * features]` ('concat') or `[N, H, W, C]` ('sum').

    Attributes:
      bins: cells per side of each pooled map, e.g. (1, 2, 3, 6).
      pooling: 'adaptive' (PyTorch bins) or 'fixed' (Caffe kernel/stride per bin).
      kernels: 'fixed' only: pooling kernel per bin, k or (kh, kw).
      strides: 'fixed' only: pooling stride per bin, s or (sh, sw).
      branch_conv: 1x1 conv + BN + ReLU on each pooled map (PSPNet); False for ICNet.
      features: channels of each branch conv; None means `C // len(bins)` (PSPNet's in/4).
      fusion: 'concat' (PSPNet) or 'sum' (ICNet; branches must keep C channels).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    bins: Sequence[int] = (1, 2, 3, 6)
    pooling: str = "adaptive"
    kernels: Sequence[IntPair] | None = None
    strides: Sequence[IntPair] | None = None
    branch_conv: bool = True
    features: int | None = None
    fusion: str = "concat"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        if not self.bins or any(int(b) != b or b < 1 for b in self.bins):
            raise ValueError(f"PyramidPooling bins must be positive ints, got {self.bins!r}")
        if self.pooling not in ("adaptive", "fixed"):
            raise ValueError(
                f"PyramidPooling pooling must be 'adaptive' or 'fixed', got {self.pooling!r}")
        if self.fusion not in ("concat", "sum"):
            raise ValueError(
                f"PyramidPooling fusion must be 'concat' or 'sum', got {self.fusion!r}")
        if self.pooling == "fixed":
            if self.kernels is None or self.strides is None:
                raise ValueError(
                    "PyramidPooling pooling='fixed' needs kernels and strides, one per bin")
            if not len(self.kernels) == len(self.strides) == len(self.bins):
                raise ValueError(
                    f"PyramidPooling: {len(self.bins)} bins but {len(self.kernels)} kernels and "
                    f"{len(self.strides)} strides")
            for kernel, stride in zip(self.kernels, self.strides):
                for k, s in zip(pair(kernel, "kernels"), pair(stride, "strides")):
                    if k < s:
                        raise ValueError(f"PyramidPooling: fixed kernel {kernel} is smaller "
                                         f"than stride {stride}")
        elif self.kernels is not None or self.strides is not None:
            raise ValueError("PyramidPooling kernels/strides are for pooling='fixed' only")
        if not self.branch_conv and self.features is not None:
            raise ValueError(
                "PyramidPooling features is the branch conv width; it needs branch_conv=True")
        super().__post_init__()

    def _pool(self, x: jnp.ndarray, index: int) -> jnp.ndarray:
        if self.pooling == "adaptive":
            return resize.adaptive_avg_pool(x, self.bins[index])
        return fixed_avg_pool(x, self.kernels[index], self.strides[index])

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """`x`: `[N, H, W, C]`; `train`: batch statistics for the branch BNs."""
        chex.assert_rank(x, 4)
        _, height, width, channels = x.shape
        features = self.features or channels // len(self.bins)
        if self.fusion == "sum" and self.branch_conv and features != channels:
            raise ValueError(
                f"PyramidPooling fusion='sum' needs branches of the input's {channels} channels, "
                f"got features={features}")
        branches = []
        for index in range(len(self.bins)):
            y = self._pool(x, index)
            if self.branch_conv:
                y = ConvBN(features, 1, dtype=self.dtype, param_dtype=self.param_dtype,
                           name=f"branch{index}")(y, train)
            branches.append(resize.resize_bilinear(y, (height, width), align_corners=True))
        if self.fusion == "concat":
            return jnp.concatenate([x, *branches], axis=-1)
        return x + sum(branches)
