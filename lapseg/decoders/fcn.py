"""FCN-32s, FCN-16s, FCN-8s (Long, Shelhamer & Darrell, "Fully Convolutional Networks for
Semantic Segmentation", CVPR 2015, Sec. 4.2 "Combining what and where", Fig. 3).

Class scores are predicted by a 1x1 conv ("score layer") on the coarsest feature, then
refined coarse to fine: upsample the scores x2 by a transposed convolution, add a score
layer's prediction from the next finer feature (the skip), and finally upsample to the
input by the feature's stride:

    FCN-32s: score(fc7) --x32--> logits
    FCN-16s: up2(score(fc7)) + score(pool4) --x16--> logits
    FCN-8s:  up2(up2(score(fc7)) + score(pool4)) + score(pool3) --x8--> logits

Follows wkentaro/pytorch-fcn `torchfcn/models/fcn{32,16,8}s.py` (a port of
fcn.berkeleyvision.org's `voc-fcn*/net.py`):

- score layers are zero-initialised 1x1 convs with bias (`_initialize_weights`);
- every upsampling is `ConvTranspose2d(C, C, 2f, stride=f, bias=False)` initialised to
  bilinear interpolation on the class diagonal (`get_upsampling_weight`, i.e. surgery.py
  `upsample_filt`; here `ops.basis.bilinear_deconv_weight`). The reference Caffe nets
  fix them (`lr_mult: 0`), so they are frozen constants by default, trainable by a flag;
- on VGG-16 with `pad100` (conv1_1 padded by 100 so that any input gives a non-empty
  fc7), outputs are aligned by pytorch-fcn's crop offsets: the skip scores are cropped
  at 5 (pool4) and 9 (pool3) to the upsampled size, the final upsampling at 19 (32s),
  27 (16s) or 31 (8s) to the input size;
- FCN-8s "at once" (`voc-fcn8s-atonce`, pytorch-fcn `FCN8sAtOnce`) trains all skips
  together and scales the skip features by 0.01 (pool4) and 0.0001 (pool3) before their
  score layers.

On any other backbone (no pad100) the decoder is crop-free: features of stride s have
`ceil(H / s)` rows, every upsampling is the half-pixel-centred one (crop `f // 2`, the
same geometry as `ops.basis.bilinear_upsample`), cut to the finer feature's size, and the
last one is cut to the input. ResNet uses 'res5' (32), 'res4' (16), 'res3' (8).

Deviation: the transposed convolution is computed as one einsum over each output pixel's
2 x 2 nearest input pixels (`transposed_conv`), not as `lax.conv_transpose`, which
convolves an input dilated with f - 1 zeros and was 40x slower for FCN-32s's x32 on CPU
(C = 21, 17x17 -> 576x576: 1.68 s against 0.042 s); the results agree to 1e-6.

Outputs: `{'logits': [N, H, W, num_classes]}`.
"""

import functools

import chex
import flax.linen as nn
import jax.numpy as jnp

from lapseg import backbones
from lapseg.layers import ConvBN
from lapseg.layers.frozen import frozen_or_trainable
from lapseg.ops import basis as basis_ops
from lapseg.ops import normalize

# Skip features, coarse to fine, per backbone family (the first that the backbone has).
SKIP_FEATURES = (("fc7", "pool4", "pool3"), ("res5", "res4", "res3"))
# pytorch-fcn's crop offsets on VGG-16 with pad100, by number of features used: the
# skip crops (score_pool4c at 5, score_pool3c at 9), then the final crop.
PAD100_OFFSETS = {1: (19,), 2: (5, 27), 3: (5, 9, 31)}
# FCN-8s at once: skip features scaled before their score layers (pool4, pool3).
AT_ONCE_SCALES = (0.01, 0.0001)


