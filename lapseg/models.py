"""Model registry: `create_model(name, backbone=..., num_classes=...)` -> linen Module.

Every model maps images `[N, H, W, 3]` (f32, normalised) to a dict whose `'logits'`
are `[N, H, W, num_classes]` at input resolution; auxiliary outputs (pyramid levels,
auxiliary heads, the SISR image) sit beside it under keys each decoder documents.

Models are registered as "module:factory" strings and imported on first use, so that
importing lapseg stays cheap and each decoder lives in its own file. A factory takes
`num_classes`, `backbone` (a name for `lapseg.backbones.create` or a Module) and the
decoder's own keyword arguments.
"""

import importlib

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
    """Builds model `name`; keyword arguments go to its factory (see the decoder's file)."""
    return _resolve(name)(**kwargs)
