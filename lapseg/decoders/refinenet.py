"""RefineNet (Lin et al., "RefineNet: Multi-Path Refinement Networks", CVPR 2017, Sec. 3).

4-cascaded RefineNet on res5..res2, following DrSleep/refinenet-pytorch `models/resnet.py`
(a port of the released MatConvNet models, guosheng/refinenet `main/gen_network_*.m`):

    for each level (res5, res4, res3, res2), deepest first, adapt widths (`channels`) 512/256/256/256:
      path  = RCU x 2 (conv3x3 adapt (backbone channels -> width, no bias) (feature))
      x     = MRF([path, x])          # 3x3 convs to the smaller width, upsample, sum
      x     = RCU x 3 (CRP(x))        # CRP starts with a ReLU
    scores  = conv3x3 classes (dropout(x))                  at 1/4 -> 'coarse_logits'
    logits  = align-corners bilinear upsampling to the input size  -> 'logits'

The first block has a single input, so no MRF. Dropout (p=0.5, element-wise, as the port's
`nn.Dropout`) is applied to the two deepest backbone features (res5, res4) and before the
classifier. The blocks (RCU, MRF, CRP) are `lapseg.layers.refine`.

Input scale: the released training code enlarges the image by 1.2 before the ResNet
(guosheng/refinenet `main/gen_net_opts_model_type1.m` `do_config_refinenet`:
`gen_featnet_config_resnet_custom(train_opts, resnet_layer_num, 1.2, 4, 1)`; the resize is
`imresize(img, round(size * 1.2))` in `main/my_get_batch_ds_info.m` `gen_net_input_info`,
in training and at test time). `input_scale` does that inside the model: the normalised
image is resized to `round(H * s) x round(W * s)` (MATLAB's round, half away from zero),
'coarse_logits' come out at a quarter of that and 'logits' are resized back to `H x W`.
Deviation: the resize is bilinear with half-pixel centres (PyTorch `align_corners=False`),
not MATLAB's default bicubic, because lapseg's resize ops are bilinear and the enlargement
is mild (x1.2); it runs after normalisation rather than on uint8 pixels (a linear resize
commutes with the per-channel affine normalisation, up to the uint8 rounding the reference
has). The default 1.0 is the paper's description (no enlargement); the configs use 1.2.

BatchNorm statistics: the released training code never uses batch statistics. It sets
`train_opts.bnorm_moment_type_trn='global'` (`main/gen_net_opts_model_type1.m`), with which
`main/my_matconvnet_resnet/+dagnn/BatchNorm.m` normalises by the stored moments in training
too (`vl_nnbnorm(inputs{1}, params{1}, params{2}, 'moments', params{3}, ...)`, forward and
backward), and `main/My_net_util.m` `fix_batch_norm_resnet` sets the moments'
`trainMethod='fixed'`, which no branch of the update in
`main/cnn_layer_dagnn_wrapper_backward.m` handles ('average', 'gradient'), so they are never
changed. The BN scales and offsets keep `addParam`'s `trainMethod` 'gradient'
(`main/my_matconvnet_resnet/@DagNN/DagNN.m`), so they train (their learning rate and
decay come from the pretrained .mat, which is not in the repository: not verified).
`bn_statistics='global'` does that here: the backbone runs with `train=False` (BN from the
running mean/variance, which stay as loaded, ImageNet's) while its parameters get
gradients as usual; the decoder has no BN. A backbone with dropout (VGG-16) would have it
off too. The default 'batch' is the common PyTorch practice (batch statistics in
training, running averages updated); `recipes.REFINENET101` sets 'global'.

Loss: the original code scores the 1/4-resolution map against labels resized by nearest
(`cnn_layer_dense_softmaxloss_forward.m`), i.e. `loss.weights = {'coarse_logits': 1.0}`
with this library's deep supervision; weighting `'logits'` instead trains at full
resolution (the common PyTorch practice).

Outputs: `'logits'` `[N, H, W, C]`; `'coarse_logits'` `[N, h, w, C]` at the finest used
feature's resolution (`ceil(round(s H) / 4)` for res2 at input scale s).
"""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from lapseg import backbones
from lapseg.layers.refine import (ChainedResidualPooling, MultiResolutionFusion,
                                  ResidualConvUnit, conv3x3)
from lapseg.ops import normalize, resize


# BatchNorm in training: batch statistics, or the stored (global) ones, frozen.
BN_STATISTICS = ("batch", "global")


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """`round(size * scale)` with MATLAB's rounding (half away from zero), as the reference's
    `round(org_img_size .* one_scale)`."""
    return tuple(max(1, math.floor(s * scale + 0.5)) for s in size)


