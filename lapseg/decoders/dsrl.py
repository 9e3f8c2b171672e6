"""DSRL: Dual Super-Resolution Learning (Wang et al., CVPR 2020), wrapping any lapseg decoder.

Paper Sec. 3 (Fig. 2): the network sees the image downsampled x2 and is trained to
produce outputs at the ORIGINAL resolution, through two branches sharing one encoder:

- SSSR (semantic segmentation super-resolution, Sec. 3.2): the base segmentation network
  (any lapseg decoder: `base`) followed by the paper's upsampling module, "a stack of
  deconvolutional layers" with BatchNorm and ReLU, learned with the rest, that brings its
  logits to the original resolution (`SSSRUpsample`: log2(scale) x [2x2 stride-2 deconv +
  BN + ReLU], then a 1x1 classifier);
- SISR (single image super-resolution, Sec. 3.2): reconstructs the original image from
  the shared encoder's features (an ESPCN-style head: 5x5 conv + tanh, 3x3 conv + tanh,
  3x3 conv to 3 s^2 channels, depth-to-space s; Shi et al., CVPR 2016), supervised by MSE
  to the normalised original image;
- FTM (feature transform module, Sec. 3.3): 1x1 conv classes -> 3 + BN + ReLU on the SSSR
  output, so that the feature-affinity loss (`lapseg.losses.dsrl`) can compare the
  pairwise structure of the SSSR and SISR maps.

At inference only SSSR runs (`train=False` traces neither SISR nor FTM): the cost is the
base's at half resolution plus the input downsampling and the SSSR upsampling module.

The factory `dsrl` takes the base already built; `lapseg.models.create_model('dsrl',
base='pspnet', ...)` builds it by name first (DSRL is a wrapper model there), so this file
imports no registry.

Reference: the authors' code (wanglixilinx/DSRL, moved to Xilinx/DSRL; only the ESPNetv2
test script survives) and its widely used DeepLabv3+ re-implementation Dootmaan/DSRL
(`modeling/deeplab.py`: `pointwise` = FTM, `sr_decoder` + deconvs = SISR, returning
`(x_seg_up, x_sr_up, pointwise(x_seg_up), x_sr_up)`). Deviations, each for genericity:

- The shared encoder is the base decoder's backbone (the reference also shares ASPP, a
  DeepLabv3+ part). SISR reads backbone features named by `sisr_features` (default the
  stride-4 'res2' and the deepest 'res5', like DeepLabv3+'s low-level + ASPP inputs of the
  reference's `sr_decoder`), each projected by 1x1 conv + BN + ReLU and upsampled to the
  network's input resolution, concatenated, then ESPCN (the paper's SISR upsampling
  module) instead of the reference's three stride-2 deconvolutions.
- SSSR: Dootmaan/DSRL `modeling/deeplab.py` `forward` upsamples the segmentation logits
  bilinearly (`F.interpolate(..., align_corners=True)`, twice) instead of the paper's
  learned module; `sssr_upsampling='bilinear'` is that, kept as the ablation. The learned
  module acts on the base's logits (at the network input's resolution), because a generic
  base exposes no other output; its deconvolutions are 2x2 stride 2 (the kernel of the
  reference's SISR deconvolutions, `nn.ConvTranspose2d(64, 64, 2, stride=2)`; the paper
  gives none) without a bias (BatchNorm follows, so a bias would be absorbed by it), and it
  ends in a 1x1 conv to the classes (with bias): after a ReLU the scores would be
  non-negative, so a linear classifier must close the stack.
- DSRL owns the backbone: the same Module instance is the `backbone` field of DSRL and of
  the base decoder, so its params sit under `params['backbone']` (LR groups and PyTorch
  weight import work as for any decoder) and the base's head under `params['base']`.
  The backbone runs once, inside the base; DSRL reads its feature dict by intercepting
  that call (`nn.intercept_methods`), so no decoder needs to know about DSRL.
"""

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from lapseg.layers.conv import Conv, ConvBN, enclosing_setting
from lapseg.layers.taps import tapped
from lapseg.ops import dupsample, normalize, resize


class SISR(nn.Module):
    """SISR branch: backbone features -> image `[N, s*h, s*w, 3]` (h x w the network input).

    Attributes:
      features: backbone features it reads.
      channels: width of each feature's 1x1 projection (conv + BN + ReLU).
      espcn_channels: widths of ESPCN's 5x5 and 3x3 tanh convs (ESPCN: 64, 32).
      upscale: depth-to-space factor s (DSRL: 2, the input downsampling factor).
    """

    features: Sequence[str] = ("res2", "res5")
    channels: int = 64
    espcn_channels: tuple[int, int] = (64, 32)
    upscale: int = 2
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, features: dict, size: tuple[int, int], train: bool) -> jnp.ndarray:
        """`features`: the backbone's dict; `size`: `(h, w)` of the network input."""
        missing = [name for name in self.features if name not in features]
        if missing:
            raise ValueError(f"DSRL sisr_features {missing} are not among the backbone's "
                             f"features {sorted(features)}")
        conv = functools.partial(ConvBN, dtype=self.dtype, param_dtype=self.param_dtype)
        projected = [
            resize.resize_bilinear(conv(self.channels, 1, name=f"project_{name}")(features[name], train),
                                   size, align_corners=True)
            for name in self.features
        ]
        x = jnp.concatenate(projected, axis=-1)
        # ESPCN: plain convs with bias, tanh, then the sub-pixel (depth-to-space) layer.
        plain = functools.partial(conv, use_bias=True, use_bn=False, activation=False)
        x = jnp.tanh(plain(self.espcn_channels[0], 5, name="espcn_conv1")(x, train))
        x = jnp.tanh(plain(self.espcn_channels[1], 3, name="espcn_conv2")(x, train))
        x = plain(3 * self.upscale**2, 3, name="espcn_conv3")(x, train)
        return dupsample.depth_to_space(x, self.upscale)


