"""Segmentation metrics: confusion matrix (jittable, sharding-agnostic), IoU, accuracy.

The confusion matrix is a plain reduction, so under global-view `jax.jit` with a batch
sharded over devices XLA inserts the cross-device sum itself: no psum needed.
"""

import chex
import jax.numpy as jnp
import numpy as np


def confusion_matrix(pred, labels, num_classes: int, ignore_label: int) -> jnp.ndarray:
    """Counts `M[t, p]` = pixels with label t predicted as p.

    Args:
      pred: int `[...]` predicted class ids.
      labels: int `[...]`, same shape; pixels equal to `ignore_label` (or outside
        `[0, num_classes)`) are not counted.
      num_classes: C.
      ignore_label: label value to skip.

    Returns:
      int32 `[C, C]`, rows = ground truth, columns = prediction.
    """
    chex.assert_equal_shape([pred, labels])
    labels = labels.astype(jnp.int32)
    valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
    index = jnp.where(valid, labels * num_classes + pred.astype(jnp.int32), num_classes * num_classes)
    counts = jnp.bincount(index.reshape(-1), length=num_classes * num_classes + 1)
    return counts[:-1].reshape(num_classes, num_classes).astype(jnp.int32)


def summarize(confusion) -> dict:
    """mIoU, per-class IoU and pixel accuracy from a `[C, C]` confusion matrix (numpy).

    IoU_c = M[c,c] / (sum_p M[c,p] + sum_t M[t,c] - M[c,c]); classes absent from both
    labels and predictions are NaN in `per_class_iou` and left out of the mean.
    """
    m = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(m)
    union = m.sum(0) + m.sum(1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
    total = m.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
        "per_class_iou": iou,
        "pixel_accuracy": float(true_positive.sum() / total) if total else float("nan"),
    }


def pixel_accuracy(logits, labels, ignore_label: int) -> jnp.ndarray:
    """Fraction of non-ignored pixels whose argmax equals the label (a scalar, jittable)."""
    valid = labels != ignore_label
    correct = (jnp.argmax(logits, -1) == labels) & valid
    return correct.sum() / jnp.maximum(valid.sum(), 1)

