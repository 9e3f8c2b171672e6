"""Model registry: `create_model(name, backbone=..., num_classes=...)` -> linen Module.

Every model maps images `[N, H, W, 3]` (f32, normalised) to a dict whose `'logits'`
are `[N, H, W, num_classes]` at input resolution; auxiliary outputs (pyramid levels,
auxiliary heads, DFN's border maps, the SISR image) sit beside it under keys each decoder documents.

Each registered model has one description, a `Model` (as scenic's `SegmentationModel`):
the factory that builds its module, the loss that trains it (`lapseg.losses.for_model`),
the outputs it returns in training, and a tiny configuration that tests build it with.
Adding a decoder is one entry of `_MODELS`. Factories and losses are "module:function"
strings imported on first use, so that importing lapseg stays cheap, each decoder lives in
its own file and this registry imports no loss. A factory takes `num_classes`, `backbone`
and `backbone_kwargs` (a name and its fields, or a Module; see `lapseg.backbones.build`),
`dtype`, `param_dtype` and the decoder's own keyword arguments.

Wrapper models (`Model.wraps`, e.g. 'dsrl') wrap another decoder, their *base*. Their
factory takes `base`, an already built decoder whose `backbone` field is the shared
encoder, plus the wrapper's own fields; `create_model` builds that base by name first, so
no decoder imports this registry:

    create_model('dsrl', base='pspnet', backbone='resnet50', backbone_kwargs={...},
                 base_kwargs={...}, num_classes=21, dtype=..., scale=2, ...)

builds `create_model('pspnet', num_classes=21, backbone='resnet50', backbone_kwargs={...},
dtype=..., **base_kwargs)` and passes it as `base` to the dsrl factory with `dtype` and
the remaining (DSRL) arguments. `num_classes`, `backbone`, `backbone_kwargs` go to the base
only, `dtype` and `param_dtype` to both; `Model.wraps` gives the defaults of `base` and
of the base's arguments. A `base` that is already a Module is passed through as is (then
only a matching `num_classes` may be given besides the wrapper's fields).
"""

import dataclasses
import importlib
import math
import numbers


@dataclasses.dataclass(frozen=True)
class Model:
    """What lapseg knows of one model: how to build, train and test it.

    Attributes:
      factory: "module:function" building the linen Module (see the module docstring).
      outputs: `fnmatch` patterns of the keys it returns in training, 'logits' first: what
        `config.loss.weights` may weight. A wrapper returns its base's too.
      loss: "module:function" of its loss factory, `(loss_config, *, ignore_label) ->
        loss_fn`; None: deep supervision over the outputs that `config.loss.weights`
        names (`lapseg.losses.for_model`).
      label_sampling: the `config.loss.label_sampling` values `loss` honours; None: every
        one of `lapseg.losses.LABEL_SAMPLING`.
      wraps: a wrapper's defaults of `base` (a registered name) and of the base's
        arguments; None for a decoder.
      tiny: keyword arguments that build it small (a narrow backbone, few channels), so
        that tests init every registered model in seconds with no files.
    """

    factory: str
    outputs: tuple = ("logits",)
    loss: str | None = None
    label_sampling: tuple | None = None
    wraps: dict | None = None
    tiny: dict = dataclasses.field(default_factory=dict)

    def module_factory(self):
        """The factory function (its module imported now)."""
        return _load(self.factory)

    def loss_factory(self):
        """The loss factory function, or None for plain deep supervision."""
        return None if self.loss is None else _load(self.loss)


# An eighth-width ResNet-18 (each factory's defaults otherwise): what most `tiny` build on.
_TINY = {"backbone": "resnet18", "backbone_kwargs": {"width": 0.125}}

_MODELS = {
    "fcn32s": Model("lapseg.decoders.fcn:fcn32s", tiny=_TINY),
    "fcn16s": Model("lapseg.decoders.fcn:fcn16s", tiny=_TINY),
    "fcn8s": Model("lapseg.decoders.fcn:fcn8s", tiny=_TINY),
    "fcn8s_atonce": Model("lapseg.decoders.fcn:fcn8s_atonce", tiny=_TINY),
    "lrr": Model("lapseg.decoders.lrr:lrr",
                 outputs=("logits", "level_*", "dilation_*", "erosion_*"),
                 loss="lapseg.losses.lrr:loss_for_config", label_sampling=("center", "corner"),
                 tiny=_TINY),
    "pspnet": Model("lapseg.decoders.pspnet:pspnet", outputs=("logits", "aux"),
                    tiny={**_TINY, "channels": 16, "aux_channels": 8}),
    "refinenet": Model("lapseg.decoders.refinenet:refinenet", outputs=("logits", "coarse_logits"),
                       tiny={**_TINY, "channels": (16, 8, 8, 8)}),
    "gcn": Model("lapseg.decoders.gcn:gcn", tiny=_TINY),
    "dupsampling": Model("lapseg.decoders.dupsampling:dupsampling", tiny={**_TINY, "dim": 16}),
    "icnet": Model("lapseg.decoders.icnet:icnet",
                   outputs=("logits", "aux_sub4", "aux_sub24", "coarse_logits"),
                   tiny={"backbone": "resnet50", "branch_channels": 8, "channels": 16,
                         "backbone_kwargs": {"width": 0.125, "deep_stem": True,
                                             "output_stride": 8}}),
    "dfn": Model("lapseg.decoders.dfn:dfn", outputs=("logits", "smooth_*", "border_*"),
                 loss="lapseg.losses.dfn:loss_for_config",
                 tiny={**_TINY, "channels": 16, "border_channels": 4, "head_expansion": 2}),
    "dsrl": Model("lapseg.decoders.dsrl:dsrl", outputs=("logits", "sisr", "ftm"),
                  loss="lapseg.losses.dsrl:loss_for_config", label_sampling=("corner",),
                  wraps={"base": "pspnet", "backbone": "resnet50"},
                  tiny={**_TINY, "base": "fcn8s", "sisr_channels": 8, "espcn_channels": (8, 8)}),
}
# Arguments of a wrapper that build its base (`dtype` and `param_dtype` go to both).
_BASE_ARGS = ("num_classes", "backbone", "backbone_kwargs")
_SHARED_ARGS = ("dtype", "param_dtype")


