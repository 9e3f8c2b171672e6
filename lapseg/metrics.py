"""Segmentation metrics: confusion matrix (jittable, sharding-agnostic), IoU, accuracy,
boundary (trimap) accuracy.

The confusion matrix is a plain reduction, so under global-view `jax.jit` with a batch
sharded over devices XLA inserts the cross-device sum itself: no psum needed.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lapseg.ops import labels as label_ops


def confusion_matrix(pred, labels, num_classes: int, ignore_label: int) -> jnp.ndarray:
    """Counts `M[t, p]` = pixels with label t predicted as p.

    Args:
      pred: int `[...]` predicted class ids. Ids outside `[0, num_classes)` raise a
        ValueError naming the id on concrete predictions; under `jit` (not checked: no
        host sync) their pixels are not counted, in any row or column.
      labels: int `[...]`, same shape; pixels equal to `ignore_label` are not counted.
        Other ids outside `[0, num_classes)` raise a ValueError on concrete labels
        (`ops.labels.check_labels`); under `jit` they are not counted.
      num_classes: C.
      ignore_label: label value to skip.

    Returns:
      int32 `[C, C]`, rows = ground truth, columns = prediction.
    """
    label_ops.check_shape(labels, pred.shape, against=f"predictions of shape {tuple(pred.shape)}")
    label_ops.check_labels(labels, num_classes, ignore_label)
    _check_predictions(pred, num_classes)
    labels = labels.astype(jnp.int32)
    pred = pred.astype(jnp.int32)
    valid = ((labels != ignore_label) & (labels >= 0) & (labels < num_classes)
             & (pred >= 0) & (pred < num_classes))
    index = jnp.where(valid, labels * num_classes + pred, num_classes * num_classes)
    counts = jnp.bincount(index.reshape(-1), length=num_classes * num_classes + 1)
    return counts[:-1].reshape(num_classes, num_classes).astype(jnp.int32)


def _check_predictions(pred, num_classes: int) -> None:
    """Raises ValueError if concrete `pred` holds an id outside `[0, num_classes)` (the
    lowest such id if one is negative, else the highest); no-op on traced arrays."""
    if isinstance(pred, jax.core.Tracer):
        return
    values = np.asarray(pred)
    if not values.size:
        return
    low, high = values.min(), values.max()
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(f"predictions hold id {bad.item()}: expected class ids "
                         f"0..{num_classes - 1}; pass class ids (the argmax of the logits "
                         "over the last axis)")


def summarize(confusion) -> dict:
    """mIoU, per-class IoU, pixel accuracy and labelled pixels per class from a `[C, C]`
    confusion matrix (numpy).

    IoU_c = M[c,c] / (sum_p M[c,p] + sum_t M[t,c] - M[c,c]); classes absent from both
    labels and predictions are NaN in `per_class_iou` and left out of the mean.
    `class_pixels[c]` = sum_p M[c,p], the pixels labelled c (int64 `[C]`).
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
        "class_pixels": np.asarray(confusion, np.int64).sum(1),
    }


def pixel_accuracy(logits, labels, ignore_label: int) -> jnp.ndarray:
    """Fraction of non-ignored pixels whose argmax equals the label (a scalar, jittable)."""
    valid = labels != ignore_label
    correct = (jnp.argmax(logits, -1) == labels) & valid
    return correct.sum() / jnp.maximum(valid.sum(), 1)



# Band widths of `lapseg eval`'s boundary report (pixels).
TRIMAP_WIDTHS = (1, 2, 4, 8, 16)


def _window_reduce(x, width: int, op, init) -> jnp.ndarray:
    """Separable `(2w+1) x (2w+1)` reduction of `[N, H, W]`; pixels outside the image are absent."""
    for axis in (1, 2):
        window = [1, 1, 1]
        window[axis] = 2 * width + 1
        padding = [(0, 0), (0, 0), (0, 0)]
        padding[axis] = (width, width)
        x = lax.reduce_window(x, init, op, tuple(window), (1, 1, 1), tuple(padding))
    return x


