"""GCN, "Large Kernel Matters" (Peng et al., CVPR 2017, Sec. 3.3, Fig. 2).

One Global Convolutional Network module + Boundary Refinement per stage, res5..res2,
each producing class score maps; then a top-down path (the paper's Fig. 2):

    s_i = BR(GCN_k(res_i))                          i = 5, 4, 3, 2   (C channels each)
    x   = s_5;  x = BR(up(x) + s_i) for i = 4, 3, 2                  ('fuse' BRs)
    x   = BR(up(x)) twice: stride 4 -> 2 -> 1                        ('final' BRs)

nine BRs in all, as in the PyTorch port ZijunDeng/pytorch-semantic-segmentation
`models/gcn.py`. The blocks are `lapseg.layers.gcn` (GCN: two separable k x k branches,
no BN/ReLU; BR: `x + conv(relu(conv(x)))`). The backbone is a plain ImageNet ResNet at
output stride 32 (the paper's ResNet-GCN encoder variant is not reproduced).

Upsampling, `upsampling=`:
- 'deconv' (default, the paper's figure): a learned transposed convolution C -> C per
  step, kernel 2f, stride f, PyTorch padding f/2 (f = 2 between ResNet stages),
  initialised with the bilinear kernel (`ops.basis.bilinear_deconv_weight`, FCN's
  initialisation; at initialisation it equals `ops.basis.bilinear_upsample`), then
  cropped to the next stage's size (`ceil(H / stride)`, odd sizes included);
- 'bilinear': align-corners bilinear resizing (`F.upsample_bilinear` in the port).
Stages at the same stride (a dilated backbone) are summed without upsampling.

Outputs: `'logits'` `[N, H, W, C]`.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from lapseg import backbones
from lapseg.layers.gcn import BoundaryRefinement, GlobalConvolution
from lapseg.ops import basis, normalize, resize


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Upsample(nn.Module):
    """`[N, h, w, C] -> [N, *size, C]` by an integer `factor` (`size <= factor * (h, w)`).

    'deconv': learned ConvTranspose (kernel 2f, stride f, PyTorch padding f/2, bilinear
    init, no bias), cropped at the bottom/right to `size`; 'bilinear': align-corners resize.
    """

    factor: int
    mode: str = "deconv"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
        if self.mode == "bilinear":
            return resize.resize_bilinear(x, size, align_corners=True)
        f, channels = self.factor, x.shape[-1]
        # PyTorch ConvTranspose2d padding p is lax padding k - 1 - p on the dilated input;
        # output (h - 1) f + 1 + 2 (2f - 1 - f/2) - (2f - 1) = f h.
        pad = 2 * f - 1 - f // 2
        bilinear = basis.bilinear_deconv_weight(2 * f, channels)
        x = nn.ConvTranspose(channels, (2 * f, 2 * f), strides=(f, f),
                             padding=((pad, pad), (pad, pad)), use_bias=False,
                             kernel_init=lambda *_: jnp.asarray(bilinear, self.param_dtype),
                             dtype=self.dtype, param_dtype=self.param_dtype, name="deconv")(x)
        return x[:, : size[0], : size[1]]


class GCN(nn.Module):
    """GCN: images `[N, H, W, 3]` -> `{'logits': [N, H, W, num_classes]}`.

    Attributes:
      backbone: feature extractor returning a dict with every name in `features`.
      num_classes: C, also the width of every GCN/BR.
      features: backbone features, deepest first; strides must be powers of 2.
      kernel_size: k of the GCN modules, odd (15).
      upsampling: 'deconv' (learned, bilinear-initialised) or 'bilinear' (fixed).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    backbone: nn.Module
    num_classes: int
    features: Sequence[str] = ("res5", "res4", "res3", "res2")
    kernel_size: int = 15
    upsampling: str = "deconv"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        if self.upsampling not in ("deconv", "bilinear"):
            raise ValueError(
                f"GCN upsampling must be 'deconv' or 'bilinear', got {self.upsampling!r}")
        if not self.features:
            raise ValueError("GCN needs at least one backbone feature")
        super().__post_init__()

    def _strides(self) -> list[int]:
        strides = backbones.feature_strides(self.backbone, self.features, "GCN")
        if any(s & (s - 1) for s in strides) or strides != sorted(strides, reverse=True):
            raise ValueError(
                f"GCN needs power-of-2 strides, deepest first; {self.features} have {strides}")
        return strides

    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict:
        """`images`: `[N, H, W, 3]` normalised; `train`: batch-stat BN in the backbone."""
        normalize.check_images(images)
        return self.decode(self.backbone(images, train), images.shape[1:3], train)

    @nn.compact
    def decode(self, features: dict, size: tuple[int, int], train: bool = False) -> dict:
        """The GCN/BR pyramid on backbone `features`; 'logits' at `size` `(H, W)`."""
        del train  # no BN or dropout in the decoder
        strides = self._strides()
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        scores = [
            BoundaryRefinement(name=f"br{i}", **kw)(
                GlobalConvolution(self.num_classes, self.kernel_size, name=f"gcn{i}", **kw)(
                    features[name]))
            for i, name in enumerate(self.features)]

        def up(x, step, stride, ratio):  # from the current stride to `stride`, factor `ratio`
            if ratio == 1:
                return x
            target = (_ceil_div(size[0], stride), _ceil_div(size[1], stride))
            return Upsample(ratio, self.upsampling, name=f"up{step}", **kw)(x, target)

        x = scores[0]
        for i in range(1, len(scores)):
            x = up(x, i, strides[i], strides[i - 1] // strides[i]) + scores[i]
            x = BoundaryRefinement(name=f"br_fuse{i}", **kw)(x)
        stride, step = strides[-1], len(scores)
        while stride > 1:
            stride //= 2
            x = BoundaryRefinement(name=f"br_final{step}", **kw)(up(x, step, stride, 2))
            step += 1
        return {"logits": x}


def gcn(*, num_classes: int, backbone="resnet101", backbone_kwargs: dict | None = None,
        dtype=jnp.float32, param_dtype=jnp.float32, **decoder_fields) -> GCN:
    """GCN on `backbone` (a name or a Module, see `lapseg.backbones.build`).

    The backbone keeps its defaults (a standard ResNet, output stride 32, as in the
    paper); `decoder_fields` are `GCN` fields.
    """
    net = backbones.build(backbone, backbone_kwargs, dtype=dtype, param_dtype=param_dtype)
    return GCN(backbone=net, num_classes=num_classes, dtype=dtype, param_dtype=param_dtype,
               **decoder_fields)