def transposed_conv(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """PyTorch `ConvTranspose2d(I, O, 2f, stride=f, padding=0, bias=False)`, NHWC, uncropped.

    `Y[n, f*q + m, f*r + l, o] = sum_{u,v in {0,1}} sum_i kernel[m + f*u, l + f*v, i, o]
    * X[n, q - u, r - v, i]` for `q in [0, H]`, `m in [0, f)` (X zero outside): a kernel
    twice its stride reaches each output pixel from exactly its 2 x 2 nearest inputs, so
    this is one einsum over those neighbours (as `ops.basis` does per class).

    Args:
      x: `[N, H, W, I]`.
      kernel: `[2f, 2f, I, O]`, i.e. PyTorch's weight `[I, O, 2f, 2f]` transposed (2, 3, 0, 1).

    Returns:
      `[N, (H + 1) f, (W + 1) f, O]`.
    """
    n, h, w, channels = x.shape
    stride = kernel.shape[0] // 2
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # Z[n, q, r, u, v, i] = x[n, q - u, r - v, i], q in [0, H], r in [0, W].
    shifts = jnp.stack(
        [padded[:, 1 - u : 2 - u + h, 1 - v : 2 - v + w] for u in (0, 1) for v in (0, 1)], axis=3
    ).reshape(n, h + 1, w + 1, 2, 2, channels)
    # Kernel row m + f*u -> (u, m), column l + f*v -> (v, l).
    tiles = kernel.reshape(2, stride, 2, stride, channels, kernel.shape[-1])
    y = jnp.einsum("nqruvi,umvlio->nqmrlo", shifts, tiles)
    return y.reshape(n, (h + 1) * stride, (w + 1) * stride, -1)


def _crop(x: jnp.ndarray, offset: int, size, what: str) -> jnp.ndarray:
    """`x[:, offset : offset + h, offset : offset + w]` for `size = (h, w)`, checked."""
    height, width = size
    if offset + height > x.shape[1] or offset + width > x.shape[2]:
        raise ValueError(
            f"FCN: cannot crop {what} of size {x.shape[1]}x{x.shape[2]} at offset {offset} to "
            f"{height}x{width}; the crop offsets do not fit this backbone's geometry"
        )
    return x[:, offset : offset + height, offset : offset + width]


class FCN(nn.Module):
    """FCN with skips: `[N, H, W, 3] -> {'logits': [N, H, W, num_classes]}`.

    Attributes:
      backbone: feature extractor returning a dict with `features` (see lapseg.backbones).
      num_classes: C.
      features: names of the features scored, coarse to fine (1: FCN-32s, 2: 16s, 3: 8s);
        strides must be integer multiples of each other.
      skip_scales: factors applied to the skip features (all but the first) before their
        score layers, e.g. `AT_ONCE_SCALES`; None for 1.
      crop_offsets: FCN's explicit crops for a pad100 backbone (`PAD100_OFFSETS[len(features)]`:
        one per skip, then the final one); None for the crop-free, centred geometry.
      trainable_upsampling: learn the transposed-conv kernels ('params') instead of
        keeping them bilinear ('constants').
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    backbone: nn.Module
    num_classes: int
    features: tuple[str, ...] = ("fc7", "pool4", "pool3")
    skip_scales: tuple[float, ...] | None = None
    crop_offsets: tuple[int, ...] | None = None
    trainable_upsampling: bool = False
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def _upsample(self, x: jnp.ndarray, factor: int, name: str) -> jnp.ndarray:
        """Transposed conv `C -> C`, kernel `2 factor`, stride `factor`, bilinear at init."""
        kernel = frozen_or_trainable(
            self, name, functools.partial(basis_ops.bilinear_deconv_weight, 2 * factor, self.num_classes),
            trainable=self.trainable_upsampling, dtype=self.param_dtype)
        return transposed_conv(x, kernel.astype(self.dtype))

    def _strides(self) -> list[int]:
        strides = backbones.feature_strides(self.backbone, self.features, "FCN")
        if any(coarse % fine or coarse < fine for coarse, fine in zip(strides, strides[1:])):
            raise ValueError(
                f"FCN: feature strides {strides} of {self.features} must divide each other, coarse to fine")
        if self.crop_offsets is not None and len(self.crop_offsets) != len(self.features):
            raise ValueError(
                f"FCN: crop_offsets {self.crop_offsets} needs one offset per feature {self.features}")
        if self.skip_scales is not None and len(self.skip_scales) != len(self.features) - 1:
            raise ValueError(
                f"FCN: skip_scales {self.skip_scales} needs one scale per skip {self.features[1:]}")
        return strides

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
        """`images`: `[N, H, W, 3]`; `train`: BN batch statistics and dropout (rng 'dropout')."""
        normalize.check_images(images)
        chex.assert_axis_dimension(images, 3, 3)
        strides = self._strides()
        features = self.backbone(images, train)
        score = functools.partial(
            ConvBN, self.num_classes, 1, use_bias=True, use_bn=False, activation=False,
            kernel_init=nn.initializers.zeros, dtype=self.dtype, param_dtype=self.param_dtype)
        offsets = self.crop_offsets
        scales = self.skip_scales or (1.0,) * (len(self.features) - 1)

        x = score(name=f"score_{self.features[0]}")(features[self.features[0]], train)
        for i, name in enumerate(self.features[1:]):
            skip = score(name=f"score_{name}")(features[name] * scales[i], train)
            factor = strides[i] // strides[i + 1]
            if factor > 1:
                x = self._upsample(x, factor, f"upscore_{self.features[i]}")
            if offsets is not None:  # FCN: the skip is cropped to the upsampled scores.
                skip = _crop(skip, offsets[i], x.shape[1:3], f"score_{name}")
            elif factor > 1:  # Centred: the upsampled scores are cut to the skip.
                x = _crop(x, factor // 2, skip.shape[1:3], f"upscore_{self.features[i]}")
            x = x + skip
        factor = strides[-1]
        if factor > 1:
            x = self._upsample(x, factor, f"upscore_{self.features[-1]}")
        offset = offsets[-1] if offsets is not None else factor // 2
        return {"logits": _crop(x, offset, images.shape[1:3], "the final scores")}


# The paper's backbone: VGG-16 with FCN's 100-pixel input padding.
_BACKBONE_DEFAULTS = {"vgg16": {"pad100": True}}


def _fcn(num_skips, *, num_classes, backbone="vgg16", backbone_kwargs=None, dtype=jnp.float32,
         param_dtype=jnp.float32, at_once=False, **decoder_fields) -> FCN:
    net = backbones.build(backbone, backbone_kwargs, _BACKBONE_DEFAULTS, dtype=dtype,
                          param_dtype=param_dtype)
    info = net.feature_info()
    family = next((names for names in SKIP_FEATURES if all(n in info for n in names)), None)
    if family is None and "features" not in decoder_fields:
        raise ValueError(
            f"FCN: backbone features {list(info)} include none of {SKIP_FEATURES}; pass features=")
    fields = {"features": family[: num_skips + 1] if family else None}
    if getattr(net, "pad100", False):
        fields["crop_offsets"] = PAD100_OFFSETS[num_skips + 1]
    if at_once:
        fields["skip_scales"] = AT_ONCE_SCALES
    fields.update(decoder_fields)
    return FCN(backbone=net, num_classes=num_classes, dtype=dtype, param_dtype=param_dtype, **fields)


def fcn32s(**kwargs) -> FCN:
    """FCN-32s: scores of the stride-32 feature upsampled x32. Keyword arguments: `num_classes`,
    `backbone` ('vgg16' default, with pad100), `backbone_kwargs`, `dtype`, `param_dtype`, FCN fields."""
    return _fcn(0, **kwargs)


def fcn16s(**kwargs) -> FCN:
    """FCN-16s: plus the stride-16 skip (pool4 / res4); arguments as `fcn32s`."""
    return _fcn(1, **kwargs)


def fcn8s(**kwargs) -> FCN:
    """FCN-8s: plus the stride-8 skip (pool3 / res3); arguments as `fcn32s`."""
    return _fcn(2, **kwargs)


def fcn8s_atonce(**kwargs) -> FCN:
    """FCN-8s trained at once: skips scaled by 0.01 (pool4) and 0.0001 (pool3); as `fcn32s`."""
    return _fcn(2, at_once=True, **kwargs)
