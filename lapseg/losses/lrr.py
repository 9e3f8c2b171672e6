"""LRR's objective (Ghiasi & Fowlkes, ECCV 2016, Sec. 4.2; golnazghiasi/LRR).

- Every pyramid level's prediction gets a masked softmax cross-entropy against the labels
  resized by nearest to its resolution (the reference's `objective_32x` .. `objective_4x`,
  `SegmentationLoss('softmaxlog')`), weighted by `loss_config.weights` (default
  `DEFAULT_WEIGHTS`, all 1 as in the reference). Coarse labels are sampled at block centres
  (`loss_config.label_sampling='center'`, the default): a level at stride f predicts f x f
  blocks with half-pixel centres (its reconstruction and the final bilinear upsampling put
  them there), and the reference (`getBatch.m`) samples coarse labels near block centres
  too. 'corner' (the top-left pixel, PyTorch 'nearest') shifts the 1/8 targets by 3.5 pixels.
- Optional (`loss_config.dilation_erosion`, off by default; the model needs
  `dilation_erosion=True`): at the coarsest level, logistic losses on the dilated and eroded
  class masks (`obj_dil_seg32x`, `obj_ero_seg32x`, `SegmentationLossLogistic`): per class c
  the target is +1 inside `dilate(label == c)` (resp. `erode`) by a disk of radius
  `dilation_erosion_radius` input pixels (32 in the reference) and -1 elsewhere, the loss
  `log(1 + exp(-target * x))` summed over classes and averaged over pixels (the reference
  divides each image's sum by its pixel count + 1, then averages over the batch).

Deviations in the dilation/erosion targets: the reference dilates the full-resolution labels
(MATLAB `imdilate` / `imerode` with `strel('disk', 32)`, a polygonal approximation of the
disk) and then resizes by nearest; here the labels are resized by nearest first and dilated
at the level's resolution with an exact disk of the proportionally smaller radius (4 pixels
at 1/8), which costs a 9x9 instead of a 65x65 window. Void pixels belong to no class (the
reference turns them into VOC's background class, which other datasets lack); outside the
image counts as inside for erosion and outside for dilation, as in MATLAB.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lapseg.losses.segmentation import deep_supervision, masked_mean_nll
from lapseg.ops.boundary import pairwise
from lapseg.ops import resize

DEFAULT_WEIGHTS = {"level_32": 1.0, "level_16": 1.0, "level_8": 1.0, "level_4": 1.0}
KINDS = ("dilation", "erosion")


def _disk(radius: int) -> np.ndarray:
    """`[2r + 1, 2r + 1]` 0/1 disk `y^2 + x^2 <= r^2`."""
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.float32)


def _disk_count(x: jnp.ndarray, radius: int) -> jnp.ndarray:
    """Per channel, the number of ones of `x` `[N, H, W, C]` within the disk (zero outside)."""
    channels, size = x.shape[-1], 2 * radius + 1
    kernel = jnp.broadcast_to(jnp.asarray(_disk(radius))[:, :, None, None], (size, size, 1, channels))
    return lax.conv_general_dilated(
        x, kernel, (1, 1), [(radius, radius)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels, precision=lax.Precision.HIGHEST)


def dilation_erosion_targets(labels, size, *, num_classes: int, radius: int, centered: bool = True):
    """Targets of the dilation and erosion objectives, each f32 `[N, h, w, C]` in {-1, +1}.

    Args:
      labels: int `[N, H, W]` (the ignore label, outside `[0, C)`, belongs to no class).
      size: `(h, w)`, the objective's resolution; labels are resized by nearest to it.
      num_classes: C.
      radius: disk radius at that resolution (0: the class masks themselves).
      centered: sample labels at block centres (see the module docstring).
    """
    small = resize.resize_nearest(labels, size, centered=centered)
    inside = jax.nn.one_hot(small, num_classes, dtype=jnp.float32)
    dilated = _disk_count(inside, radius) > 0.5
    eroded = _disk_count(1.0 - inside, radius) < 0.5
    return 2.0 * dilated - 1.0, 2.0 * eroded - 1.0


def logistic_loss(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
    """`mean_{n,h,w} sum_c log(1 + exp(-t x))` (MatConvNet `vl_nnloss(.., 'logistic')`)."""
    return jax.nn.softplus(-targets * logits.astype(jnp.float32)).sum(-1).mean()


@jax.custom_jvp
def _planes_nll(planes: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """`-log_softmax(planes, axis=1)` at `labels`, per pixel: f32 `[N, C, H, W]`, int
    `[N, H, W]` (in `[0, C)`) -> `[N, H, W]`; `jax.nn.log_softmax`'s formula, class by class."""
    return _planes_nll_and_probs(planes, labels)[0]