SSSR_UPSAMPLING = ("deconv", "bilinear")


def deconv2x2(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """PyTorch `ConvTranspose2d(I, O, 2, stride=2, bias=False)`, NHWC.

    `Y[n, 2i + a, 2j + b, o] = sum_c X[n, i, j, c] kernel[a, b, c, o]`: a kernel equal to its
    stride reaches each output pixel from exactly one input pixel, so the transposed
    convolution is one einsum (PyTorch's weight `[I, O, 2, 2]` is `kernel.transpose(2, 3, 0, 1)`).

    Args:
      x: `[N, H, W, I]`.
      kernel: `[2, 2, I, O]`.

    Returns:
      `[N, 2H, 2W, O]`.
    """
    n, height, width, _ = x.shape
    y = jnp.einsum("nhwc,abco->nhawbo", x, kernel)
    return y.reshape(n, 2 * height, 2 * width, kernel.shape[-1])


class SSSRUpsample(nn.Module):
    """The paper's SSSR upsampling module: `[N, h, w, C] -> [N, s*h, s*w, num_classes]`.

    `log2(s)` times [2x2 stride-2 deconvolution to `channels` + BatchNorm + ReLU], then a
    1x1 conv (with bias) to `num_classes` (see the module docstring for the choices).

    Attributes:
      num_classes: output channels.
      scale: s, a power of 2.
      channels: width of every deconvolution.
    """

    num_classes: int
    scale: int = 2
    channels: int = 64
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    fold_bn: bool | None = None

    def batch_norm_folds(self) -> dict:
        """`{'bn<i>': (('deconv<i>',), ('deconv<i>_bias',))}`: each BatchNorm folds into its
        deconvolution's kernel `[2, 2, I, O]` and a bias `[O]` (`lapseg.layers.fold`)."""
        return {f"bn{step}": ((f"deconv{step}",), (f"deconv{step}_bias",))
                for step in range(int(math.log2(max(self.scale, 1))))}

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """`x`: `[N, h, w, C]`; with `fold_bn` (own or enclosing, as `ConvBN`'s) each
        BatchNorm is folded into its deconvolution, a bias added instead (inference only)."""
        steps = int(math.log2(self.scale))
        if self.scale < 2 or 2**steps != self.scale:
            raise ValueError(f"DSRL's learned SSSR upsampling needs a power-of-2 scale >= 2, got "
                             f"{self.scale}; use sssr_upsampling='bilinear'")
        folded = bool(enclosing_setting(self, "fold_bn"))
        if folded and train:
            raise ValueError("DSRL's SSSR upsampling with its BatchNorms folded (fold_bn) is "
                             "for inference only; call it with train=False")
        # He initialisation with fan-in I: each output pixel sees one input pixel's I channels.
        init = nn.initializers.variance_scaling(2.0, "fan_in", "normal", in_axis=2, out_axis=3)
        for step in range(steps):
            kernel = self.param(f"deconv{step}", init, (2, 2, x.shape[-1], self.channels),
                                self.param_dtype)
            x = deconv2x2(x.astype(self.dtype), kernel.astype(self.dtype))
            if folded:
                bias = self.param(f"deconv{step}_bias", nn.initializers.zeros, (self.channels,),
                                  self.param_dtype)
                x = x + bias.astype(self.dtype)
            else:
                # PyTorch's BatchNorm2d defaults (momentum 0.1, i.e. flax's 0.9), as `ConvBN`.
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                 dtype=self.dtype, param_dtype=self.param_dtype,
                                 name=f"bn{step}")(x)
            x = nn.relu(x)
        return Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype,
                    name="classifier")(x)


