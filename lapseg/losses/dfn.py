"""DFN's objective (Yu et al., CVPR 2018, Sec. 3.3): CE on the smooth heads + 0.1 x focal loss on the border heads.

From ycszen/TorchSeg `model/dfn/voc.dfn.R101_v1c/network.py` (`loss0 + ... + loss3 +
self.alpha * (aux_loss0 + ... + aux_loss3)`), `train.py` (`nn.CrossEntropyLoss(
ignore_index=255)`, `SigmoidFocalLoss(ignore_label=255, gamma=2.0, alpha=0.25)`) and
`config.py` (`C.aux_loss_alpha = 0.1`):

    L = sum_k w_k CE(smooth_k, y) + border_weight * sum_b FL(border_b, edges(y))

- CE: `segmentation.deep_supervision` over the outputs `loss_config.weights` names (the DFN
  configs name the four smooth heads at 1, as the reference; every head is at the input size).
- FL: the sigmoid focal loss of Lin et al. (ICCV 2017) on every 'border_*' output `[N, H, W, 1]`,
  `-alpha t (1 - p)^gamma log p - (1 - alpha) (1 - t) p^gamma log(1 - p)`, `p = sigmoid(x)`,
  averaged over all N H W pixels (the reference's `loss.mean()` over every pixel).
- edges(y): `lapseg.ops.edges.border_targets`, the reference's Canny edges of the label map
  (ignore -> 0) dilated by a 7x7 rectangle, computed here from the labels on the device.

Deviations, each for its reason:
- The focal loss is Lin et al.'s. TorchSeg's `furnace/seg_opr/loss_opr.py` `SigmoidFocalLoss`
  (`# TODO: use the pred instead of pred_sigmoid`) puts the sigmoid p where the logit belongs
  in a numerically stable BCE: `-(alpha (1 - p)^gamma (p - p t) + (1 - alpha) p^gamma
  log(1 + exp(-p)))`. Its gradient with respect to the logit is negative for t = 0 and t = 1
  alike (e.g. -0.056 and -0.071 at logit 0), so it raises every border logit whatever the
  target and does not teach borders; the paper describes a focal loss (Sec. 3.3, not
  verified: its text was not read here), which is what this is.
- Ignored pixels: the reference turns `ignore_label` into 0 before Canny (kept) and ignores
  only the border target's crop padding (its `random_crop_pad_to_shape(cgt, ..., 255)`); the
  loss here sees only the padded label map, where padding is `ignore_label` like VOC's void
  band, so it ignores no pixel: the void band is supervised as in the reference, the padding
  (a zero image) as "no border" where the reference skips it.
- Edges at a crop's rim: the reference finds them on the whole scaled image before
  cropping, so a boundary up to 3 pixels outside the crop dilates into it; here they are
  found on the crop.

Config fields (with the reference's values as defaults): `weights` ({'logits': 1.0}),
`class_weights`, `label_sampling`, `border_weight` (0.1), `focal_gamma` (2.0), `focal_alpha`
(0.25), `border_dilation` (7).
"""

import chex
import jax
import jax.numpy as jnp

from lapseg.losses.segmentation import deep_supervision
from lapseg.ops import edges


def sigmoid_focal_loss(logits: jnp.ndarray, targets: jnp.ndarray, *, gamma: float = 2.0,
                       alpha: float = 0.25) -> jnp.ndarray:
    """Mean sigmoid focal loss (Lin et al., ICCV 2017, Eq. 5) over every pixel.

    Args:
      logits: `[N, H, W, 1]` (or `[N, H, W]`), any float dtype; computed in f32.
      targets: `[N, H, W]` in {0, 1}.
      gamma, alpha: the focusing exponent and the positive class's weight.

    Returns:
      f32 scalar, `mean(-alpha t (1-p)^gamma log p - (1-alpha) (1-t) p^gamma log(1-p))`.
    """
    if logits.ndim == 4:
        chex.assert_axis_dimension(logits, 3, 1)
        logits = logits[..., 0]
    chex.assert_equal_shape([logits, targets])
    x = logits.astype(jnp.float32)
    t = targets.astype(jnp.float32)
    p = jax.nn.sigmoid(x)
    # log p = -softplus(-x), log(1 - p) = -softplus(x): finite for any logit.
    positive = alpha * t * (1.0 - p) ** gamma * jax.nn.softplus(-x)
    negative = (1.0 - alpha) * (1.0 - t) * p ** gamma * jax.nn.softplus(x)
    return jnp.mean(positive + negative)


def loss_for_config(loss_config, *, ignore_label: int):
    """`loss_fn(outputs, labels, batch) -> (loss, metrics)` for a DFN model's outputs.

    `outputs` needs the keys of `loss_config.weights` and at least one 'border_*' output;
    labels are int `[N, H, W]` at the input size.
    """
    weights = dict(loss_config.get("weights", None) or {"logits": 1.0})
    class_weights = loss_config.get("class_weights", None)
    sampling = loss_config.get("label_sampling", None) or "corner"
    border_weight = float(loss_config.get("border_weight", 0.1))
    gamma = float(loss_config.get("focal_gamma", 2.0))
    alpha = float(loss_config.get("focal_alpha", 0.25))
    dilation = int(loss_config.get("border_dilation", 7))

    def loss_fn(outputs, labels, batch):
        del batch
        borders = sorted(key for key in outputs if key.startswith("border_"))
        if not borders:
            raise ValueError(f"DFN loss needs the border outputs 'border_*'; got {sorted(outputs)}")
        ce, metrics = deep_supervision(outputs, labels, weights=weights, ignore_label=ignore_label,
                                       class_weights=class_weights, label_sampling=sampling)
        targets = edges.border_targets(labels, ignore_label=ignore_label, size=dilation)
        border = jnp.zeros((), jnp.float32)
        for key in borders:
            term = sigmoid_focal_loss(outputs[key], targets, gamma=gamma, alpha=alpha)
            metrics[f"loss/{key}"] = term
            border = border + term
        metrics["loss/border"] = border
        return ce + border_weight * border, metrics

    return loss_fn
