"""ICNet (Zhao et al., "ICNet for Real-Time Semantic Segmentation on High-Resolution
Images", ECCV 2018), Sec. 3.2-3.3, Fig. 2.

Follows hszhao/ICNet `evaluation/prototxt/icnet_cityscapes_bnnomerge.prototxt`:

    sub1 (1):   image -> 3x conv3x3/2 + BN + ReLU (32, 32, 64)                  -> 1/8
    sub2 (1/2): image/2 -> half-width deep-stem ResNet-50 up to conv3_1          -> 1/16
    sub4 (1/4): conv3_1 shrunk x2 (`conv3_1_sub4`) -> conv3_2..conv5_3 (dilation 2 in
                conv4, 4 in conv5) -> PPM summed (`conv5_3_sum`) -> conv1x1 256 + BN + ReLU
                (`conv5_4_k1`)                                                   -> 1/32
    CFF(sub4, sub2) -> 1/16, CFF(., sub1) -> 1/8 (`lapseg.layers.cff`)
    upsample x2 (`sub12_sum_interp`) -> conv1x1 classes (`conv6_cls`) -> 1/4 -> upsample x4

Cascade label guidance (Sec. 3.3): training scores each branch at its own resolution,
as the paper's Fig. 2 caption ("the final x4 upsampling in the bottom branch is only used
during testing") and hellochick/ICNet-tensorflow `train.py` (`create_losses`: `sub4_out`,
`sub24_out` and `conv6_cls`, each against the labels resized to its size by
`tf.image.resize_nearest_neighbor`) do. Training mode therefore adds the CFF classifiers
on the upsampled low branches, 'aux_sub4' (1/16, `sub4_out`) and 'aux_sub24' (1/8,
`sub24_out`), and the 1/4 map 'coarse_logits' (`conv6_cls`, before the x4 upsampling); the
loss `0.4 L_sub4 + 0.4 L_sub24 + 1.0 L_sub124` is `segmentation.deep_supervision` over those
three keys (`lapseg.train.recipes.ICNET_LOSS_WEIGHTS`; labels resized by nearest to each
output, the top-left pixel of each block, which is what TF1's `resize_nearest_neighbor`
without align_corners samples). 'logits', the x4-upsampled map, is still returned in
training (the step's pixel accuracy reads it) but is not scored. Eval mode computes only
'logits'.

The 1/2 and 1/4 branches share weights *and* computation: the 1/4 branch does not run
conv1..conv3_1 on a 1/4 image but continues from the 1/2 branch's conv3_1 shrunk by 2
(the reference's `conv3_1_sub4` Interp), which is what the paper's weight sharing
amounts to in the released model. The backbone is one lapseg ResNet (params under
`params['backbone']`, PyTorch-importable): run on the 1/2 image, its first conv3 block
(`layer2_0`, conv3_1) is intercepted, kept for the sub2 branch and replaced by its x2
shrink, so that the rest of the ResNet (output stride 8, i.e. dilation 2 and 4) is the
sub4 branch and its 'res5' is conv5_3.

All resizes are align-corners bilinear (Caffe Interp), to the size of the branch they
join. Deviations: sizes follow PyTorch's `ceil(H / s)` (the prototxt runs 1025 x 2049,
Caffe's `k * 32 + 1` sizes); lapseg's ResNet strides conv3_1 in its 3x3 conv (v1.5), the
Caffe model in its first 1x1; the pyramid pools with PyTorch's adaptive bins by default
(any size), `pooling='fixed'` with `CITYSCAPES_POOLING` gives the prototxt's kernels.

Outputs: 'logits' `[N, H, W, C]`; training also 'aux_sub4' `[N, ceil(H/16), ceil(W/16), C]`,
'aux_sub24' `[N, ceil(H/8), ceil(W/8), C]` and 'coarse_logits' `[N, 2 ceil(H/8), 2 ceil(W/8), C]`
(the 1/4 map: twice the 1/8 branch's size).
"""

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from lapseg import backbones
from lapseg.layers.cff import CascadeFeatureFusion
from lapseg.layers.conv import Conv, ConvBN
from lapseg.layers.taps import tapped
from lapseg.layers.ppm import PyramidPooling
from lapseg.ops import normalize, resize

# The released model's backbone: a half-width deep-stem ResNet at output stride 8.
_BACKBONE_DEFAULTS = {name: {"deep_stem": True, "output_stride": 8, "width": 0.5}
                      for name in backbones.names() if name.startswith("resnet")}

# `conv5_3_pool{1,2,3,6}` of the Cityscapes prototxt, for the 33 x 65 conv5_3 of a 1025 x 2049
# input; Caffe's ceil-mode pooling gives the same 1/2/3/6 cells at 32 x 64 (1024 x 2048).
CITYSCAPES_POOLING = {
    "pool_kernels": ((33, 65), (17, 33), (13, 25), (8, 15)),
    "pool_strides": ((33, 65), (16, 32), (10, 20), (5, 10)),
}


def _shrink(x: jnp.ndarray, factor: int) -> jnp.ndarray:
    """Caffe `Interp` with `shrink_factor`: align-corners bilinear to `ceil(H / factor)`."""
    size = tuple(math.ceil(s / factor) for s in x.shape[1:3])
    return resize.resize_bilinear(x, size, align_corners=True)


