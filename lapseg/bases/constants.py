"""Label-fitted constants in a model's variables: which a model holds, fitting them, attaching them.

Models are pure: LRR's bases and DUpsampling's matrix are variables (in the `'constants'`
collection, or `'params'` when trainable) with deterministic default initialisers
(`ops.basis.cosine_bases`, `ops.dupsample.cosine_matrix`), so every model inits with no
file. Fitted values enter through `attach`, a pure function on variables:

    variables = model.init(rng, images, train=False)
    fitted = lapseg.bases.fit(variables, label_maps, num_classes=C)   # {'lrr_bases': ...}
    variables = lapseg.bases.attach(variables, fitted)

A constant is found by its variable name, wherever it sits in the tree (DSRL wraps its base
decoder, for one): `lrr_bases` `[2u, 2u, K, C]` (fitted at 32x32 and resized to the
model's tile, `ops.pca.resize_bases`), `dupsampling_w` `[L, r*r*C]` and
`dupsampling_mean` `[r*r*C]`. The fit's settings (K; r and L) are read off their shapes.

LRR's bases come out of the PCA at the reference's absolute scale (`(n lambda)^(1/4)` times
unit eigenvectors), which grows with the number of patches n and so is arbitrary; with
`lrr_scale='flat_field'` (the default) each class's bases are divided by the flat-field
gain of their span (`span_gain`: the largest flat-field response of a unit-norm coefficient
vector, `sqrt(sum_k g_k^2)` over the bases' gains `g_k`, `ops.basis.flat_field_gain`, signed
as the largest of them), so that a unit coefficient field reconstructs at most a unit
score, as the bilinear kernel does. The divisor is kept beside the bases as `lrr_bases_gain`
`[C]` (metadata: `attach` skips it). Not the first basis's gain alone: the first principal
direction of a thin class (CamVid's poles) can be odd, with a gain near 0, and dividing by
it blew that class's bases up to 1e4 and the training to NaN.
"""

import math
from collections.abc import Callable, Iterable

import flax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from lapseg.bases import streaming
from lapseg.ops import basis as basis_ops
from lapseg.ops import pca

LRR_BASES = "lrr_bases"
DUPSAMPLING_W = "dupsampling_w"
DUPSAMPLING_MEAN = "dupsampling_mean"
LRR_BASES_GAIN = "lrr_bases_gain"  # metadata of a fit, not a variable
FITTED_NAMES = (LRR_BASES, DUPSAMPLING_W, DUPSAMPLING_MEAN)
LRR_SCALES = ("flat_field", "reference")


def _flat(variables) -> dict:
    return traverse_util.flatten_dict(flax.core.unfreeze(variables))


def required(variables) -> dict:
    """The label-fitted constants that `variables` (or their `jax.eval_shape`) hold.

    Returns:
      `{name: shape}` for each name of `FITTED_NAMES` present, e.g.
      `{'lrr_bases': (8, 8, 10, 21)}`; empty for a model that needs none.
    """
    shapes = {}
    for path, leaf in _flat(variables).items():
        if path[-1] in FITTED_NAMES:
            shapes.setdefault(path[-1], set()).add(tuple(leaf.shape))
    for name, found in shapes.items():
        if len(found) > 1:
            raise ValueError(f"the model holds {name} of several shapes {sorted(found)}; "
                             f"one fitted array cannot serve them all")
    return {name: found.pop() for name, found in shapes.items()}


def fit(variables, label_maps: Iterable | Callable[[], Iterable], *, num_classes: int,
        ignore_label: int = 255, seed: int = 0, lrr_scale: str = "flat_field") -> dict:
    """Fits every constant that `variables` hold (see `required`) from training labels.

    Args:
      variables: the model's variables or their abstract shapes.
      label_maps: integer label maps `[H, W]` / `[N, H, W]` of any size (see
        `lapseg.bases.lrr_bases`), or a function returning a fresh iterable of them (needed
        when a model holds both kinds of constants).
      num_classes: C.
      ignore_label: void label.
      seed: LRR crop seed.
      lrr_scale: 'flat_field' (unit flat-field gain per class) or 'reference' (see above).

    Returns:
      `{'lrr_bases': [32, 32, K, C], 'lrr_bases_gain': [C]}` and/or `{'dupsampling_w': [L, r*r*C],
      'dupsampling_mean': [r*r*C]}` as float32 numpy arrays; `{}` when none are needed.
    """
    return fit_required(required(variables), label_maps, num_classes=num_classes,
                        ignore_label=ignore_label, seed=seed, lrr_scale=lrr_scale)


