"""MATLAB's `imresize(A, [rows cols], 'nearest')` in numpy, for the RefineNet tests.

guosheng/refinenet resizes its label maps with it: to the augmented image's size
(`main/batch_do_data_crop.m`: `mask_data=imresize(mask_data, img_size, 'nearest')`) and to
the score map's (`main/cnn_layer_dense_softmaxloss_forward.m`:
`one_gt_mask_coarse=imresize(one_gt_mask, node_map_size, 'nearest')`).

Transcribed step by step from MathWorks' `imresize.m` (R2013-era; read from a public copy,
MATLAB itself not run here), in float64 as MATLAB computes:

- `deriveScaleFromSize`: `scale = params.output_size ./ A_2d_size`;
- `parseMethodArg` / `getMethodInfo`: 'nearest' is `@box` of width 1.0 and sets
  `antialiasing = false` (the documented default: "For the 'nearest' method, the default is
  false");
- `box`: `f = (-0.5 <= x) & (x < 0.5)`;
- `contributions`: `x = (1:out_length)'`, `u = x/scale + 0.5 * (1 - 1/scale)`,
  `left = floor(u - kernel_width/2)`, `P = ceil(kernel_width) + 2`,
  `indices = bsxfun(@plus, left, 0:P-1)`, `weights = h(bsxfun(@minus, u, indices))`,
  `weights = bsxfun(@rdivide, weights, sum(weights, 2))`,
  `indices = min(max(1, indices), in_length)`, columns of all-zero weights removed;
- `resizeAlongDim`: output `k` is `sum_p weights(k, p) * A(indices(k, p))` along the axis
  (`imresizemex`; the indexing shortcut of `isPureNearestNeighborComputation` gives the same).
"""

import numpy as np


def contributions(in_length: int, out_length: int, scale: float):
    """`[weights, indices]` of `imresize.m` `contributions` for the box kernel, no
    antialiasing; 1-based indices."""
    kernel_width = 1.0
    x = np.arange(1, out_length + 1, dtype=np.float64)[:, None]
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    p = int(np.ceil(kernel_width)) + 2
    indices = left + np.arange(p)[None, :]
    distance = u - indices
    weights = ((-0.5 <= distance) & (distance < 0.5)).astype(np.float64)
    weights = weights / weights.sum(axis=1, keepdims=True)
    indices = np.minimum(np.maximum(1, indices), in_length)
    keep = weights.any(axis=0)
    return weights[:, keep], indices[:, keep].astype(np.int64)


def imresize_nearest(a: np.ndarray, out_hw) -> np.ndarray:
    """`imresize(a, out_hw, 'nearest')` of a 2-D array `a` (e.g. a label map)."""
    out = np.asarray(a, np.float64)
    scale = np.asarray(out_hw, np.float64) / np.asarray(a.shape[:2], np.float64)
    for axis in (0, 1):  # nearest: the order of the axes does not change the result
        weights, indices = contributions(out.shape[axis], int(out_hw[axis]), scale[axis])
        moved = np.moveaxis(out, axis, 0)
        resized = np.einsum("kp,kp...->k...", weights, moved[indices - 1])
        out = np.moveaxis(resized, 0, axis)
    return out.astype(a.dtype)


def source_indices(in_length: int, out_length: int) -> np.ndarray:
    """0-based source index of each output index along one axis."""
    ramp = np.arange(in_length, dtype=np.float64)[:, None]
    return imresize_nearest(ramp, (out_length, 1))[:, 0].astype(np.int64)
