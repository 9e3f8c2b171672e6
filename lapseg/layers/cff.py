"""Cascade feature fusion (CFF), ICNet (Zhao et al., ECCV 2018), Sec. 3.3 and Fig. 3.

Fuses a low-resolution map F1 into a higher-resolution map F2 (twice F1's resolution):

    F1' = upsample_x2(F1)                             bilinear, align corners (Caffe Interp)
    out = ReLU(BN(conv3x3_dilation2(F1')) + BN(conv1x1(F2)))
    aux = conv1x1_classes(F1')                        cascade label guidance (training only)

hszhao/ICNet `icnet_cityscapes_bnnomerge.prototxt`: `conv5_4_interp` -> `conv_sub4` (3x3,
dilation 2, 128, BN, no ReLU) and `conv3_1_sub2_proj` (1x1, 128, BN) -> `sub24_sum` ->
ReLU; likewise `sub24_sum_interp` -> `conv_sub2` with `conv3_sub1_proj` -> `sub12_sum`.
The prototxt is the inference net, without the auxiliary classifiers; they sit on the
upsampled F1 as in the paper's Fig. 3 (and the public training ports).
"""

import flax.linen as nn
import jax.numpy as jnp

from lapseg.layers.conv import Conv, ConvBN
from lapseg.ops import resize


class CascadeFeatureFusion(nn.Module):
    """CFF: `low [N, h, w, C1]`, `high [N, H, W, C2]` -> `(fused [N, H, W, features], aux)`.

    `aux` is `[N, H, W, num_classes]` logits of the upsampled low branch, computed in
    training (and at init, so that its params exist); None in eval mode or without
    `num_classes`. Submodules: `conv_low`, `conv_high` (ConvBN), `classifier` (conv + bias).

    Attributes:
      features: output channels (ICNet: 128).
      num_classes: classes of the auxiliary classifier; None for no classifier.
      dilation: rate of the low branch's 3x3 conv (2).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    features: int = 128
    num_classes: int | None = None
    dilation: int = 2
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, low: jnp.ndarray, high: jnp.ndarray, train: bool):
        """`train`: batch-stat BN and the auxiliary classifier."""
        if low.ndim != 4 or high.ndim != 4:
            raise ValueError(f"CFF expects NHWC maps, got low {low.shape} and high {high.shape}")
        if low.shape[0] != high.shape[0]:
            raise ValueError(f"CFF batch sizes differ: low {low.shape}, high {high.shape}")
        low = resize.resize_bilinear(low, high.shape[1:3], align_corners=True)
        aux = None
        if self.num_classes is not None and (train or self.is_initializing()):
            aux = Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype,
                       name="classifier")(low)
        low = ConvBN(self.features, 3, dilation=self.dilation, activation=False, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="conv_low")(low, train)
        high = ConvBN(self.features, 1, activation=False, dtype=self.dtype,
                      param_dtype=self.param_dtype, name="conv_high")(high, train)
        return nn.relu(low + high), aux
