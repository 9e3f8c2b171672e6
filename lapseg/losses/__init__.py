"""Losses: `for_model(name, loss_config, ignore_label=...)` -> `loss_fn(outputs, labels, batch)`.

Most decoders are trained by `segmentation.deep_supervision` over their output dict
with per-output weights from `config.loss.weights`; models whose objective has other
terms (LRR's dilation/erosion objectives, DSRL's MSE + feature affinity) register a
loss module here.
"""

import functools
import importlib

from lapseg.losses.segmentation import deep_supervision, masked_cross_entropy

# model name -> "module:factory"; the factory takes (loss_config, ignore_label=) and returns
# a loss_fn.
_SPECIAL = {
    "lrr": "lapseg.losses.lrr:loss_for_config",
    "dsrl": "lapseg.losses.dsrl:loss_for_config",
}


def for_model(name: str, loss_config, *, ignore_label: int):
    """The loss of model `name`, configured by `loss_config` (`weights`, `class_weights`, ...).

    The returned function maps `(outputs, labels, batch)` — the model's output dict,
    int labels `[N, H, W]` and the whole input batch (for losses that need the image) —
    to `(loss, metrics)`.
    """
    if name in _SPECIAL:
        module_name, attr = _SPECIAL[name].split(":")
        factory = getattr(importlib.import_module(module_name), attr)
        return factory(loss_config, ignore_label=ignore_label)
    supervised = functools.partial(
        deep_supervision,
        weights=dict(loss_config.get("weights", None) or {"logits": 1.0}),
        ignore_label=ignore_label,
        class_weights=loss_config.get("class_weights", None),
    )
    return lambda outputs, labels, batch: supervised(outputs, labels)


__all__ = ["deep_supervision", "for_model", "masked_cross_entropy"]