def _planes_nll_and_probs(planes, labels):
    classes = [planes[:, c] for c in range(planes.shape[1])]
    shifted = [z - pairwise(jnp.maximum, classes) for z in classes]
    log_total = jnp.log(pairwise(jnp.add, [jnp.exp(z) for z in shifted]))
    # -sum_c log_softmax_c * one_hot_c, as masked_cross_entropy (one term is non-zero).
    nll = -pairwise(jnp.add, [(z - log_total) * (labels == c).astype(jnp.float32)
                               for c, z in enumerate(shifted)])
    return nll, jnp.exp(jnp.stack(shifted, 1) - log_total[:, None])


@_planes_nll.defjvp
def _planes_nll_jvp(primals, tangents):
    (planes, labels), (t, _) = primals, tangents
    nll, probs = _planes_nll_and_probs(planes, labels)
    one_hot = (lax.broadcasted_iota(jnp.int32, planes.shape, 1) == labels[:, None]).astype(jnp.float32)
    # d nll = sum_c (p_c - y_c) t_c: reverse mode transposes the class sum into a broadcast,
    # so the gradient is (p - y) g element-wise on the planes, with no reduction over the
    # class axis and no padded per-class copies (what differentiating the class-by-class
    # forward would give).
    return nll, jnp.sum((probs - one_hot) * t, axis=1)


def planes_cross_entropy(logits, labels, *, ignore_label: int, class_weights=None) -> jnp.ndarray:
    """`lapseg.losses.segmentation.masked_cross_entropy` (the same value, to float rounding),
    computed on class planes: `logits` `[N, H, W, C]` are read as `[N, C, H, W]`.

    LRR's decoder computes its levels as class planes and returns them transposed to NHWC;
    reading them back here cancels the two transposes in the compiled step. The log-softmax
    and the label's pick are written class by class, as element-wise operations on the C
    planes, and the gradient as `(softmax - one_hot) g` on the planes (`_planes_nll`): XLA's
    CPU loops vectorise these along W, where over a minor class axis they run poorly, and
    reductions over the class axis as a major axis go to YNNPACK fusions that ran ~40x
    slower (docs/throughput.md, "LRR's step").
    """
    return masked_mean_nll(
        lambda z, y: _planes_nll(jnp.transpose(z, (0, 3, 1, 2)).astype(jnp.float32), y),
        logits, labels, ignore_label=ignore_label, class_weights=class_weights)


def loss_for_config(loss_config, *, ignore_label: int):
    """LRR's loss from `loss_config` fields: `weights` (output key -> weight),
    `class_weights`, `label_sampling` ('center', or 'corner'), `dilation_erosion` (bool),
    `dilation_erosion_weight` (1.0), `dilation_erosion_radius` (32 input pixels).

    Returns:
      `loss_fn(outputs, labels, batch) -> (loss, metrics)` with `'loss/<key>'` per term.
    """
    weights = dict(loss_config.get("weights", None) or DEFAULT_WEIGHTS)
    class_weights = loss_config.get("class_weights", None)
    dilation_erosion = bool(loss_config.get("dilation_erosion", False))
    extra_weight = float(loss_config.get("dilation_erosion_weight", 1.0))
    radius = float(loss_config.get("dilation_erosion_radius", 32))
    sampling = loss_config.get("label_sampling", "center")

    def loss_fn(outputs, labels, batch):
        del batch
        with jax.named_scope("lrr.loss"):
            total, metrics = deep_supervision(
                outputs, labels, weights=weights, ignore_label=ignore_label,
                class_weights=class_weights, label_sampling=sampling,
                cross_entropy=planes_cross_entropy)
        if not dilation_erosion:
            return total, metrics
        keys = {kind: [k for k in outputs if k.startswith(f"{kind}_")] for kind in KINDS}
        if not all(len(found) == 1 for found in keys.values()):
            raise ValueError(
                f"loss.dilation_erosion needs one 'dilation_*' and one 'erosion_*' output (build the "
                f"model with dilation_erosion=True); the model returns {sorted(outputs)}")
        logits = {kind: outputs[found[0]] for kind, found in keys.items()}
        n, h, w, num_classes = logits["dilation"].shape
        level_radius = int(round(radius * h / labels.shape[1]))
        targets = dict(zip(KINDS, dilation_erosion_targets(labels, (h, w), num_classes=num_classes,
                                                           radius=level_radius,
                                                           centered=sampling == "center")))
        for kind in KINDS:
            term = logistic_loss(logits[kind], targets[kind])
            metrics[f"loss/{keys[kind][0]}"] = term
            total = total + extra_weight * term
        return total, metrics

    return loss_fn
