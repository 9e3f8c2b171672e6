"""PSPNet (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017, Sec. 3.2-3.3).

Follows hszhao/semseg `model/pspnet.py`:

    res5 (OS 8) -> PPM: [x, up(relu(bn(conv1x1(adaptive_pool_b(x))))) for b in 1,2,3,6]
                -> conv3x3 512 + BN + ReLU -> Dropout2d 0.1 -> conv1x1 classes -> 'logits'
    res4        -> conv3x3 256 + BN + ReLU -> Dropout2d 0.1 -> conv1x1 classes -> 'aux'

Both score maps are upsampled to the input size by align-corners bilinear interpolation
(semseg's `F.interpolate(..., align_corners=True)`); the auxiliary loss weight is 0.4
(config `loss.weights`). The backbone is semseg's deep-stem dilated ResNet at output
stride 8 (`lapseg.backbones` `deep_stem=True, output_stride=8`), the factory's default.

Deviations: the pyramid pools with PyTorch's adaptive bins (`pooling='adaptive'`, the
PyTorch port) rather than the Caffe release's fixed kernels; semseg only builds the
auxiliary head in training, here it is always built (its parameters must exist at
`init`, which runs in eval mode) and jit drops it from programs that ignore 'aux'.

Outputs: `'logits'` `[N, H, W, C]`, `'aux'` `[N, H, W, C]` (when `features` names an
auxiliary feature).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from lapseg import backbones
from lapseg.layers.conv import Conv, ConvBN
from lapseg.layers.ppm import PyramidPooling
from lapseg.ops import normalize, resize

# semseg's backbone: the deep-stem dilated ResNet at output stride 8, for every ResNet depth.
_BACKBONE_DEFAULTS = {name: {"deep_stem": True, "output_stride": 8}
                     for name in backbones.names() if name.startswith("resnet")}


class PSPNet(nn.Module):
    """PSPNet: images `[N, H, W, 3]` -> `{'logits', 'aux'}`, each `[N, H, W, num_classes]`.

    Attributes:
      backbone: feature extractor returning a dict with every name in `features`.
      num_classes: C.
      features: backbone features, deepest first: the input of the pyramid pooling module
        ('res5'), then that of the auxiliary FCN head ('res4'); a 1-tuple for no auxiliary head.
      bins: pyramid bins.
      pooling: 'adaptive' (PyTorch) or 'fixed' (Caffe kernels, with `pool_kernels`/`pool_strides`).
      pool_kernels, pool_strides: per-bin Caffe pooling kernels/strides for `pooling='fixed'`.
      channels: width of the 3x3 conv after the pyramid (512).
      aux_channels: width of the auxiliary 3x3 conv (256).
      dropout_rate: channel dropout before each classifier (0.1).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    backbone: nn.Module
    num_classes: int
    features: Sequence[str] = ("res5", "res4")
    bins: Sequence[int] = (1, 2, 3, 6)
    pooling: str = "adaptive"
    pool_kernels: Sequence | None = None
    pool_strides: Sequence | None = None
    channels: int = 512
    aux_channels: int = 256
    dropout_rate: float = 0.1
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        if isinstance(self.features, str) or len(self.features) not in (1, 2):
            raise ValueError("PSPNet features must be (pyramid feature,) or (pyramid feature, "
                             f"auxiliary feature), e.g. ('res5', 'res4'); got {self.features!r}")
        super().__post_init__()

    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict:
        """`images`: `[N, H, W, 3]` normalised; `train`: batch-stat BN, dropout (rng 'dropout')."""
        normalize.check_images(images)
        return self.decode(self.backbone(images, train), images.shape[1:3], train)

    def _classifier(self, x, channels, train, name):
        """conv3x3 + BN + ReLU -> Dropout2d -> conv1x1 (semseg's `cls` / `aux` Sequential)."""
        x = ConvBN(channels, 3, dtype=self.dtype, param_dtype=self.param_dtype,
                   name=f"{name}_conv")(x, train)
        x = nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2), deterministic=not train)(x)
        return Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype,
                    name=f"{name}_classifier")(x)

    @nn.compact
    def decode(self, features: dict, size: tuple[int, int], train: bool = False) -> dict:
        """The head on backbone `features` (a dict by name), scores resized to `size` `(H, W)`."""
        backbones.require_features(features, self.features, "PSPNet")
        x = PyramidPooling(self.bins, pooling=self.pooling, kernels=self.pool_kernels,
                           strides=self.pool_strides, dtype=self.dtype,
                           param_dtype=self.param_dtype, name="ppm")(features[self.features[0]], train)
        scores = self._classifier(x, self.channels, train, "head")
        outputs = {"logits": resize.resize_bilinear(scores, size, align_corners=True)}
        if len(self.features) > 1:
            aux = self._classifier(features[self.features[1]], self.aux_channels, train, "aux")
            outputs["aux"] = resize.resize_bilinear(aux, size, align_corners=True)
        return outputs


def pspnet(*, num_classes: int, backbone="resnet50", backbone_kwargs: dict | None = None,
           dtype=jnp.float32, param_dtype=jnp.float32, **decoder_fields) -> PSPNet:
    """PSPNet on `backbone` (a name or a Module, see `lapseg.backbones.build`).

    A ResNet name gets semseg's defaults, `deep_stem=True, output_stride=8`, unless
    `backbone_kwargs` says otherwise; `decoder_fields` are `PSPNet` fields.
    """
    net = backbones.build(backbone, backbone_kwargs, _BACKBONE_DEFAULTS, dtype=dtype,
                          param_dtype=param_dtype)
    return PSPNet(backbone=net, num_classes=num_classes, dtype=dtype, param_dtype=param_dtype,
                  **decoder_fields)
