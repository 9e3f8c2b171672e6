"""VGG-16 (Simonyan & Zisserman, ICLR 2015) as FCN and LRR use it.

Five blocks of 3x3 convs (pad 1) + ReLU, each closed by a 2x2/2 max-pool in
*ceil* mode (Caffe's pooling, kept by FCN's `VGG_ILSVRC_16_layers` and
wkentaro/pytorch-fcn), then the classifier's fully connected layers as
convolutions: fc6 a 7x7 conv to 4096 channels, fc7 a 1x1 conv to 4096, each
followed by ReLU and dropout 0.5 (element-wise, Caffe's `Dropout`; pytorch-fcn's
`Dropout2d` drops whole channels instead). Parameter names follow torchvision's
`models/vgg.py` (`features.{i}`, `classifier.0`, `classifier.3`), whose
`classifier.0` weight [4096, 512*7*7] is exactly fc6's [4096, 512, 7, 7] kernel.

Two padding modes:

- `pad100=True` (FCN): conv1_1 pads by 100 and fc6 is VALID, as in FCN's
  prototxts, so that any input of at least 1 x 1 gives a non-empty fc7; the
  decoder then crops its upsampled scores by FCN's offsets.
- `pad100=False` (default; LRR): conv1_1 pads by 1 and fc6 pads by 3 ("same"),
  so that features stay aligned with the input and a small input does not vanish
  under the 7x7 VALID conv. The weights are the same in both modes.

Features, by name (nominal stride; with pad100 they are also offset by the padding):

  'relu1_2' 1, 'relu2_2' 2, 'relu3_3' 4, 'pool3' 8, 'relu4_3' 8, 'pool4' 16,
  'relu5_3' 16, 'pool5' 32, 'fc7' 32.

Sizes for any input H x W: a ceil-mode 2x2/2 pool maps H to `ceil(H / 2)`, so a
feature of stride s has `ceil(H' / s)` rows with `H' = H` (pad100 off) or
`H' = H + 198` (pad100 on: conv1_1 adds 2 * 100 - 2); fc7 is pool5's size, minus 6
with pad100 (VALID 7x7). E.g. 361 x 481: pool5 and fc7 12 x 16 without pad100;
with pad100 pool5 is 18 x 22 and fc7 12 x 16.

Inputs: normalised images `[N, H, W, 3]`, see `lapseg.backbones.normalize`
(torchvision weights: 'torch'; Caffe/FCN weights: 'caffe', BGR).
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from lapseg.backbones.feature_info import FeatureInfo
from lapseg.layers import ConvBN

# (channels, convs) per block: VGG configuration "D".
STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
FC_CHANNELS = 4096
FC6_KERNEL = 7
# Named features: block index (1-based) -> name of its last ReLU output, and the pools kept.
_RELU_FEATURES = {1: "relu1_2", 2: "relu2_2", 3: "relu3_3", 4: "relu4_3", 5: "relu5_3"}
_POOL_FEATURES = {3: "pool3", 4: "pool4", 5: "pool5"}
# torchvision's Linear init for the classifier: normal(0, 0.01).
_FC_INIT = nn.initializers.normal(0.01)


def max_pool_ceil(x: jnp.ndarray) -> jnp.ndarray:
    """2x2/2 max-pool in ceil mode: `[N, H, W, C] -> [N, ceil(H/2), ceil(W/2), C]`.

    Odd sizes are padded at the bottom/right by -inf, which is what ceil mode does
    (PyTorch `ceil_mode=True`, Caffe pooling) for a 2x2 window with stride 2.
    """
    _, h, w, _ = x.shape
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding=((0, h % 2), (0, w % 2)))


class VGG16(nn.Module):
    """VGG-16 backbone: `[N, H, W, 3] -> {name: [N, h, w, C]}` (see the module docstring).

    Attributes:
      pad100: FCN's padding (conv1_1 pad 100, fc6 VALID) instead of "same" padding.
      dropout_rate: dropout after fc6 and fc7 when `train` (rng 'dropout').
      width: channel multiplier (default 1.0).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    pad100: bool = False
    dropout_rate: float = 0.5
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        if not self.width > 0:
            raise ValueError(f"VGG16 width must be positive, got {self.width}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"VGG16 dropout_rate must be in [0, 1), got {self.dropout_rate}")
        super().__post_init__()

    def _channels(self, c: int) -> int:
        return max(1, round(c * self.width))

    def feature_info(self) -> dict[str, FeatureInfo]:
        """Nominal stride and channels of each returned feature, in order."""
        info = {}
        for block, (channels, _) in enumerate(STAGES, start=1):
            info[_RELU_FEATURES[block]] = FeatureInfo(2 ** (block - 1), self._channels(channels))
            if block in _POOL_FEATURES:
                info[_POOL_FEATURES[block]] = FeatureInfo(2**block, self._channels(channels))
        info["fc7"] = FeatureInfo(32, self._channels(FC_CHANNELS))
        return info

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> dict[str, jnp.ndarray]:
        """`x`: `[N, H, W, 3]`; `train` enables dropout (rng 'dropout')."""
        if x.ndim != 4:
            raise ValueError(f"VGG16 expects NHWC images of rank 4, got shape {x.shape}")
        conv = functools.partial(
            ConvBN, use_bn=False, use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype
        )
        features = {}
        for block, (channels, convs) in enumerate(STAGES, start=1):
            for index in range(1, convs + 1):
                pad = 100 if self.pad100 and (block, index) == (1, 1) else 1
                x = conv(self._channels(channels), 3, padding=pad, name=f"conv{block}_{index}")(
                    x, train
                )
            features[_RELU_FEATURES[block]] = x
            x = max_pool_ceil(x)
            if block in _POOL_FEATURES:
                features[_POOL_FEATURES[block]] = x
        fc = functools.partial(conv, self._channels(FC_CHANNELS), kernel_init=_FC_INIT)
        fc6_padding = 0 if self.pad100 else FC6_KERNEL // 2
        x = fc(FC6_KERNEL, padding=fc6_padding, name="fc6")(x, train)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = fc(1, name="fc7")(x, train)
        features["fc7"] = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return features
