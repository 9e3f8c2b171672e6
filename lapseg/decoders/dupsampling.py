"""DUpsampling (Tian et al., "Decoders Matter for Semantic Segmentation", CVPR 2019, Sec. 3).

Fusion happens at the *lowest* resolution, so the decoder's convolutions run at the
backbone's output stride r (16 or 32), and the data-dependent upsampling recovers the
full resolution in one linear step:

    low_j   = relu(bn(conv1x1 48 (bilinear-down(feature_j, size of res5))))  (low_level_features)
    x       = [res5, low_1, low_2, ...]                      (concatenated)
    x       = dropout p1 (conv3x3 256 + BN + ReLU (x))        (p1 = 0.5 in the reference)
    x       = dropout p2 (conv3x3 256 + BN + ReLU (x))        (p2 = 0.1 in the reference)
    F       = conv1x1 L (x)                                  [N, H/r, W/r, L]
    scores  = DUpsample(F; W) + mean                          [N, H, W, C]   (ops.dupsample)
    logits  = scores / T                                      (adaptive-temperature softmax)

The fusion head follows Tramac/awesome-semantic-segmentation-pytorch `core/models/dunet.py`
(`FeatureFused` + `_DUHead`: align-corners bilinear resizing, then per-feature 1x1 conv
48 + BN + ReLU, concatenation `[deep, low...]`, two 3x3 convs 256 + BN + ReLU), with the
1x1 projection to L channels of haochange/DUpsampling `models/dunet.py` (`conv4`, with
bias) in front of W. W is fitted to the labels before training; `trainable_w=False` (the
default) then freezes it, the paper's description, while `trainable_w=True` makes it a
parameter that keeps training, as the released code does: LinZhuoChen/DUpsampling
`train.py` runs `model.pre_compute_W(i, data)` for 5 epochs ("Precompute weight for 5
epoches") and then trains with `models/dunet_sybn.py`'s optimiser over
`filter(lambda p: p.requires_grad, self.model.parameters())`, which holds
`decoder.dupsample.conv_w` (W); `freeze_w` (`param.requires_grad = False`) is defined but
never called. W and the patch mean are the variables `dupsampling_w` `[L, r*r*C]` and
`dupsampling_mean` `[r*r*C]`; the module never reads a file: they start as an orthonormal
block-DCT code (`ops.dupsample.cosine_matrix`) and zero, and the PCA fitted to the labels
(`lapseg.bases.dupsampling_matrix`) enters through `lapseg.bases.attach`, as training does
before step 0 (the reference fits W by SGD on the reconstruction loss of `conv_w(conv_p(.))`
instead of a PCA).

Dropout (`dropout_rates`, default `(0, 0)`, off): the reference's `Decoder` has
`self.dropout2 = nn.Dropout(0.5)` after `conv2` + `bn2` + ReLU and `self.dropout3 =
nn.Dropout(0.1)` after `conv3` + `bn3` + ReLU, before `conv4` (the projection to L)
(haochange/DUpsampling `models/dunet.py` and LinZhuoChen/DUpsampling
`models/dunet_sybn.py`); element-wise, in training only, rng 'dropout'.
`recipes.DUPSAMPLING_REFERENCE` holds `(0.5, 0.1)` and `trainable_w=True`.

Fused features: `features` defaults to ('res5', 'stem', 'res4'): the deepest map plus the
stem's output (stride 2, the reference's `conv1_3`) and the last block of res4 (stride 16,
`conv4_6` of ResNet-50), the low-level pair of the PyTorch re-implementations written from
the paper, haochange/DUpsampling and LinZhuoChen/DUpsampling `models/dunet.py`
(`ResNet.forward`: `x_13` after conv1 + BN + ReLU, `x_46` after `layer3`, `x_13` resized to
`x_46`'s size, `x_low = torch.cat((x_13, x_46))`); the paper's point is that with
DUpsampling the fused features' resolution no longer sets the output's, so even a stride-2
feature is fused at the lowest resolution. lapseg formerly fused res2 + res3, a choice with
no source; Tramac's port fuses res3 + res4 (`c2`, `c3`) and notes that the paper leaves
details out.
Deviation kept from Tramac's layout: each low-level feature has its own 1x1 conv to 48
(+ BN + ReLU) after resizing, where haochange reduces the concatenation `x_low` with one
1x1 conv (1152 -> 48); per-feature reductions take any list of features and keep each
feature's BatchNorm statistics separate.

Mean: the PCA is centred, and the best rank-L affine reconstruction of a label patch x
is `W^T W (x - mean) + mean`; `add_mean=True` (default) adds `mean` back after
`depth_to_space` as a fixed bias (the tiled r x r x C patch mean), so the network only
has to predict the centred code. `add_mean=False` follows the paper's objective, which
has no mean (W from the file is then used alone).

Temperature: `logits = scores / T` with `T = exp(log_temperature)`, a learned scalar
initialised to 0 (T = 1). The exponential keeps T positive without clipping; the
scalar has no weight decay with `optimizer.weight_decay_mask='kernels'` (the default);
with 'all' it is decayed towards T = 1, where the reference (LinZhuoChen/DUpsampling
`models/dunet_sybn.py`, `self.T = torch.nn.Parameter(torch.Tensor([1.00]))` in an SGD with
`weight_decay`) decays T towards 0. 'logits' are therefore the tempered scores that the
softmax cross-entropy sees.

Input sizes that are not multiples of r give features of `ceil(H / r)`; the upsampled
map is cropped at the bottom/right to `H x W`.

Outputs: `'logits'` `[N, H, W, C]`.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from lapseg import backbones
from lapseg.layers.conv import Conv, ConvBN
from lapseg.layers.frozen import frozen_or_trainable
from lapseg.ops import dupsample, normalize, resize


class DUpsampling(nn.Module):
    """DUpsampling decoder: images `[N, H, W, 3]` -> `{'logits': [N, H, W, num_classes]}`.

    Attributes:
      backbone: feature extractor returning every entry of `features`.
      num_classes: C.
      ratio: r, the upsampling factor; must equal the stride of `feature`.
      dim: L, channels of the code F (rows of W).
      trainable_w: train W instead of freezing it.
      add_mean: add the PCA patch mean back as a fixed bias (see the module docstring).
      features: backbone features, the deepest first: it is fused at its own resolution
        (stride r); the others are resized down to it and fused ('res5', 'stem', 'res4').
      reduce_channels: width of each low-level 1x1 reduction (48).
      channels: width of the two 3x3 convs (256).
      dropout_rates: element-wise dropout after each 3x3 conv in training (reference:
        (0.5, 0.1); default off).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    backbone: nn.Module
    num_classes: int
    ratio: int = 16
    dim: int = 256
    trainable_w: bool = False
    add_mean: bool = True
    features: Sequence[str] = ("res5", "stem", "res4")
    reduce_channels: int = 48
    channels: int = 256
    dropout_rates: Sequence[float] = (0.0, 0.0)
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        rates = tuple(self.dropout_rates)
        if len(rates) != 2 or not all(isinstance(r, (int, float)) and 0 <= r < 1 for r in rates):
            raise ValueError(f"DUpsampling dropout_rates must be two rates in [0, 1) (after each "
                             f"3x3 conv), got {self.dropout_rates!r}")
        super().__post_init__()

    def _check_backbone(self) -> None:
        info = self.backbone.feature_info()
        backbones.require_features(info, self.features, "DUpsampling")
        if info[self.features[0]].stride != self.ratio:
            raise ValueError(f"DUpsampling ratio={self.ratio} must equal the output stride of "
                             f"{self.features[0]!r}, which is {info[self.features[0]].stride}; set the "
                             f"backbone's output_stride or the ratio")

    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict:
        """`images`: `[N, H, W, 3]` normalised; `train`: batch-stat BN (mutable 'batch_stats')
        and dropout (rng 'dropout', when `dropout_rates` are not 0)."""
        normalize.check_images(images)
        self._check_backbone()
        return self.decode(self.backbone(images, train), images.shape[1:3], train)

    @nn.compact
    def decode(self, features: dict, size: tuple[int, int], train: bool = False) -> dict:
        """Fusion at the lowest resolution + DUpsample on backbone `features`; logits at `size`."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        deep = features[self.features[0]]
        low_size = deep.shape[1:3]
        fused = [deep] + [
            ConvBN(self.reduce_channels, 1, name=f"reduce{j}", **kw)(
                resize.resize_bilinear(features[name], low_size, align_corners=True), train)
            for j, name in enumerate(self.features[1:])]
        x = jnp.concatenate(fused, axis=-1)
        # Dropout 0.5 / 0.1 after each conv + BN + ReLU in the reference (`dropout2`,
        # `dropout3` of haochange/DUpsampling `models/dunet.py` `Decoder`).
        for i, rate in enumerate(self.dropout_rates, start=1):
            x = ConvBN(self.channels, 3, name=f"fuse{i}", **kw)(x, train)
            x = nn.Dropout(rate, deterministic=not train, name=f"dropout{i}")(x)
        code = Conv(self.dim, (1, 1), name="project", **kw)(x)  # F, [N, h, w, L]

        depth = self.ratio * self.ratio * self.num_classes
        w = frozen_or_trainable(
            self, "dupsampling_w", lambda: dupsample.cosine_matrix(self.ratio, self.num_classes, self.dim),
            trainable=self.trainable_w, dtype=self.param_dtype)
        scores = dupsample.dupsample(code, w.astype(self.dtype), self.ratio)
        if self.add_mean:
            mean = frozen_or_trainable(self, "dupsampling_mean", lambda: jnp.zeros((depth,)),
                                       trainable=False, dtype=self.param_dtype)
            # depth_to_space of the broadcast mean: the r x r x C patch mean tiled over the map.
            tile = mean.reshape(self.ratio, self.ratio, self.num_classes).astype(scores.dtype)
            scores = scores + jnp.tile(tile, (low_size[0], low_size[1], 1))
        scores = scores[:, : size[0], : size[1]]
        log_temperature = self.param("log_temperature", nn.initializers.zeros, (), self.param_dtype)
        return {"logits": scores / jnp.exp(log_temperature).astype(scores.dtype)}


def dupsampling(*, num_classes: int, backbone="resnet50", backbone_kwargs: dict | None = None,
                dtype=jnp.float32, param_dtype=jnp.float32, **decoder_fields) -> DUpsampling:
    """DUpsampling on `backbone` (a name for `lapseg.backbones.create` or a Module).

    A named ResNet's `output_stride` defaults to the decoder's `ratio` (16 unless given);
    `decoder_fields` are `DUpsampling` fields (`ratio`, `dim`, `features`, ...).
    """
    ratio = decoder_fields.get("ratio", DUpsampling.ratio)
    defaults = {f"resnet{depth}": {"output_stride": ratio} for depth in (18, 34, 50, 101, 152)}
    backbone = backbones.build(backbone, backbone_kwargs, defaults, dtype=dtype,
                               param_dtype=param_dtype)
    return DUpsampling(backbone=backbone, num_classes=num_classes, dtype=dtype,
                       param_dtype=param_dtype, **decoder_fields)
