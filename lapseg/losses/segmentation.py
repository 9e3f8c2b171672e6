"""Masked softmax cross-entropy and deep supervision over a model's output dict.

One parameterised loss serves every decoder whose auxiliary outputs are class scores:
FCN (`logits`), PSPNet (`logits` + `aux`, weight 0.4), LRR (`logits` + every pyramid
level), ICNet cascade label guidance (`aux_sub4` 0.4, `aux_sub24` 0.4, `coarse_logits` 1.0,
each at its branch's resolution; `lapseg.train.recipes.ICNET_LOSS_WEIGHTS`), RefineNet
(`coarse_logits`). Each output is compared with the labels resized by NEAREST to its own
resolution (never bilinear: labels are categorical); the default 'corner' sampling takes
each block's top-left pixel, as PyTorch's `mode='nearest'` and TF1's
`resize_nearest_neighbor` (ICNet's reference, hellochick/ICNet-tensorflow) do; 'center'
takes the pixel at each block's centre (PyTorch's 'nearest-exact'), and 'matlab' the pixel
MATLAB's `imresize(..., 'nearest')` takes (guosheng/refinenet
`main/cnn_layer_dense_softmaxloss_forward.m`: `imresize(one_gt_mask, node_map_size,
'nearest')`). `config.loss.label_sampling` picks one (`lapseg.losses.for_model`).
"""

from typing import Mapping, Optional, Sequence

import chex
import jax
import jax.numpy as jnp

from lapseg.ops import labels as label_ops
from lapseg.ops import resize


def masked_cross_entropy(
    logits: jnp.ndarray,
    labels: jnp.ndarray,
    *,
    ignore_label: int,
    class_weights: Optional[Sequence[float]] = None,
) -> jnp.ndarray:
    """Mean softmax cross-entropy over non-ignored pixels.

    `L = sum_p w[y_p] * (-log softmax(z_p)[y_p]) / sum_p w[y_p]` over pixels p with
    `y_p != ignore_label` (PyTorch `CrossEntropyLoss(weight=w, ignore_index=...)`
    semantics: a weighted mean, normalised by the weights of the counted pixels).

    Args:
      logits: `[N, H, W, C]` (any float dtype; the loss is computed in f32).
      labels: int `[N, H, W]`: class ids in `[0, C)` or `ignore_label` (other ids raise a
        ValueError on concrete labels, `ops.labels.check_labels`; under `jit` they are
        excluded like the ignore label).
      ignore_label: label value excluded from the loss.
      class_weights: optional `[C]` per-class weights.

    Returns:
      f32 scalar (0 when every pixel is ignored).
    """
    return masked_mean_nll(_nll, logits, labels, ignore_label=ignore_label,
                           class_weights=class_weights)


def _nll(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """`-log_softmax(logits)[label]` per pixel: `[N, H, W, C]`, int `[N, H, W]` -> f32 `[N, H, W]`."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    # A one-hot product, not take_along_axis: the gather's gradient is a scatter-add, which
    # XLA on CPU runs unfused (benchmarks/train_step.py); iota == label fuses into the sum.
    one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    return -(log_probs * one_hot).sum(-1)


def masked_mean_nll(nll_fn, logits, labels, *, ignore_label: int, class_weights=None) -> jnp.ndarray:
    """`masked_cross_entropy` with the per-pixel term `nll_fn(logits, labels)` (`[N, H, W, C]`,
    int `[N, H, W]` with every label in `[0, C)` -> f32 `[N, H, W]`): checks the labels,
    masks ignored and out-of-range ones, and takes the class-weighted mean."""
    chex.assert_rank(logits, 4)
    label_ops.check_shape(labels, logits.shape[:3],
                          against=f"logits of shape {tuple(logits.shape)} [N, H, W, C]")
    num_classes = logits.shape[-1]
    label_ops.check_labels(labels, num_classes, ignore_label)  # eager calls; no-op under jit
    labels = labels.astype(jnp.int32)
    # Under jit an id outside [0, C) cannot raise: it is left out, never read as a class.
    valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
    safe_labels = jnp.where(valid, labels, 0)
    nll = nll_fn(logits, safe_labels)
    weight = valid.astype(jnp.float32)
    if class_weights is not None:
        class_weights = jnp.asarray(class_weights, jnp.float32)
        chex.assert_shape(class_weights, (num_classes,))
        weight = weight * class_weights[safe_labels]
    return (nll * weight).sum() / jnp.maximum(weight.sum(), 1e-12)


LABEL_SAMPLING = ("corner", "center", "matlab")


def labels_like(labels: jnp.ndarray, logits: jnp.ndarray, sampling: str = "corner") -> jnp.ndarray:
    """`labels` `[N, H, W]` resized by nearest to the spatial size of `logits` `[N, h, w, C]`:
    sampling each block's top-left pixel ('corner', PyTorch 'nearest'), its centre ('center',
    'nearest-exact') or the pixel MATLAB's `imresize(..., 'nearest')` picks ('matlab', centres
    with MATLAB's rounding, `ops.resize.matlab_nearest_indices`); see
    `ops.resize.resize_nearest`."""
    if sampling not in LABEL_SAMPLING:
        raise ValueError(f"label sampling must be one of {LABEL_SAMPLING}, got {sampling!r}")
    chex.assert_rank(labels, 3)
    size = logits.shape[1:3]
    if labels.shape[0] != logits.shape[0] or any(o > l for o, l in zip(size, labels.shape[1:])):
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not fit an output of shape "
            f"{tuple(logits.shape)}: labels must be [N, H, W] at input resolution, no smaller "
            f"than any output (transposed H and W?)")
    if tuple(labels.shape[1:3]) == tuple(size):
        return labels
    return resize.resize_nearest(labels, size, centered=sampling == "center",
                                 matlab=sampling == "matlab")


def deep_supervision(
    outputs: Mapping[str, jnp.ndarray],
    labels: jnp.ndarray,
    *,
    weights: Mapping[str, float],
    ignore_label: int,
    class_weights: Optional[Sequence[float]] = None,
    label_sampling: str = "corner",
    cross_entropy=None,
):
    """Weighted sum of masked CE over the named outputs.

    Args:
      outputs: the model's output dict; every key in `weights` must be present.
      labels: int `[N, H, W]` at input resolution.
      weights: output key -> loss weight, e.g. `{'logits': 1.0, 'aux': 0.4}`.
      ignore_label: label value excluded from every term.
      class_weights: optional `[C]` per-class weights.
      label_sampling: how labels are downsampled to a coarser output (`labels_like`:
        'corner', 'center' or 'matlab').
      cross_entropy: the per-output term, `masked_cross_entropy`'s signature; default
        `masked_cross_entropy` (LRR passes its class-plane version, the same value).

    Returns:
      `(loss, metrics)`: the f32 total and `{'loss/<key>': term}` for every key.
    """
    missing = sorted(set(weights) - set(outputs))
    if missing:
        raise ValueError(
            f"loss weights name outputs {missing} that the model does not return; "
            f"it returns {sorted(outputs)}"
        )
    cross_entropy = cross_entropy or masked_cross_entropy
    total = jnp.zeros((), jnp.float32)
    metrics = {}
    for key, weight in weights.items():
        term = cross_entropy(
            outputs[key], labels_like(labels, outputs[key], label_sampling),
            ignore_label=ignore_label, class_weights=class_weights)
        metrics[f"loss/{key}"] = term
        total = total + weight * term
    return total, metrics
