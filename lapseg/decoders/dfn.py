"""DFN, the Discriminative Feature Network (Yu et al., CVPR 2018, arXiv 1804.09337, Sec. 3).

Follows the authors' code, ycszen/TorchSeg `model/dfn/voc.dfn.R101_v1c/network.py` (the
Cityscapes `network.py` is the same file), with the blocks of
`furnace/seg_opr/seg_oprs.py` (`lapseg.layers.dfn`: RRB, CAB):

    g = up(relu(bn(conv1x1_512(avgpool(res5)))))              global pooling branch, 'global_context'
    Smooth Network (Sec. 3.1), for i, s in enumerate(res5, res4, res3, res2):
        x = RRB_512(s)                                       'smooth_pre{i}'
        x = CAB(x, high)   high = g for res5, else up2(x of the stage before)   'cab{i}'
        x = RRB_512(x)                                       'smooth_aft{i}'
        head_i(x) -> 'smooth_<stage>'                        'smooth_head{i}'
    Border Network (Sec. 3.2), for i, s in enumerate(res2, res3, res4, res5):
        b = RRB_21(s) for res2; else b = RRB_21(b + up_{2^i}(RRB_21(s)))   'border_pre{i}', 'border_aft{i}'
        border head_i(b) -> 'border_<stage>'                 'border_head{i}'
    head (`DFNHead`): RRB to 9 x out channels without the final ReLU, conv1x1 (with bias) to
    out channels, bilinear (align corners) to the input size.

The border network's width is 21 for every dataset (`border_inner_channel = 21`, fixed in
both `network.py`s); `border_channels` keeps it. The reference also builds
`border_aft_rrbs[0]` but never calls it (the res2 map enters the sum unrefined), so it has no
counterpart here. The backbone is a ResNet at output stride 32 with the deep stem
(`resnet101(..., deep_stem=True, stem_width=64)`, "R101_v1c"), the factory's default;
`lapseg.backbones`' deep stem (3x3 convs 64, 64, 128) is that stem.

Deviation: the reference upsamples by fixed factors (`scale_factor=2` between smooth stages,
`2 ** i` onto res2 in the border network, `2 ** (5 - i)` / 4 in the heads), which gives the next
map's size only when H and W are multiples of 32 (its 512 and 800 crops). Here every
upsampling goes to the size of the map it meets (the next feature, res2, the input), by the
same align-corners bilinear interpolation: the same values at multiples of 32, and any input
size works (odd sizes and dilated backbones, whose stages share a stride, included).

Outputs (`[N, H, W, *]`, all at the input size, in eval and train mode):
  'logits'         the res2 smooth head, `[N, H, W, C]` (the reference's prediction);
  'smooth_res5', 'smooth_res4', 'smooth_res3'  the other smooth heads, `[N, H, W, C]`;
  'border_res2' .. 'border_res5'  the border heads, one logit per pixel, `[N, H, W, 1]`.
The loss (`lapseg.losses.dfn`) takes cross-entropy on the smooth heads and the focal loss
on the border heads; inference reads 'logits', and jit drops the rest.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from lapseg import backbones
from lapseg.layers.conv import Conv, ConvBN
from lapseg.layers.dfn import KAIMING_FAN_IN, ChannelAttention, RefinementResidual
from lapseg.ops import normalize, resize

# TorchSeg's backbone, "R101_v1c": a deep-stem ResNet at output stride 32, every depth.
_BACKBONE_DEFAULTS = {name: {"deep_stem": True, "output_stride": 32}
                      for name in backbones.names() if name.startswith("resnet")}


def _up(x: jnp.ndarray, size) -> jnp.ndarray:
    """Align-corners bilinear resize of `x` `[N, h, w, C]` to `size` (a no-op at that size)."""
    return x if tuple(x.shape[1:3]) == tuple(size) else resize.resize_bilinear(
        x, size, align_corners=True)


class Head(nn.Module):
    """`DFNHead`: `[N, h, w, C_in] -> [N, *size, features]`, RRB to `expansion * features`
    (no final ReLU), conv1x1 with bias, align-corners bilinear to `size`."""

    features: int
    expansion: int = 9
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, size, train: bool) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = RefinementResidual(self.expansion * self.features, activation=False, name="rrb",
                               **kw)(x, train)
        x = Conv(self.features, (1, 1), kernel_init=KAIMING_FAN_IN, name="conv", **kw)(x)
        return _up(x, size)


class DFN(nn.Module):
    """DFN: images `[N, H, W, 3]` -> `{'logits', 'smooth_*': [N, H, W, C], 'border_*': [N, H, W, 1]}`.

    Attributes:
      backbone: feature extractor returning a dict with every name in `features`.
      num_classes: C.
      features: backbone features, deepest first (the smooth network's order; the border
        network reads them finest first); the last is the finest, whose head is 'logits'.
      channels: width of the smooth network (`smooth_inner_channel = 512`).
      border_channels: width of the border network (`border_inner_channel = 21`).
      head_expansion: a head's RRB has `head_expansion x` its output channels (9).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    backbone: nn.Module
    num_classes: int
    features: Sequence[str] = ("res5", "res4", "res3", "res2")
    channels: int = 512
    border_channels: int = 21
    head_expansion: int = 9
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict:
        """`images`: `[N, H, W, 3]` normalised; `train`: batch-statistics BN."""
        normalize.check_images(images)
        return self.decode(self.backbone(images, train), images.shape[1:3], train)

    @nn.compact
    def decode(self, features: dict, size: tuple[int, int], train: bool = False) -> dict:
        """Smooth and border networks on backbone `features`; every output at `size` `(H, W)`."""
        if isinstance(self.features, str) or len(self.features) < 1:
            raise ValueError(f"DFN needs backbone features deepest first, e.g. ('res5', 'res4', "
                             f"'res3', 'res2'); got {self.features!r}")
        backbones.require_features(features, self.features, "DFN")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        maps = [features[name] for name in self.features]
        outputs = {}

        # Global pooling branch: avgpool -> conv1x1 + BN + ReLU, upsampled to the deepest map.
        deepest = maps[0]
        g = ConvBN(self.channels, 1, kernel_init=KAIMING_FAN_IN, name="global_context", **kw)(
            deepest.mean(axis=(1, 2), keepdims=True), train)
        high = jnp.broadcast_to(g, (*deepest.shape[:3], self.channels))  # a 1x1 map, resized

        for i, (name, x) in enumerate(zip(self.features, maps)):
            x = RefinementResidual(self.channels, name=f"smooth_pre{i}", **kw)(x, train)
            x = ChannelAttention(name=f"cab{i}", **kw)(x, _up(high, x.shape[1:3]))
            x = RefinementResidual(self.channels, name=f"smooth_aft{i}", **kw)(x, train)
            key = "logits" if i == len(maps) - 1 else f"smooth_{name}"
            outputs[key] = Head(self.num_classes, self.head_expansion, name=f"smooth_head{i}",
                                **kw)(x, size, train)
            high = x

        border = None
        for i, (name, x) in enumerate(zip(self.features[::-1], maps[::-1])):
            x = RefinementResidual(self.border_channels, name=f"border_pre{i}", **kw)(x, train)
            if border is None:
                border = x
            else:
                border = RefinementResidual(self.border_channels, name=f"border_aft{i}", **kw)(
                    border + _up(x, border.shape[1:3]), train)
            outputs[f"border_{name}"] = Head(1, self.head_expansion, name=f"border_head{i}",
                                             **kw)(border, size, train)
        return outputs


def dfn(*, num_classes: int, backbone="resnet101", backbone_kwargs: dict | None = None,
        dtype=jnp.float32, param_dtype=jnp.float32, **decoder_fields) -> DFN:
    """DFN on `backbone` (a name or a Module, see `lapseg.backbones.build`).

    A ResNet name gets TorchSeg's "v1c" defaults, `deep_stem=True, output_stride=32`,
    unless `backbone_kwargs` says otherwise; `decoder_fields` are `DFN` fields.
    """
    net = backbones.build(backbone, backbone_kwargs, _BACKBONE_DEFAULTS, dtype=dtype,
                          param_dtype=param_dtype)
    return DFN(backbone=net, num_classes=num_classes, dtype=dtype, param_dtype=param_dtype,
               **decoder_fields)
