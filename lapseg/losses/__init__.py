"""Losses: `for_model(name, loss_config, ignore_label=...)` -> `loss_fn(outputs, labels, batch)`.

Most decoders are trained by `segmentation.deep_supervision` over their output dict
with per-output weights from `config.loss.weights`; models whose objective has other
terms (LRR's dilation/erosion objectives, DSRL's MSE + feature affinity) name a loss
factory in their registry entry (`lapseg.models.Model.loss`).

`config.loss.label_sampling` says how the labels are downsampled by nearest to an output
coarser than the input (`segmentation.labels_like`): 'corner' (the default, PyTorch's
'nearest'), 'center' or 'matlab' (MATLAB's `imresize(..., 'nearest')`, RefineNet's
reference). LRR's loss reads it itself ('center' by default, 'corner'; its dilation/erosion
targets know no other); DSRL's samples at corners only.
"""

import functools

from lapseg import models
from lapseg.losses.segmentation import LABEL_SAMPLING, deep_supervision, masked_cross_entropy


def for_model(name: str, loss_config, *, ignore_label: int):
    """The loss of model `name`, configured by `loss_config` (`weights`, `class_weights`,
    `label_sampling`, ...).

    The returned function maps `(outputs, labels, batch)` — the model's output dict,
    int labels `[N, H, W]` and the whole input batch (for losses that need the image) —
    to `(loss, metrics)`. A `label_sampling` the model's loss does not know raises a
    ValueError naming the field, before anything is traced.
    """
    # An unregistered name (a test's model) is trained by plain deep supervision.
    model = models.describe(name, strict=False) or models.Model(factory="")
    sampling = loss_config.get("label_sampling", None)
    known = model.label_sampling or LABEL_SAMPLING
    if sampling is not None and sampling not in known:
        raise ValueError(f"config.loss.label_sampling = {sampling!r}: the {name} loss samples "
                         f"labels by {', '.join(map(repr, known))} only")
    if model.loss is not None:
        return model.loss_factory()(loss_config, ignore_label=ignore_label)
    supervised = functools.partial(
        deep_supervision,
        weights=dict(loss_config.get("weights", None) or {"logits": 1.0}),
        ignore_label=ignore_label,
        class_weights=loss_config.get("class_weights", None),
        label_sampling=sampling or "corner",
    )
    return lambda outputs, labels, batch: supervised(outputs, labels)


__all__ = ["LABEL_SAMPLING", "deep_supervision", "for_model", "masked_cross_entropy"]
