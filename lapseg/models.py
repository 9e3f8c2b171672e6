"""Model registry: `create_model(name, backbone=..., num_classes=...)` -> linen Module.

Every model maps images `[N, H, W, 3]` (f32, normalised) to a dict whose `'logits'`
are `[N, H, W, num_classes]` at input resolution; auxiliary outputs (pyramid levels,
auxiliary heads, the SISR image) sit beside it under keys each decoder documents.

Models are registered as "module:factory" strings and imported on first use, so that
importing lapseg stays cheap and each decoder lives in its own file. A factory takes
`num_classes`, `backbone` and `backbone_kwargs` (a name and its fields, or a Module; see
`lapseg.backbones.build`), `dtype`, `param_dtype` and the decoder's own keyword arguments.

Wrapper models (`WRAPPERS`, e.g. 'dsrl') wrap another decoder, their *base*. Their factory
takes `base`, an already built decoder whose `backbone` field is the shared encoder, plus
the wrapper's own fields; `create_model` builds that base by name first, so no decoder
imports this registry:

    create_model('dsrl', base='pspnet', backbone='resnet50', backbone_kwargs={...},
                 base_kwargs={...}, num_classes=21, dtype=..., scale=2, ...)

builds `create_model('pspnet', num_classes=21, backbone='resnet50', backbone_kwargs={...},
dtype=..., **base_kwargs)` and passes it as `base` to the dsrl factory with `dtype` and
the remaining (DSRL) arguments. `num_classes`, `backbone`, `backbone_kwargs` go to the base
only, `dtype` and `param_dtype` to both; `WRAPPERS[name]` gives the defaults of `base` and
of the base's arguments. A `base` that is already a Module is passed through as is (then
only a matching `num_classes` may be given besides the wrapper's fields).
"""

import importlib
import numbers

_MODELS = {
    "fcn32s": "lapseg.decoders.fcn:fcn32s",
    "fcn16s": "lapseg.decoders.fcn:fcn16s",
    "fcn8s": "lapseg.decoders.fcn:fcn8s",
    "fcn8s_atonce": "lapseg.decoders.fcn:fcn8s_atonce",
    "lrr": "lapseg.decoders.lrr:lrr",
    "pspnet": "lapseg.decoders.pspnet:pspnet",
    "refinenet": "lapseg.decoders.refinenet:refinenet",
    "gcn": "lapseg.decoders.gcn:gcn",
    "dupsampling": "lapseg.decoders.dupsampling:dupsampling",
    "icnet": "lapseg.decoders.icnet:icnet",
    "dsrl": "lapseg.decoders.dsrl:dsrl",
}

# Wrapper models: name -> defaults of `base` (a registered name) and of its arguments.
WRAPPERS = {
    "dsrl": {"base": "pspnet", "backbone": "resnet50"},
}
# Arguments of a wrapper that build its base (`dtype` and `param_dtype` go to both).
_BASE_ARGS = ("num_classes", "backbone", "backbone_kwargs")
_SHARED_ARGS = ("dtype", "param_dtype")


def names():
    """The registered model names whose implementation is installed."""
    return sorted(n for n in _MODELS if _resolve(n, strict=False) is not None)


def _resolve(name, strict=True):
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(_MODELS))}")
    module_name, attr = _MODELS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if strict or err.name != module_name:
            raise
        return None
    return getattr(module, attr)


def create_model(name, **kwargs):
    """Builds model `name`; keyword arguments go to its factory (see the decoder's file).

    For a wrapper model (`WRAPPERS`), `base` (a registered name), `base_kwargs`,
    `num_classes`, `backbone` and `backbone_kwargs` build the base first (see the module
    docstring); the factory receives the built base.
    """
    factory = _resolve(name)
    num_classes = kwargs.get("num_classes")
    if num_classes is not None and (not isinstance(num_classes, numbers.Integral)
                                    or num_classes < 1):
        raise ValueError(f"{name}: num_classes must be an integer >= 1, got {num_classes!r}")
    if name in WRAPPERS:
        kwargs = _build_base(name, kwargs)
    return factory(**kwargs)


def _build_base(name, kwargs):
    """A wrapper's keyword arguments with `base` built: `{'base': Module, **wrapper fields}`."""
    kwargs = dict(kwargs)
    defaults = {key: value for key, value in WRAPPERS[name].items() if key != "base"}
    base = kwargs.pop("base", WRAPPERS[name]["base"])
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
    if base in WRAPPERS:
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
