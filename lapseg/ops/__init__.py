"""Pure, jittable, differentiable functions (no parameters), NHWC throughout."""

from lapseg.ops import basis, boundary, dupsample, edges, fold, normalize, pca, resize

__all__ = ["basis", "boundary", "dupsample", "edges", "fold", "normalize", "pca", "resize"]