def describe(name: str, *, strict: bool = True) -> Model | None:
    """The `Model` registered as `name`; an unknown name is a ValueError listing the
    registered ones, or with `strict=False`, None. (An entry may also be a bare
    "module:function" string: a model with `Model`'s defaults.)"""
    if name not in _MODELS:
        if not strict:
            return None
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(_MODELS))}")
    entry = _MODELS[name]
    return Model(entry) if isinstance(entry, str) else entry


def names():
    """The registered model names whose implementation is installed."""
    return sorted(n for n in _MODELS if _resolve(n, strict=False) is not None)


def train_outputs(name: str, base: str | None = None) -> tuple:
    """The `fnmatch` patterns of model `name`'s training outputs; a wrapper's include
    those of `base` (default: its default base)."""
    model = describe(name)
    if model.wraps is None:
        return model.outputs
    inner = train_outputs(base or model.wraps["base"])
    return model.outputs + tuple(p for p in inner if p not in model.outputs)


def _load(reference: str):
    module_name, attr = reference.split(":")
    return getattr(importlib.import_module(module_name), attr)


def _resolve(name, strict=True):
    model = describe(name)
    try:
        return model.module_factory()
    except ModuleNotFoundError as err:
        module_name = model.factory.split(":")[0]
        if strict or err.name != module_name:
            raise
        return None


def create_model(name, **kwargs):
    """Builds model `name`; keyword arguments go to its factory (see the decoder's file).

    For a wrapper model (`Model.wraps`), `base` (a registered name), `base_kwargs`,
    `num_classes`, `backbone` and `backbone_kwargs` build the base first (see the module
    docstring); the factory receives the built base.
    """
    factory = _resolve(name)
    num_classes = kwargs.get("num_classes")
    if num_classes is not None and (not isinstance(num_classes, numbers.Integral)
                                    or num_classes < 1):
        raise ValueError(f"{name}: num_classes must be an integer >= 1, got {num_classes!r}")
    if describe(name).wraps is not None:
        kwargs = _build_base(name, kwargs)
    return factory(**kwargs)


def _build_base(name, kwargs):
    """A wrapper's keyword arguments with `base` built: `{'base': Module, **wrapper fields}`."""
    kwargs = dict(kwargs)
    wraps = describe(name).wraps
    defaults = {key: value for key, value in wraps.items() if key != "base"}
    base = kwargs.pop("base", wraps["base"])
    base_kwargs = dict(kwargs.pop("base_kwargs", None) or {})
    base_args = {key: kwargs.pop(key) for key in _BASE_ARGS if key in kwargs}
    if not isinstance(base, str):  # an already built decoder
        num_classes = base_args.pop("num_classes", None)
        if base_kwargs or base_args:
            raise ValueError(f"{name}: {', '.join(sorted({*base_kwargs, *base_args}))} build a "
                             "base given by name, not one given as a Module")
        if num_classes is not None and num_classes != getattr(base, "num_classes", num_classes):
            raise ValueError(f"{name}: num_classes={num_classes}, but the given base has "
                             f"{base.num_classes}")
        return {"base": base, **kwargs}
    if describe(base).wraps is not None:
        raise ValueError(f"{name} cannot wrap {base!r}, itself a wrapper model; "
                         "pick a segmentation decoder as base")
    clashes = sorted(set(base_kwargs) & {*_BASE_ARGS, *_SHARED_ARGS})
    if clashes:
        raise ValueError(f"{name}: pass {', '.join(clashes)} to create_model itself, "
                         "not in base_kwargs")
    shared = {key: kwargs[key] for key in _SHARED_ARGS if key in kwargs}
    built = create_model(base, **{**defaults, **base_args, **shared, **base_kwargs})
    return {"base": built, **kwargs}


def from_config(config, num_classes: int):
    """The model of a training config: `config.model` with `config.model_kwargs`, computing
    in `config.dtype` (parameters stay float32)."""
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    return create_model(config.model, num_classes=num_classes, dtype=jnp.dtype(config.dtype),
                        **dict(config.model_kwargs))


def model_logits(model, variables, images, *, size_multiple: int = 32):
    """`model`'s eval-mode logits, the input zero-padded (bottom/right) to a size multiple.

    Args:
      model: a lapseg model (returns a dict with `'logits'` at input resolution).
      variables: its variables.
      images: f32 `[N, H, W, 3]`, normalised (0 is the normalisation mean, the padding value
        of the eval pipeline).
      size_multiple: the model sees `[N, H', W', 3]` with H', W' the next multiples (the
        backbone's output stride); the logits are cropped back.

    Returns:
      f32 `[N, H, W, C]`.
    """
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    height, width = images.shape[1:3]
    padded_height = size_multiple * math.ceil(height / size_multiple)
    padded_width = size_multiple * math.ceil(width / size_multiple)
    images = jnp.pad(
        images, ((0, 0), (0, padded_height - height), (0, padded_width - width), (0, 0)))
    logits = model.apply(variables, images, train=False)["logits"]
    return logits[:, :height, :width].astype(jnp.float32)
