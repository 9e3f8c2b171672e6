"""ResNet-18/34/50/101/152 for dense prediction (He et al., CVPR 2016).

Follows torchvision's `models/resnet.py` (v1.5: the stride of a bottleneck sits on
its 3x3 conv, not on the first 1x1), with two additions used by segmentation nets:

- `deep_stem=True`: the stem of PSPNet/ICNet/DFN, as in hszhao/semseg
  `model/resnet.py` (`deep_base`): three 3x3 convs 3->64 (stride 2), 64->64,
  64->128, each BN + ReLU, then the max-pool; layer1 then starts from 128 channels
  (so its first block has a projection shortcut even for BasicBlock).
- `output_stride` in {8, 16, 32}: the strides of the last stages become dilations
  (OS 16: layer4 dilation 2; OS 8: layer3 dilation 2, layer4 dilation 4), plus an
  optional DeepLab-v3 `multi_grid` multiplying the rates of layer4's blocks.
  `dilation_mode='deeplab'` (default) dilates every 3x3 conv of a dilated stage,
  including the first block's formerly strided one, as Caffe PSPNet/DeepLab and
  semseg's `pspnet.py` do (there `conv2.dilation = 2` for all of layer3).
  `dilation_mode='torchvision'` keeps the previous stage's rate in the first block,
  as torchvision's `replace_stride_with_dilation` does (its DeepLab/FCN weights).
  torchvision's BasicBlock refuses dilation; here it applies the block's rate to
  both of its 3x3 convs, as Bottleneck applies it to its one 3x3 conv.

`width` multiplies every channel count (0.5 gives ICNet's half-width ResNet-50).

Features, by name (`ResNet.feature_info()` gives strides and channels without
running the net):

  'stem'  after the stem's last conv + BN + ReLU, before max-pool   stride 2
  'res2'  after layer1                                              stride 4
  'res3'  after layer2                                              stride 8
  'res4'  after layer3                                  stride 16 (8 at OS 8)
  'res5'  after layer4                      stride 32 (16 at OS 16, 8 at OS 8)

Sizes for any input H x W (odd sizes included): every stride-2 op (7x7/2 pad 3,
3x3/2 pad 1, the 3x3/2 max-pool with padding 1, 1x1/2 shortcut) maps H to
`floor((H - 1) / 2) + 1 = ceil(H / 2)`, and `ceil(ceil(H / a) / b) = ceil(H / (a b))`,
so a feature of stride s is `ceil(H / s) x ceil(W / s)`; e.g. 361 x 481 gives
181 x 241, 91 x 121, 46 x 61, 23 x 31, 12 x 16 at strides 2, 4, 8, 16, 32.
Dilated convs are padded by their rate and keep the size.

Inputs are normalised images `[N, H, W, 3]`, see `lapseg.backbones.normalize`
(torchvision weights: `convention='torch'`).
"""

import functools
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from lapseg.backbones.feature_info import FeatureInfo
from lapseg.layers import ConvBN

# depth -> (block type, blocks per stage), torchvision's table.
DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
STAGE_PLANES = (64, 128, 256, 512)
FEATURE_NAMES = ("stem", "res2", "res3", "res4", "res5")


class ResidualBlock(nn.Module):
    """The fields shared by `BasicBlock` and `Bottleneck`.

    Attributes:
      planes: width of the block's 3x3 conv; the block outputs `planes * expansion`.
      strides: stride of the block (on its first 3x3 conv and its projection).
      dilation: rate of its 3x3 conv(s).
      projection: a 1x1 conv + BN shortcut ('downsample') instead of the identity.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    planes: int
    strides: int = 1
    dilation: int = 1
    projection: bool = False
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    expansion: ClassVar[int] = 1

    def _conv(self, *args, **kwargs) -> ConvBN:
        """A `ConvBN` with the block's dtypes (define it inside `__call__`)."""
        return ConvBN(*args, dtype=self.dtype, param_dtype=self.param_dtype, **kwargs)

    def _shortcut_add(self, y, x, train: bool):
        """`relu(y + shortcut(x))`, the shortcut projecting `x` to `y`'s channels if asked."""
        if self.projection:
            x = self._conv(y.shape[-1], 1, self.strides, activation=False, name="downsample")(
                x, train
            )
        return nn.relu(y + x)


class BasicBlock(ResidualBlock):
    """Two 3x3 convs + identity/projection shortcut; `[N, H, W, C] -> [N, H/s, W/s, planes]`."""

    expansion: ClassVar[int] = 1

    @nn.compact
    def __call__(self, x, train: bool):
        conv = self._conv
        y = conv(self.planes, 3, self.strides, self.dilation, name="conv1")(x, train)
        y = conv(self.planes, 3, 1, self.dilation, activation=False, name="conv2")(y, train)
        return self._shortcut_add(y, x, train)


