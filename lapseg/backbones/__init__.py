"""Backbones by name: `create('resnet50', output_stride=8)` -> linen Module.

Every backbone is called as `backbone(images, train)` on normalised images
`[N, H, W, 3]` (see `normalize`) and returns a dict of named features, e.g.
`{'stem', 'res2', 'res3', 'res4', 'res5'}` for ResNet; `backbone.feature_info()`
gives each feature's stride and channels without running it, so decoders pick
what they need by name. PyTorch weights: `read_state_dict` + `load_torch_weights`.
Your own backbone (any Module keeping this contract, or `from_callable(fn, feature_info)`)
and decoders on precomputed features (`decoder_only`): `lapseg.backbones.custom`,
docs/backbones.md.
"""

import dataclasses
import functools

import flax.linen as nn

from lapseg.backbones import custom
from lapseg.backbones.custom import FromCallable, decoder_only, from_callable
from lapseg.backbones.feature_info import FeatureInfo, feature_strides, require_features
from lapseg.backbones.resnet import ResNet
from lapseg.backbones.vgg import VGG16
from lapseg.backbones.weights import load_torch_weights, read_state_dict
from lapseg.ops.normalize import normalize

_BACKBONES = {
    "resnet18": functools.partial(ResNet, depth=18),
    "resnet34": functools.partial(ResNet, depth=34),
    "resnet50": functools.partial(ResNet, depth=50),
    "resnet101": functools.partial(ResNet, depth=101),
    "resnet152": functools.partial(ResNet, depth=152),
    "vgg16": VGG16,
}


def names() -> list[str]:
    """The registered backbone names."""
    return sorted(_BACKBONES)


def create(name: str, **kwargs):
    """Builds backbone `name` ('resnet18' ... 'resnet152', 'vgg16') with its fields.

    ResNet fields: deep_stem, output_stride, multi_grid, dilation_mode, width, dtype,
    param_dtype. VGG-16 fields: pad100, dropout_rate, width, dtype, param_dtype.
    """
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; registered: {', '.join(names())}")
    factory = _BACKBONES[name]
    cls = getattr(factory, "func", factory)
    fixed = getattr(factory, "keywords", {})
    accepted = {f.name for f in dataclasses.fields(cls) if f.init} - {"parent", "name"} - set(fixed)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(
            f"backbone {name!r} has no field(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )
    return factory(**kwargs)


def build(backbone, backbone_kwargs: dict | None = None, defaults: dict | None = None, *,
          dtype=None, param_dtype=None) -> nn.Module:
    """The backbone of a decoder factory: a name or an already built Module.

    Every decoder factory calls this, so `backbone=` / `backbone_kwargs=` mean the same for
    every model.

    Args:
      backbone: a registered name ('resnet50', 'vgg16', ...) or a linen Module keeping the
        backbone contract (`lapseg.backbones.custom`, docs/backbones.md: a dict of named
        features, `feature_info()`); one that breaks it is a one-line ValueError.
      backbone_kwargs: fields for `create` (only with a name).
      defaults: the decoder's per-name defaults, e.g. `{'vgg16': {'pad100': True}}` or
        `{'resnet50': {'output_stride': 32}}`, updated by `backbone_kwargs`.
      dtype, param_dtype: compute and parameter dtypes (None: the backbone's defaults).

    Returns:
      The backbone Module.
    """
    if isinstance(backbone, nn.Module):
        if backbone_kwargs:
            raise ValueError("backbone_kwargs apply to a backbone given by name, not to a Module")
        return custom.checked(backbone)  # the contract (docs/backbones.md), one-line errors
    kwargs = {**(defaults or {}).get(backbone, {}), **(backbone_kwargs or {})}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if param_dtype is not None:
        kwargs["param_dtype"] = param_dtype
    return create(backbone, **kwargs)


__all__ = [
    "FeatureInfo",
    "FromCallable",
    "ResNet",
    "VGG16",
    "build",
    "create",
    "decoder_only",
    "feature_strides",
    "from_callable",
    "load_torch_weights",
    "names",
    "normalize",
    "read_state_dict",
    "require_features",
]
