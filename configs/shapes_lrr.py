"""LRR-4x on a quarter-width ResNet-18 (output stride 32, levels res5..res2), from scratch on
the embedded `shapes` data: the default job's data and backbone with LRR's decoder.

    lapseg train --config configs/shapes_lrr.py --workdir workdir/shapes_lrr

Every pyramid level is supervised (the paper's objective, weights 1) against labels sampled at
block centres, with K = 10 PCA bases per class fitted from the training labels before training
and scaled to unit flat-field gain. Learning rates from the loss curvature at initialisation
(`python -m benchmarks.lrr_curvature`): the head's top Hessian eigenvalue is 264 with
unit-gain bases (2910 at the reference's scale; FCN-8s: 24), so the coefficient convs train at
0.1x the base rate (biases 2x that) and the base rate is FCN-8s's 0.1.
"""

from lapseg.losses.lrr import DEFAULT_WEIGHTS
from lapseg.train import recipes
from lapseg.train.config import default_job


def get_config():
    config = default_job()
    config.model = "lrr"
    config.model_kwargs.num_bases = 10
    config.optimizer.learning_rate = 0.1
    config.optimizer.lr_multipliers = recipes.lrr_multipliers((0.1, 0.1, 0.1, 0.1))
    config.loss.weights = dict(DEFAULT_WEIGHTS)
    config.num_train_steps = 2000
    return config