class ICNet(nn.Module):
    """ICNet: images `[N, H, W, 3]` -> `{'logits'[, 'aux_sub4', 'aux_sub24', 'coarse_logits']}`.

    Attributes:
      backbone: a lapseg ResNet at output stride 8 (ICNet: ResNet-50, deep stem, width 0.5).
      num_classes: C.
      split_block: the backbone block after which the 1/4 branch forks (conv3_1).
      sub1_channels: widths of the full-resolution branch's three stride-2 convs.
      branch_channels: width of both CFFs (128).
      channels: width of the conv after the pyramid (`conv5_4_k1`, 256).
      bins, pooling, pool_kernels, pool_strides: the summed pyramid (`PyramidPooling`).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    backbone: nn.Module
    num_classes: int
    split_block: str = "layer2_0"
    sub1_channels: Sequence[int] = (32, 32, 64)
    branch_channels: int = 128
    channels: int = 256
    bins: Sequence[int] = (1, 2, 3, 6)
    pooling: str = "adaptive"
    pool_kernels: Sequence | None = None
    pool_strides: Sequence | None = None
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        info = self.backbone.feature_info() if hasattr(self.backbone, "feature_info") else None
        if info is not None and "res5" not in info:
            raise ValueError("ICNet needs a lapseg ResNet backbone (features 'res2'..'res5'); "
                             f"the backbone gives {sorted(info)}")
        if info is not None and info["res5"].stride != 8:
            raise ValueError("ICNet needs its backbone at output_stride=8 (conv4/conv5 dilated by "
                             f"2 and 4), got a 'res5' stride of {info['res5'].stride}")
        super().__post_init__()

    def _sub2_and_sub4(self, images: jnp.ndarray, train: bool):
        """Backbone on the 1/2 image: (conv3_1 at 1/16, conv5_3 at 1/32)."""
        def is_conv3_1(context):
            return (context.module.name == self.split_block and context.module.parent is self.backbone
                    and context.method_name == "__call__")

        # The tap continues at half resolution: `conv3_1_sub4`.
        with tapped(is_conv3_1, replace=lambda out: _shrink(out, 2)) as taps:
            features = self.backbone(_shrink(images, 2), train)  # `data_sub2`
        if len(taps) != 1:
            raise ValueError(f"ICNet: backbone block {self.split_block!r} ran {len(taps)} times "
                             "(ICNet needs a lapseg ResNet, whose blocks are named 'layer<s>_<i>')")
        return taps[0], features["res5"]

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict:
        """`images`: `[N, H, W, 3]` normalised; `train`: batch-stat BN and the aux classifiers."""
        normalize.check_images(images)
        if images.shape[-1] != 3:
            raise ValueError(f"ICNet expects RGB images [N, H, W, 3], got shape {images.shape}")
        conv = functools.partial(ConvBN, dtype=self.dtype, param_dtype=self.param_dtype)
        cff = functools.partial(CascadeFeatureFusion, features=self.branch_channels,
                                num_classes=self.num_classes, dtype=self.dtype,
                                param_dtype=self.param_dtype)

        sub1 = images
        for index, width in enumerate(self.sub1_channels):
            sub1 = conv(width, 3, 2, name=f"sub1_conv{index + 1}")(sub1, train)
        sub2, sub4 = self._sub2_and_sub4(images, train)
        sub4 = PyramidPooling(self.bins, self.pooling, self.pool_kernels, self.pool_strides,
                              branch_conv=False, fusion="sum", name="ppm")(sub4, train)
        sub4 = conv(self.channels, 1, name="sub4_conv")(sub4, train)  # `conv5_4_k1`

        sub24, aux_sub4 = cff(name="cff_sub24")(sub4, sub2, train)
        sub124, aux_sub24 = cff(name="cff_sub12")(sub24, sub1, train)
        height, width = sub124.shape[1:3]
        sub124 = resize.resize_bilinear(sub124, (2 * height, 2 * width), align_corners=True)
        logits = Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype,
                      name="classifier")(sub124)  # `conv6_cls`, 1/4
        outputs = {"logits": resize.resize_bilinear(logits, images.shape[1:3], align_corners=True)}
        if aux_sub4 is not None:  # training: the cascade's three scored outputs
            outputs.update(aux_sub4=aux_sub4, aux_sub24=aux_sub24, coarse_logits=logits)
        return outputs


def icnet(*, num_classes: int, backbone="resnet50", backbone_kwargs: dict | None = None,
          dtype=jnp.float32, param_dtype=jnp.float32, **decoder_fields) -> ICNet:
    """ICNet on `backbone` (a ResNet name or Module, see `lapseg.backbones.build`);
    decoder_fields are `ICNet` fields.

    A ResNet name gets ICNet's defaults, the half-width deep-stem net at output stride 8
    (`deep_stem=True, output_stride=8, width=0.5`), unless `backbone_kwargs` says otherwise.
    """
    net = backbones.build(backbone, backbone_kwargs, _BACKBONE_DEFAULTS, dtype=dtype,
                          param_dtype=param_dtype)
    return ICNet(backbone=net, num_classes=num_classes, dtype=dtype, param_dtype=param_dtype,
                 **decoder_fields)