class Bottleneck(ResidualBlock):
    """1x1 -> 3x3 (stride, dilation) -> 1x1 (x4) + shortcut; `-> [N, H/s, W/s, 4 planes]`."""

    expansion: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x, train: bool):
        conv = self._conv
        y = conv(self.planes, 1, name="conv1")(x, train)
        y = conv(self.planes, 3, self.strides, self.dilation, name="conv2")(y, train)
        y = conv(self.planes * self.expansion, 1, activation=False, name="conv3")(y, train)
        return self._shortcut_add(y, x, train)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """ResNet backbone: `[N, H, W, 3] -> {name: [N, ceil(H/s), ceil(W/s), C]}` ('stem'..'res5').

    Attributes:
      depth: 18, 34, 50, 101 or 152.
      deep_stem: three 3x3 convs (64, 64, 128) instead of one 7x7 (semseg's deep base).
      output_stride: 8, 16 or 32; stride of 'res5'.
      multi_grid: per-block rate multipliers for layer4 (DeepLab v3), one per block.
      dilation_mode: 'deeplab' or 'torchvision', see the module docstring.
      width: channel multiplier (default 1.0).
      dtype: compute dtype; param_dtype: parameter dtype (BN statistics stay f32).
    """

    depth: int = 50
    deep_stem: bool = False
    output_stride: int = 32
    multi_grid: tuple[int, ...] | None = None
    dilation_mode: str = "deeplab"
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        if self.depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {self.depth}")
        if self.output_stride not in (8, 16, 32):
            raise ValueError(f"ResNet output_stride must be 8, 16 or 32, got {self.output_stride}")
        if self.dilation_mode not in ("deeplab", "torchvision"):
            raise ValueError(
                "ResNet dilation_mode must be 'deeplab' or 'torchvision', "
                f"got {self.dilation_mode!r}"
            )
        if self.multi_grid is not None:
            blocks = DEPTHS[self.depth][1][3]
            if len(self.multi_grid) != blocks:
                raise ValueError(
                    f"ResNet-{self.depth} multi_grid needs one rate per layer4 block ({blocks}), "
                    f"got {self.multi_grid}"
                )
            if self.dilation_mode != "deeplab":
                raise ValueError(
                    "multi_grid (DeepLab v3) is defined for dilation_mode='deeplab' only"
                )
        if not self.width > 0:
            raise ValueError(f"ResNet width must be positive, got {self.width}")
        super().__post_init__()

    def _channels(self, c: int) -> int:
        return max(1, round(c * self.width))

    def _stage_plan(self):
        """Per stage: (planes, blocks, stride of its first block, rate of each block)."""
        _, depths = DEPTHS[self.depth]
        plan, stride, rate = [], 4, 1
        for stage, (planes, blocks) in enumerate(zip(STAGE_PLANES, depths)):
            first_stride, previous_rate = (1 if stage == 0 else 2), rate
            if first_stride == 2 and stride * 2 > self.output_stride:
                first_stride, rate = 1, rate * 2
            stride *= first_stride
            rates = [rate] * blocks
            if self.dilation_mode == "torchvision":
                rates[0] = previous_rate
            if stage == 3 and self.multi_grid is not None:
                rates = [rate * m for m in self.multi_grid]
            plan.append((self._channels(planes), blocks, first_stride, tuple(rates)))
        return plan

    def feature_info(self) -> dict[str, FeatureInfo]:
        """Stride and channels of each returned feature, in order."""
        expansion = BLOCKS[DEPTHS[self.depth][0]].expansion
        info = {"stem": FeatureInfo(2, self._channels(128 if self.deep_stem else 64))}
        stride = 4
        for name, (planes, _, first_stride, _) in zip(FEATURE_NAMES[1:], self._stage_plan()):
            stride *= first_stride
            info[name] = FeatureInfo(stride, planes * expansion)
        return info

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> dict[str, jnp.ndarray]:
        """`x`: `[N, H, W, 3]`; `train`: batch statistics for BN (mutable 'batch_stats')."""
        if x.ndim != 4:
            raise ValueError(f"ResNet expects NHWC images of rank 4, got shape {x.shape}")
        conv = functools.partial(ConvBN, dtype=self.dtype, param_dtype=self.param_dtype)
        c = self._channels
        if self.deep_stem:
            x = conv(c(64), 3, 2, name="conv1")(x, train)
            x = conv(c(64), 3, name="conv2")(x, train)
            x = conv(c(128), 3, name="conv3")(x, train)
        else:
            x = conv(c(64), 7, 2, name="conv1")(x, train)
        features = {"stem": x}
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

        block = BLOCKS[DEPTHS[self.depth][0]]
        in_channels = x.shape[-1]
        for stage, (planes, blocks, first_stride, rates) in enumerate(self._stage_plan()):
            for index in range(blocks):
                strides = first_stride if index == 0 else 1
                x = block(
                    planes,
                    strides=strides,
                    dilation=rates[index],
                    projection=index == 0
                    and (strides != 1 or in_channels != planes * block.expansion),
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    name=f"layer{stage + 1}_{index}",
                )(x, train)
                in_channels = planes * block.expansion
            features[FEATURE_NAMES[stage + 1]] = x
        return features
