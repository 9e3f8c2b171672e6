"""Your own backbone: the contract's one-line checks, a backbone from any callable, and a
decoder run on precomputed features (docs/backbones.md).

The contract every decoder relies on:

- `backbone(images, train)` on normalised f32 `[N, H, W, 3]` returns a dict of named
  features `{name: [N, H/s, W/s, c]}`;
- `backbone.feature_info()` returns `{name: FeatureInfo(stride=s, channels=c)}` without
  running it (decoders read strides and widths when they are built);
- a decoder reads the features its `features=` field names (deepest first).

    net = from_callable(lambda images, train: {'c4': ..., 'c5': ...},
                        {'c4': FeatureInfo(16, 256), 'c5': FeatureInfo(32, 512)})
    model = lapseg.create_model('fcn16s', backbone=net, num_classes=5, features=('c5', 'c4'))
    head, images = decoder_only(model, features, (H, W))   # no backbone runs
    out = head.apply(variables, images, train=False)       # {'logits': [N, H, W, C], ...}
"""

import dataclasses
import functools
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax.numpy as jnp

from lapseg.backbones.feature_info import FeatureInfo

GUIDE = "see docs/backbones.md"  # where each contract error points


def check_feature_info(info, owner: str) -> dict:
    """`info` as `{name: FeatureInfo}`; a one-line ValueError naming `owner` (the backbone's
    class) unless it maps names to positive `(stride, channels)` ints."""
    if not isinstance(info, Mapping) or not info:
        raise ValueError(f"backbone {owner}: feature_info() must return a non-empty dict "
                         f"{{name: FeatureInfo(stride, channels)}}, got {type(info).__name__} "
                         f"— {GUIDE}")
    checked = {}
    for name, value in info.items():
        try:
            stride, channels = (int(value.stride), int(value.channels)) if hasattr(
                value, "stride") else tuple(int(v) for v in value)
        except (TypeError, ValueError):
            stride = channels = 0
        if stride < 1 or channels < 1:
            raise ValueError(f"backbone {owner}: feature_info()[{name!r}] must be "
                             f"FeatureInfo(stride, channels) of positive ints, got {value!r} "
                             f"— {GUIDE}")
        checked[name] = FeatureInfo(stride, channels)
    return checked


def check_outputs(features, info: Mapping, owner: str) -> dict:
    """`features` as a dict; a one-line ValueError naming `owner` unless it is a dict
    holding every feature `info` names."""
    if not isinstance(features, Mapping):
        raise ValueError(f"backbone {owner} returned a {type(features).__name__}, not a dict of "
                         f"named features {{name: [N, h, w, c]}} — {GUIDE}")
    missing = [name for name in info if name not in features]
    if missing:
        raise ValueError(f"backbone {owner} returned features {list(features)} without {missing}, "
                         f"which its feature_info() names — {GUIDE}")
    return dict(features)


@functools.cache
def _checked_class(cls):
    """A subclass of the backbone class `cls` (same name, fields and variables) whose
    `__call__` checks its output with `check_outputs`."""

    # The class's own function, not linen's wrapper of it: the call stays one module call
    # (method interceptors such as DSRL's see the backbone run once).
    raw = getattr(cls.__call__, "__wrapped__", cls.__call__)

    def __call__(self, *args, **kwargs):  # pylint: disable=invalid-name
        return check_outputs(raw(self, *args, **kwargs), self.feature_info(), cls.__name__)

    if getattr(raw, "compact", False):
        __call__ = nn.compact(__call__)
    checked = type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__,
                                          "__qualname__": cls.__qualname__,
                                          "__doc__": cls.__doc__})
    return checked


def checked(backbone: nn.Module) -> nn.Module:
    """`backbone`, a Module given to a decoder factory, checked against the contract.

    A missing or malformed `feature_info()` is a one-line ValueError now, naming the
    backbone's class; a backbone of lapseg's own is returned as is, any other as an
    instance of a same-named subclass (same fields, same variables) whose call raises a
    one-line ValueError when it returns anything but a dict with the named features,
    instead of an indexing error deep inside the decoder.
    """
    owner = type(backbone).__name__
    if not callable(getattr(backbone, "feature_info", None)):
        raise ValueError(f"backbone {owner} has no feature_info(): a backbone returns a dict of "
                         "named features and says their strides and widths with feature_info() "
                         "-> {name: FeatureInfo(stride, channels)} (lapseg.backbones.from_callable "
                         f"wraps a function) — {GUIDE}")
    check_feature_info(backbone.feature_info(), owner)
    if type(backbone).__module__.startswith("lapseg."):
        return backbone
    fields = {f.name: getattr(backbone, f.name) for f in dataclasses.fields(backbone)
              if f.init and f.name != "parent"}
    return _checked_class(type(backbone))(**fields)