def fit_required(need: dict, label_maps: Iterable | Callable[[], Iterable], *, num_classes: int,
                 ignore_label: int = 255, seed: int = 0, lrr_scale: str = "flat_field") -> dict:
    """`fit` for constants given as `required`'s `{name: shape}` instead of variables."""

    def maps():
        return label_maps() if callable(label_maps) else label_maps

    fitted = {}
    if LRR_BASES in need:
        _, _, num_bases, classes = need[LRR_BASES]
        _check_classes(LRR_BASES, classes, num_classes)
        if lrr_scale not in LRR_SCALES:
            raise ValueError(f"lrr_scale must be one of {LRR_SCALES}, got {lrr_scale!r}")
        lrr = streaming.lrr_bases(maps(), num_classes, num_bases=num_bases,
                                  ignore_label=ignore_label, seed=seed)
        gain = span_gain(lrr) if lrr_scale == "flat_field" else np.ones((num_classes,), np.float32)
        fitted[LRR_BASES], fitted[LRR_BASES_GAIN] = lrr / gain, gain
    if DUPSAMPLING_W in need:
        dim, depth = need[DUPSAMPLING_W]
        ratio = math.isqrt(depth // num_classes)
        if ratio * ratio * num_classes != depth:
            raise ValueError(f"{DUPSAMPLING_W} of shape {need[DUPSAMPLING_W]} is not [L, r*r*C] "
                             f"for C = {num_classes}")
        w, mean = streaming.dupsampling_matrix(maps(), num_classes, ratio=ratio, dim=dim,
                                             ignore_label=ignore_label)
        fitted[DUPSAMPLING_W], fitted[DUPSAMPLING_MEAN] = w, mean
    return fitted


def span_gain(bases: np.ndarray) -> np.ndarray:
    """Flat-field gain of each class's span of bases, `[P, P, K, C] -> [C]` (see the docstring).

    `sqrt(sum_k g_k^2)`, signed as the largest `g_k`; 1 for a class whose bases have no flat-field
    response at all (< 1e-6), which leaves them as they are.
    """
    gains = np.asarray(basis_ops.flat_field_gain(bases), np.float64)
    norm = np.sqrt((gains**2).sum(0))
    dominant = np.take_along_axis(gains, np.abs(gains).argmax(0)[None], 0)[0]
    sign = np.where(dominant < 0, -1.0, 1.0)
    return np.where(norm > 1e-6, sign * norm, 1.0).astype(np.float32)


def _check_classes(name, classes, num_classes):
    if classes != num_classes:
        raise ValueError(f"{name}: the model has {classes} classes, the labels {num_classes}")


def _fitted_value(name: str, fitted: np.ndarray, shape: tuple) -> jnp.ndarray:
    """`fitted` brought to the variable's `shape` (LRR bases resized to the model's tile)."""
    fitted = jnp.asarray(fitted, jnp.float32)
    if name == LRR_BASES and fitted.ndim == 4 and fitted.shape[2:] == shape[2:]:
        if fitted.shape[:2] != shape[:2]:
            fitted = pca.resize_bases(fitted, shape[0])
    if fitted.shape != shape:
        raise ValueError(f"fitted {name} has shape {tuple(fitted.shape)}, the model needs {shape} "
                         f"(refit for this model: `lapseg basis`, or delete the bases file)")
    return fitted


def attach(variables, fitted: dict) -> dict:
    """`variables` with every constant named in `fitted` replaced by the fitted value (pure).

    Args:
      variables: a model's variables (`model.init`'s output, or a train state's).
      fitted: `{name: array}` as `fit` or `lapseg.bases.load` return; LRR bases of any tile
        size are resized to the model's.

    Returns:
      New variables (same structure and dtypes); the inputs are not modified.
    """
    fitted = {k: v for k, v in fitted.items() if k != LRR_BASES_GAIN}
    unknown = sorted(set(fitted) - set(FITTED_NAMES))
    if unknown:
        raise ValueError(f"attach: {unknown} are not fitted constants ({', '.join(FITTED_NAMES)})")
    flat = _flat(variables)
    placed = set()
    for path, leaf in flat.items():
        name = path[-1]
        if name in fitted:
            flat[path] = _fitted_value(name, fitted[name], tuple(leaf.shape)).astype(leaf.dtype)
            placed.add(name)
    missing = sorted(set(fitted) - placed)
    if missing:
        raise ValueError(f"attach: the model has no {', '.join(missing)} to attach "
                         f"(it holds {sorted(required(variables)) or 'no fitted constants'})")
    return traverse_util.unflatten_dict(flat)
