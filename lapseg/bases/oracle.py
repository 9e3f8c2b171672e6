"""The reconstruction oracle: how well labels survive a trip through a low-resolution code.

DUpsampling's Table 1 (Tian et al., CVPR 2019) compares the mIoU of labels reconstructed
through the fitted matrix W with that of bilinear upsampling of their downsampled one-hot
maps; the same measure tells how many LRR bases or DUpsampling dimensions a dataset needs.
mIoU is `lapseg.metrics`' (one definition in the library). Label maps of any size are cut at
the bottom/right to a multiple of the ratio, as `lapseg.bases.dupsampling_matrix` does.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from lapseg import metrics
from lapseg.ops import dupsample as dup
from lapseg.ops import pca, resize


def _cut(labels, ratio: int) -> jnp.ndarray:
    labels = jnp.asarray(labels)
    chex.assert_rank(labels, 3)
    height, width = (s - s % ratio for s in labels.shape[1:])
    if not height or not width:
        raise ValueError(f"label maps {labels.shape[1:]} are smaller than ratio {ratio}")
    return labels[:, :height, :width]


@functools.partial(jax.jit, static_argnames=("ratio", "num_classes", "ignore_label"))
def _dupsampling_confusion(labels, w, mean, *, ratio, num_classes, ignore_label):
    x = dup.space_to_depth(pca.one_hot(labels, num_classes), ratio)
    if mean is not None:
        x = x - mean
    y = dup.dupsample(x @ jnp.linalg.pinv(w), w, ratio)
    if mean is not None:
        y = y + dup.depth_to_space(jnp.broadcast_to(mean, x.shape), ratio)
    return metrics.confusion_matrix(jnp.argmax(y, -1), labels, num_classes, ignore_label)


@functools.partial(jax.jit, static_argnames=("ratio", "num_classes", "ignore_label"))
def _bilinear_confusion(labels, *, ratio, num_classes, ignore_label):
    height, width = labels.shape[1:]
    low = resize.adaptive_avg_pool(pca.one_hot(labels, num_classes), (height // ratio, width // ratio))
    y = resize.resize_bilinear(low, (height, width), align_corners=False)
    return metrics.confusion_matrix(jnp.argmax(y, -1), labels, num_classes, ignore_label)


def reconstruction_miou(labels, w, ratio: int, *, num_classes: int, ignore_label: int,
                        mean=None) -> float:
    """mIoU of labels reconstructed through DUpsampling's W (the paper's upper bound).

    `x = space_to_depth(one_hot(labels), r)`, least-squares code `F = (x - mean) @ pinv(W)`
    (`= (x - mean) @ W.T` for orthonormal rows), `Y = dupsample(F, W, r) + mean`,
    prediction `argmax_c Y`, mIoU (`lapseg.metrics.summarize`) without ignore pixels.

    Args:
      labels: integer `[N, H, W]`, any size (cut to multiples of `ratio`).
      w: `[L, r*r*C]`.
      ratio: r.
      num_classes: C.
      ignore_label: void label.
      mean: optional `[r*r*C]` patch mean (from `dupsampling_matrix`).

    Returns:
      mIoU in [0, 1].
    """
    chex.assert_rank(w, 2)
    confusion = _dupsampling_confusion(
        _cut(labels, ratio), jnp.asarray(w), None if mean is None else jnp.asarray(mean),
        ratio=ratio, num_classes=num_classes, ignore_label=ignore_label)
    return metrics.summarize(np.asarray(confusion))["miou"]


def bilinear_reconstruction_miou(labels, ratio: int, *, num_classes: int, ignore_label: int) -> float:
    """mIoU of labels reconstructed by bilinear upsampling of their downsampled one-hot maps.

    The baseline of DUpsampling's Table 1: `low = adaptive_avg_pool(one_hot, (H/r, W/r))`
    (the r x r block average, the best linear low-resolution map), then
    `resize_bilinear(low, (H, W), align_corners=False)` (half-pixel centres: a block
    average sits at its block's centre), argmax, mIoU without ignore pixels.

    Args:
      labels: integer `[N, H, W]`, any size (cut to multiples of `ratio`).

    Returns:
      mIoU in [0, 1].
    """
    confusion = _bilinear_confusion(_cut(labels, ratio), ratio=ratio, num_classes=num_classes,
                                    ignore_label=ignore_label)
    return metrics.summarize(np.asarray(confusion))["miou"]