class FromCallable(nn.Module):
    """A backbone from any callable returning named features (`from_callable`).

    Attributes:
      fn: `fn(images, train)`: normalised f32 `[N, H, W, 3]` -> a dict `{name: [N, h, w, c]}`,
        or a list / tuple of arrays in the order of `info`. A linen Module's parameters
        become this backbone's (under its `fn`); a plain function's closed-over arrays are
        constants.
      info: `((name, FeatureInfo(stride, channels)), ...)`, what `feature_info()` returns.
    """

    fn: Callable
    info: tuple

    def feature_info(self) -> dict:
        return dict(self.info)

    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict:
        features = self.fn(images, train)
        if isinstance(features, (list, tuple)) and len(features) == len(self.info):
            features = dict(zip((name for name, _ in self.info), features))
        return check_outputs(features, self.feature_info(), f"from_callable({_name(self.fn)})")


def _name(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def from_callable(fn: Callable, feature_info: Mapping) -> FromCallable:
    """A lapseg backbone from `fn(images, train)` returning named features.

    Args:
      fn: normalised f32 `[N, H, W, 3]`, bool -> `{name: [N, H/s, W/s, c]}` (or a list /
        tuple in `feature_info`'s order, as `features_only` models return them).
      feature_info: `{name: FeatureInfo(stride, channels)}` (or `(stride, channels)` pairs)
        of what `fn` returns: decoders are built from it without running `fn`.

    Returns:
      A Module to pass as `backbone=` to `lapseg.create_model` (with `features=` naming
      what the decoder reads when the names are not ResNet's or VGG's).
    """
    info = check_feature_info(feature_info, f"from_callable({_name(fn)})")
    return FromCallable(fn=fn, info=tuple(info.items()))


def decoder_only(model: nn.Module, features: Mapping, image_size) -> tuple[nn.Module, jnp.ndarray]:
    """`model`'s decoder on precomputed backbone features: no backbone runs.

    The model's backbone is replaced by one returning `features`; the decoder's variables
    keep their paths, so the full model's variables apply (its backbone's are unused) and
    `head.init` gives the decoder's alone. Call it inside the traced function when jitting
    (`features` are closed over). For decoders that run their backbone once on the image
    (every one but DSRL's wrapper); tested for LRR and FCN.

    Args:
      model: a lapseg model (`lapseg.create_model`), e.g. built on the backbone the
        features came from, whose `feature_info()` gives the strides.
      features: `{name: f32 [N, h, w, c]}`, what the backbone returned (at least the
        features the decoder reads).
      image_size: `(H, W)` of the images the features were computed from; the logits
        come out at this size.

    Returns:
      `(head, images)`: `head.apply(variables, images, train=False)` is the model's output
      dict (`head.init(rng, images, train=False)` its decoder's variables); `images` is
      a zero `[N, H, W, 3]` placeholder the decoder reads only the shape of.
    """
    if not isinstance(features, Mapping) or not features:
        raise ValueError(f"decoder_only: features must be a non-empty dict {{name: [N, h, w, c]}}, "
                         f"got {type(features).__name__}")
    features = dict(features)
    height, width = (int(s) for s in image_size)
    batch = {f.shape[0] for f in features.values() if getattr(f, "ndim", 0) == 4}
    if len(batch) != 1 or any(getattr(f, "ndim", 0) != 4 for f in features.values()):
        raise ValueError("decoder_only: features must be [N, h, w, c] arrays of one batch size, "
                         f"got {({k: getattr(v, 'shape', v) for k, v in features.items()})}")
    own = getattr(getattr(model, "backbone", None), "feature_info", None)
    strides = {name: i.stride for name, i in own().items()} if callable(own) else {}
    info = {name: FeatureInfo(strides.get(name, max(1, round(height / f.shape[1]))), f.shape[-1])
            for name, f in features.items()}
    head = model.clone(backbone=FromCallable(fn=lambda images, train: features,
                                             info=tuple(info.items())))
    return head, jnp.zeros((batch.pop(), height, width, 3), jnp.float32)
