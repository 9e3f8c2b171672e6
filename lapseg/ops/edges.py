"""Border targets of a label map: DFN's Canny edges, dilated (Yu et al., CVPR 2018, Sec. 3.2).

The reference (ycszen/TorchSeg `model/dfn/voc.dfn.R101_v1c/dataloader.py`, `TrainPre`)
builds the border network's target from the (scaled) label map in the data loader:

    no255_gt[gt == 255] = 0
    cgt = cv2.Canny(no255_gt, 5, 5, apertureSize=7)
    cgt = cv2.dilate(cgt, cv2.getStructuringElement(cv2.MORPH_RECT, (7, 7)))
    cgt[cgt == 255] = 1

On a label map, Canny's gradient is a 7x7 Sobel of a piecewise-constant image: a step of
one label id already gives |dx| + |dy| far above the thresholds (5, 5), so hysteresis keeps
whatever non-maximum suppression keeps. Across a straight vertical boundary between columns
x and x + 1 the magnitude is equal on both columns (the Sobel derivative is antisymmetric),
and OpenCV's suppression (imgproc `canny.cpp`: `m > mag[j - 1] && m >= mag[j + 1]`, and
the same with the rows above and below) keeps the left / upper one. So the edge pixels are
those whose right or lower neighbour has another label, which is what `label_edges`
computes, with no OpenCV: the same pixels on horizontal and vertical boundaries. Near
corners and along diagonal boundaries Canny's thinning differs by a pixel or so (not
measured: OpenCV is not installed here); after the 7x7 dilation that difference is small.
Like Sobel with OpenCV's replicated border, the image edge itself is no label boundary.

`dilate` is `cv2.dilate` with a k x k rectangle anchored at its centre (k odd): the max over
the window, outside pixels not counted.

Jittable, integer only, no gradient (targets). `border_targets` runs inside the loss, on the
labels already on the device: no change to the input pipeline and no host work per image.
"""

import chex
import jax.numpy as jnp
from jax import lax


def label_edges(labels: jnp.ndarray, *, ignore_label: int | None = None,
                fill: int = 0) -> jnp.ndarray:
    """Pixels whose right or lower neighbour has another label: int `[N, H, W]` -> bool `[N, H, W]`.

    `ignore_label` pixels count as label `fill` first (the reference's `gt == 255 -> 0`), so an
    ignored region's outline is an edge where the class beside it is not `fill`.
    """
    chex.assert_rank(labels, 3)
    if ignore_label is not None:
        labels = jnp.where(labels == ignore_label, fill, labels)
    right = labels[:, :, :-1] != labels[:, :, 1:]
    down = labels[:, :-1, :] != labels[:, 1:, :]
    right = jnp.pad(right, ((0, 0), (0, 0), (0, 1)))
    down = jnp.pad(down, ((0, 0), (0, 1), (0, 0)))
    return right | down


def dilate(mask: jnp.ndarray, size: int) -> jnp.ndarray:
    """`cv2.dilate` by a `size x size` rectangle (odd `size`, centred): `[N, H, W]` -> same shape/dtype."""
    chex.assert_rank(mask, 3)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"dilate: size must be a positive odd integer, got {size}")
    pad = size // 2
    x = mask.astype(jnp.int32)
    x = lax.reduce_window(x, 0, lax.max, (1, size, size), (1, 1, 1),
                          ((0, 0), (pad, pad), (pad, pad)))
    return x.astype(mask.dtype)


def border_targets(labels: jnp.ndarray, *, ignore_label: int | None, size: int = 7) -> jnp.ndarray:
    """DFN's border labels: `dilate(label_edges(labels), size)`, int32 `[N, H, W]` in {0, 1}."""
    return dilate(label_edges(labels, ignore_label=ignore_label), size).astype(jnp.int32)
