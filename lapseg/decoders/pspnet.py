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

Outputs: `'logits'` `[N, H, W, C]`, `'aux'` `[N, H, W, C]` (when `aux_feature` is set).
"""

from collections.abc import Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp

from lapseg import backbones
from lapseg.layers.conv import ConvBN
from lapseg.layers.ppm import PyramidPooling
from lapseg.ops import resize


class PSPNet(nn.Module):
    """PSPNet: images `[N, H, W, 3]` -> `{'logits', 'aux'}`, each `[N, H, W, num_classes]`.

    Attributes:
      backbone: feature extractor returning a dict with `feature` (and `aux_feature`).
      num_classes: C.
      feature: input of the pyramid pooling module ('res5').
      aux_feature: input of the auxiliary FCN head ('res4'); None for no auxiliary head.
      bins: pyramid bins.
      pooling: 'adaptive' (PyTorch) or 'fixed' (Caffe kernels, with `pool_kernels`/`pool_strides`).
      pool_kernels, pool_strides: per-bin Caffe pooling kernels/strides for `pooling='fixed'`.
      head_features: width of the 3x3 conv after the pyramid (512).
      aux_features: width of the auxiliary 3x3 conv (256).
      dropout_rate: channel dropout before each classifier (0.1).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    backbone: nn.Module
    num_classes: int
    feature: str = "res5"
    aux_feature: str | None = "res4"
    bins: Sequence[int] = (1, 2, 3, 6)
    pooling: str = "adaptive"
    pool_kernels: Sequence | None = None
    pool_strides: Sequence | None = None
    head_features: int = 512
    aux_features: int = 256
    dropout_rate: float = 0.1
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict:
        """`images`: `[N, H, W, 3]` normalised; `train`: batch-stat BN, dropout (rng 'dropout')."""
        chex.assert_rank(images, 4)
        return self.decode(self.backbone(images, train), images.shape[1:3], train)

    def _classifier(self, x, features, train, name):
        """conv3x3 + BN + ReLU -> Dropout2d -> conv1x1 (semseg's `cls` / `aux` Sequential)."""
        x = ConvBN(features, 3, dtype=self.dtype, param_dtype=self.param_dtype,
                   name=f"{name}_conv")(x, train)
        x = nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2), deterministic=not train)(x)
        return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype,
                       name=f"{name}_classifier")(x)

    @nn.compact
    def decode(self, features: dict, size: tuple[int, int], train: bool = False) -> dict:
        """The head on backbone `features` (a dict by name), scores resized to `size` `(H, W)`."""
        needed = [self.feature] + ([self.aux_feature] if self.aux_feature else [])
        missing = [name for name in needed if name not in features]
        if missing:
            raise ValueError(f"PSPNet needs backbone features {missing}; "
                             f"the backbone gives {sorted(features)}")
        x = PyramidPooling(self.bins, pooling=self.pooling, kernels=self.pool_kernels,
                           strides=self.pool_strides, dtype=self.dtype,
                           param_dtype=self.param_dtype, name="ppm")(features[self.feature], train)
        scores = self._classifier(x, self.head_features, train, "head")
        outputs = {"logits": resize.resize_bilinear(scores, size, align_corners=True)}
        if self.aux_feature:
            aux = self._classifier(features[self.aux_feature], self.aux_features, train, "aux")
            outputs["aux"] = resize.resize_bilinear(aux, size, align_corners=True)
        return outputs


def pspnet(*, num_classes: int, backbone="resnet50", backbone_kwargs: dict | None = None,
           dtype=jnp.float32, param_dtype=jnp.float32, **decoder_fields) -> PSPNet:
    """PSPNet on `backbone` (a name for `lapseg.backbones.create` or a Module).

    A ResNet gets semseg's defaults, `deep_stem=True, output_stride=8`, unless
    `backbone_kwargs` says otherwise; `decoder_fields` are `PSPNet` fields.
    """
    if isinstance(backbone, str):
        defaults = {"deep_stem": True, "output_stride": 8} if backbone.startswith("resnet") else {}
        backbone = backbones.create(backbone, dtype=dtype, param_dtype=param_dtype,
                                    **{**defaults, **(backbone_kwargs or {})})
    return PSPNet(backbone=backbone, num_classes=num_classes, dtype=dtype, param_dtype=param_dtype,
                  **decoder_fields)
