"""Label-fitted decoder constants: LRR's reconstruction bases and DUpsampling's matrix.

    import lapseg
    model = lapseg.create_model('lrr', backbone='resnet18', num_classes=5)
    variables = model.init(rng, images, train=False)       # default constants, no file
    fitted = lapseg.bases.fit(variables, label_maps, num_classes=5)   # streaming PCA
    variables = lapseg.bases.attach(variables, fitted)      # pure: new variables

- `streaming.py`: streaming PCA fits from label maps of any size (`lrr_bases`,
  `dupsampling_matrix`); the per-batch arithmetic is `lapseg.ops.pca`.
- `constants.py`: which constants a model holds (`required`), `fit` for a model, `attach`.
- `io.py`: the `.npz` file (`save`, `load`) with clear errors.
- `oracle.py`: reconstruction mIoU of labels through W, or through bilinear upsampling.
- `picture.py`: a picture of LRR bases (one row per class, one column per basis).
"""

from lapseg.bases.constants import (DUPSAMPLING_MEAN, DUPSAMPLING_W, FITTED_NAMES, LRR_BASES,
                                    attach, fit, fit_required, required, span_gain)
from lapseg.bases.streaming import LRR_PATCH, dupsampling_matrix, lrr_bases
from lapseg.bases.io import load, save
from lapseg.bases.oracle import bilinear_reconstruction_miou, reconstruction_miou
from lapseg.bases.picture import bases_picture

__all__ = [
    "DUPSAMPLING_MEAN",
    "DUPSAMPLING_W",
    "FITTED_NAMES",
    "LRR_BASES",
    "LRR_PATCH",
    "attach",
    "bases_picture",
    "bilinear_reconstruction_miou",
    "dupsampling_matrix",
    "fit",
    "fit_required",
    "load",
    "lrr_bases",
    "reconstruction_miou",
    "required",
    "save",
]