class RefineBlock(nn.Module):
    """One RefineNet block: `[path (adapted), previous output or None] -> refined map`.

    `[N, h, w, C_path]` (+ `[N, h', w', C_prev]`, `h' <= h`) -> `[N, h, w, min(C_path, C_prev)]`.
    """

    adapt_rcus: int = 2
    output_rcus: int = 3
    crp_stages: int = 4
    crp_order: str = "pool_conv"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, path: jnp.ndarray, previous: jnp.ndarray | None) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for i in range(self.adapt_rcus):
            path = ResidualConvUnit(name=f"adapt_rcu{i}", **kw)(path)
        inputs = [path] if previous is None else [path, previous]
        x = MultiResolutionFusion(name="mrf", **kw)(inputs)
        x = ChainedResidualPooling(self.crp_stages, self.crp_order, name="crp", **kw)(x)
        for i in range(self.output_rcus):
            x = ResidualConvUnit(name=f"output_rcu{i}", **kw)(x)
        return x


class RefineNet(nn.Module):
    """RefineNet: images `[N, H, W, 3]` -> `{'logits' [N, H, W, C], 'coarse_logits' [N, h, w, C]}`.

    Attributes:
      backbone: feature extractor returning a dict with every name in `features`.
      num_classes: C.
      features: backbone features, deepest first (one RefineNet block each).
      channels: adapt conv width per feature (512, 256, 256, 256).
      adapt_rcus: RCUs on each backbone path (2).
      output_rcus: RCUs after each CRP (3 in the released models; the paper's figure draws 1).
      crp_stages: chained pooling stages (4 in the released models; the figure draws 2).
      crp_order: 'pool_conv' (paper, port) or 'conv_pool' (original code's improved version).
      dropout_rate: dropout on the two deepest features and before the classifier (0.5).
      input_scale: the image is resized by this factor before the backbone (reference: 1.2).
      bn_statistics: BatchNorm in training, 'batch' (batch statistics, running averages
        updated) or 'global' (the running statistics, frozen; the reference's
        `bnorm_moment_type_trn='global'`, see the module docstring).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    backbone: nn.Module
    num_classes: int
    features: Sequence[str] = ("res5", "res4", "res3", "res2")
    channels: Sequence[int] = (512, 256, 256, 256)
    adapt_rcus: int = 2
    output_rcus: int = 3
    crp_stages: int = 4
    crp_order: str = "pool_conv"
    dropout_rate: float = 0.5
    input_scale: float = 1.0
    bn_statistics: str = "batch"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        if len(self.features) != len(self.channels) or not self.features:
            raise ValueError(f"RefineNet needs one width per feature, got features {self.features} "
                             f"and channels {self.channels}")
        if not self.input_scale > 0:
            raise ValueError(f"RefineNet input_scale must be positive, got {self.input_scale}")
        if self.bn_statistics not in BN_STATISTICS:
            raise ValueError(f"RefineNet bn_statistics must be one of {BN_STATISTICS}, got "
                             f"{self.bn_statistics!r}")
        super().__post_init__()

    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict:
        """`images`: `[N, H, W, 3]` normalised; `train`: dropout (rng 'dropout') and, with
        `bn_statistics='batch'`, batch-stat BN (mutable 'batch_stats')."""
        normalize.check_images(images)
        size = images.shape[1:3]
        scaled = scaled_size(size, self.input_scale)
        if scaled != tuple(size):
            images = resize.resize_bilinear(images, scaled, align_corners=False)
        # 'global': BN on the stored moments in training too (guosheng/refinenet
        # `bnorm_moment_type_trn='global'`); gradients still reach the BN scales/offsets.
        backbone_train = train and self.bn_statistics == "batch"
        return self.decode(self.backbone(images, backbone_train), size, train)

    @nn.compact
    def decode(self, features: dict, size: tuple[int, int], train: bool = False) -> dict:
        """The 4-cascade on backbone `features` (a dict by name); 'logits' resized to `size`."""
        backbones.require_features(features, self.features, "RefineNet")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
        x = None
        for level, (name, width) in enumerate(zip(self.features, self.channels)):
            feature = dropout(features[name]) if level < 2 else features[name]
            path = conv3x3(width, use_bias=False, name=f"adapt{level}", **kw)(feature)
            x = RefineBlock(self.adapt_rcus, self.output_rcus, self.crp_stages, self.crp_order,
                            name=f"refine{level}", **kw)(path, x)
        scores = conv3x3(self.num_classes, use_bias=True, name="classifier", **kw)(dropout(x))
        logits = resize.resize_bilinear(scores, size, align_corners=True)
        return {"logits": logits, "coarse_logits": scores}


def refinenet(*, num_classes: int, backbone="resnet101", backbone_kwargs: dict | None = None,
              dtype=jnp.float32, param_dtype=jnp.float32, **decoder_fields) -> RefineNet:
    """RefineNet on `backbone` (a name or a Module, see `lapseg.backbones.build`).

    The backbone keeps its defaults (a standard ResNet at output stride 32, as in the
    paper); `decoder_fields` are `RefineNet` fields.
    """
    net = backbones.build(backbone, backbone_kwargs, dtype=dtype, param_dtype=param_dtype)
    return RefineNet(backbone=net, num_classes=num_classes, dtype=dtype,
                     param_dtype=param_dtype, **decoder_fields)