def boundary_band(labels, width: int) -> jnp.ndarray:
    """Pixels within `width` of a label boundary: bool `[N, H, W]` (jittable).

    A pixel is in the band when the `(2 width + 1)`-square window centred on it (clipped
    to the image) holds two different label values, i.e. when the window's max and min
    differ -- the max-pool + min-pool construction of LRR's boundary mask, on labels.
    The ignore label counts as a value, so void bands drawn along object outlines (VOC,
    shapes) are boundaries, as in the trimap of Kohli et al. (2009) and DeepLab; pixels
    outside the image do not count. Pass unpadded labels: padding with the ignore label
    would make the padding's edge a boundary.

    Args:
      labels: int `[N, H, W]`.
      width: band half-width w >= 1 (Chebyshev distance to the nearest other label).
    """
    chex.assert_rank(labels, 3)
    if width < 1:
        raise ValueError(f"boundary_band: width must be >= 1, got {width}")
    labels = labels.astype(jnp.int32)
    info = jnp.iinfo(jnp.int32)
    high = _window_reduce(labels, width, lax.max, jnp.int32(info.min))
    low = _window_reduce(labels, width, lax.min, jnp.int32(info.max))
    return high != low


def trimap_counts(pred, labels, *, ignore_label: int, widths=TRIMAP_WIDTHS) -> jnp.ndarray:
    """Correct and total non-ignored pixels in each boundary band (jittable, summable).

    Args:
      pred: int `[N, H, W]` predicted class ids.
      labels: int `[N, H, W]`, unpadded (see `boundary_band`).
      ignore_label: label value left out of the counts (it still marks boundaries).
      widths: band widths (static).

    Returns:
      int32 `[len(widths), 2]`: per width, (correctly labelled, all) non-ignored pixels
      of the band. Sum over images, then `trimap_accuracy_from_counts`.
    """
    chex.assert_equal_shape([pred, labels])
    valid = labels != ignore_label
    correct = valid & (pred.astype(jnp.int32) == labels.astype(jnp.int32))
    rows = []
    for width in widths:
        band = boundary_band(labels, width)
        rows.append(jnp.stack([(band & correct).sum(), (band & valid).sum()]))
    return jnp.stack(rows).astype(jnp.int32)


def trimap_accuracy_from_counts(counts) -> np.ndarray:
    """float64 `[len(widths)]` pixel accuracy per band from `trimap_counts` (NaN: empty band)."""
    counts = np.asarray(counts, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts[:, 1] > 0, counts[:, 0] / counts[:, 1], np.nan)


def trimap_accuracy(pred, labels, *, ignore_label: int, widths=TRIMAP_WIDTHS) -> np.ndarray:
    """Pixel accuracy within a band of width w around label boundaries, for each w in `widths`.

    LRR's (Ghiasi & Fowlkes, 2016) measure of what boundary refinement buys: accuracy of
    the non-ignored pixels within `w` pixels of a label change (see `boundary_band`).

    Args:
      pred: int `[N, H, W]` predicted class ids.
      labels: int `[N, H, W]` ground truth, unpadded.
      ignore_label: label value excluded from the accuracy.
      widths: band widths.

    Returns:
      float64 `[len(widths)]`; NaN where a band holds no non-ignored pixel.
    """
    return trimap_accuracy_from_counts(
        trimap_counts(pred, labels, ignore_label=ignore_label, widths=widths))


def evaluate(count_fn, batches, *, num_classes: int, widths=()) -> dict:
    """The evaluation loop: sums per-batch counts over `batches`, then summarises them.

    The training loop (padded batches, one jitted step over the device mesh) and `lapseg
    eval` (image by image at full resolution, with test-time options) both evaluate
    through this function; they differ only in `count_fn`.

    Args:
      count_fn: `batch -> {'confusion': int [C, C]}` (see `confusion_matrix`), plus
        `'trimap'` int `[len(widths), 2]` (see `trimap_counts`) when `widths` is given.
        Its arrays may live on device; they are summed there and fetched once.
      batches: an iterable of whatever `count_fn` takes.
      num_classes: C.
      widths: trimap band widths whose counts `count_fn` returns (empty: none).

    Returns:
      `summarize`'s dict (`miou`, `per_class_iou`, `pixel_accuracy`), plus
      `trimap_widths`, `trimap_accuracy` (float `[len(widths)]`) and `trimap_pixels`
      (non-ignored pixels per band) when `widths` is given.
    """
    totals = {"confusion": np.zeros((num_classes, num_classes), np.int64)}
    if widths:
        totals["trimap"] = np.zeros((len(widths), 2), np.int64)
    pending = None
    for batch in batches:
        counts = count_fn(batch)
        pending = counts if pending is None else {k: pending[k] + counts[k] for k in totals}
    if pending is not None:
        totals = {k: totals[k] + np.asarray(pending[k], np.int64) for k in totals}
    result = summarize(totals["confusion"])
    if widths:
        result["trimap_widths"] = tuple(widths)
        result["trimap_accuracy"] = trimap_accuracy_from_counts(totals["trimap"])
        result["trimap_pixels"] = totals["trimap"][:, 1]
    return result