class DSRL(nn.Module):
    """DSRL around a base decoder: `[N, H, W, 3] -> {'logits': [N, H, W, C], ...}`.

    Outputs (train mode adds all but 'logits'; eval mode returns only the base's eval
    outputs with 'logits' upsampled):
      'logits': SSSR, the base's logits on the x`scale`-downsampled image, upsampled to
        `[N, H, W, C]` by the learned module (`SSSRUpsample`) or, with
        `sssr_upsampling='bilinear'`, bilinearly (align corners, as Dootmaan/DSRL).
      the base's auxiliary outputs, unchanged (at the base's resolution, e.g. PSPNet's
        'aux'); the deep-supervision loss resizes the labels to each.
      'sisr': `[N, H, W, 3]` the reconstructed (normalised) input image.
      'ftm': `[N, H, W, 3]` FTM(logits), the SSSR side of the feature-affinity loss.

    Attributes:
      backbone: the shared encoder; must be the very instance the base decoder holds.
      base: the SSSR network, any lapseg decoder built on `backbone`.
      scale: input downsampling / output super-resolution factor (the paper's 2).
      sssr_upsampling: 'deconv' (the paper's learned module) or 'bilinear' (the ablation).
      sssr_channels: width of the learned module's deconvolutions.
      sisr_features, sisr_channels, espcn_channels: the SISR branch, see `SISR`.
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    backbone: nn.Module
    base: nn.Module
    scale: int = 2
    sssr_upsampling: str = "deconv"
    sssr_channels: int = 64
    sisr_features: Sequence[str] = ("res2", "res5")
    sisr_channels: int = 64
    espcn_channels: tuple[int, int] = (64, 32)
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        if getattr(self.base, "backbone", None) is not self.backbone:
            raise ValueError("DSRL: `base` must be a decoder whose `backbone` field is DSRL's "
                             "`backbone` instance (the shared encoder)")
        if self.scale < 1:
            raise ValueError(f"DSRL scale must be a positive int, got {self.scale}")
        if self.sssr_upsampling not in SSSR_UPSAMPLING:
            raise ValueError(f"DSRL sssr_upsampling must be one of {SSSR_UPSAMPLING}, got "
                             f"{self.sssr_upsampling!r}")
        super().__post_init__()

    def _run_base(self, images: jnp.ndarray, train: bool):
        """The base's outputs and the feature dict of its (single) backbone call."""
        selects = lambda c: c.module is self.backbone and c.method_name == "__call__"  # noqa: E731
        with tapped(selects) as calls:
            outputs = self.base(images, train=train)
        if len(calls) != 1:
            raise ValueError(f"DSRL needs a base that runs its backbone once; it ran {len(calls)} times")
        return dict(outputs), calls[0]

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict:
        """`images`: normalised `[N, H, W, 3]`; `train`: batch-stat BN, SISR and FTM."""
        normalize.check_images(images)
        if images.shape[-1] != 3:
            raise ValueError(f"DSRL expects RGB images [N, H, W, 3], got shape {images.shape}")
        height, width = images.shape[1:3]
        low = (math.ceil(height / self.scale), math.ceil(width / self.scale))
        # x2 bilinear without align corners: a 2x2 mean for even sizes (PyTorch
        # F.interpolate(scale_factor=0.5)), which reads every input pixel. The reference
        # (Dootmaan/DSRL) halves with F.interpolate(bilinear, align_corners=True), which
        # interpolates between pixels and reads only part of them (docs/recipes.md).
        low_images = resize.resize_bilinear(images, low, align_corners=False)
        outputs, features = self._run_base(low_images, train)
        if self.sssr_upsampling == "bilinear":
            logits = resize.resize_bilinear(outputs["logits"], (height, width), align_corners=True)
        else:
            base_logits = outputs["logits"]
            logits = SSSRUpsample(base_logits.shape[-1], self.scale, self.sssr_channels,
                                  dtype=self.dtype, param_dtype=self.param_dtype,
                                  name="sssr")(base_logits, train)
            logits = logits[:, :height, :width]  # odd sizes: ceil(H / s) * s >= H
        outputs["logits"] = logits
        if train or self.is_initializing():  # params exist after an eval-mode init too
            sisr = SISR(features=self.sisr_features, channels=self.sisr_channels,
                        espcn_channels=self.espcn_channels, upscale=self.scale,
                        dtype=self.dtype, param_dtype=self.param_dtype, name="sisr")
            outputs["sisr"] = sisr(features, low, train)[:, :height, :width]
            outputs["ftm"] = ConvBN(3, 1, use_bias=True, dtype=self.dtype,
                                    param_dtype=self.param_dtype, name="ftm")(logits, train)
        return outputs


def dsrl(*, base: nn.Module, dtype=jnp.float32, param_dtype=jnp.float32, **dsrl_fields) -> DSRL:
    """DSRL around `base`, an already built decoder whose `backbone` field is the shared encoder.

    `dsrl_fields` are DSRL's (scale, sssr_upsampling, sssr_channels, sisr_features,
    sisr_channels, espcn_channels). By name,
    `lapseg.models.create_model('dsrl', base='pspnet', backbone=..., backbone_kwargs=...,
    base_kwargs=..., num_classes=...)` builds the base with its own factory first (so its
    backbone defaults apply, e.g. PSPNet's deep stem at output stride 8) and passes it here:
    DSRL is a wrapper model of `lapseg.models`.
    """
    if isinstance(base, DSRL):
        raise ValueError("DSRL cannot wrap itself; pick a segmentation decoder as base")
    backbone = getattr(base, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"DSRL needs a base decoder with a `backbone` Module field (the shared "
                         f"encoder); got {type(base).__name__}")
    return DSRL(backbone=backbone, base=base, dtype=dtype, param_dtype=param_dtype, **dsrl_fields)
