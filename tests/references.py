"""Reference code shared by tests, written out from the original implementations."""

import numpy as np


def upsample_filt(size):
    """fcn.berkeleyvision.org surgery.py's `upsample_filt`, verbatim: the `size x size`
    bilinear upsampling kernel (= LRR's `bilinear_u.m`, pytorch-fcn's `get_upsampling_weight`
    on the diagonal)."""
    factor = (size + 1) // 2
    if size % 2 == 1:
        center = factor - 1
    else:
        center = factor - 0.5
    og = np.ogrid[:size, :size]
    return (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
