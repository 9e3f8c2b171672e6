"""LRR-4x on a quarter-width ResNet-18 (output stride 32, levels res5..res2), from scratch on
the embedded `shapes` data: the default job's data and backbone with LRR's decoder.

    lapseg train --config configs/shapes_lrr.py --workdir workdir/shapes_lrr

Every pyramid level is supervised (the paper's objective, weights 1) against labels sampled at
block centres, with K = 10 PCA bases per class fitted from the training labels before training
and scaled to unit flat-field gain. Learning rates from the loss curvature at initialisation
(`python -m benchmarks.lrr_curvature`): the head's top Hessian eigenvalue is 241 with
unit-gain bases (2910 at the reference's scale; FCN-8s: 24), so the coefficient convs train at
0.1x the base rate (biases 2x that; eigenvalue 24 with these multipliers) and the base rate
is FCN-8s's 0.1.

Staged, as the reference trains (`LRR4xTrainVGG16Pascal.m`: the 32x sub-model alone first,
then the full model at 1/16 of the rate), in two runs:

    lapseg train --config configs/shapes_lrr.py:coarse --workdir runs/lrr32
    lapseg train --config configs/shapes_lrr.py:refine --workdir runs/lrr \
        --config.init.checkpoint=runs/lrr32

'coarse' supervises the 32x level only (the finer coefficient convs get no gradient);
'refine' starts from that run (`config.init.checkpoint`) with every level supervised at
lr / 16. `python -m benchmarks.decoders_shapes --models lrr_staged` runs both, half the
steps each.
"""

from lapseg.losses.lrr import DEFAULT_WEIGHTS
from lapseg.train import recipes
from lapseg.train.config import default_job


STAGES = ("all", "coarse", "refine")


def get_config(stage: str = "all"):
    """LRR on shapes; `stage`: 'all' (every level from the start), or the staged schedule's
    'coarse' (the 32x level alone) and 'refine' (every level at lr / 16, from a 'coarse'
    run given by `--config.init.checkpoint`)."""
    if stage not in STAGES:
        raise ValueError(f"shapes_lrr: stage must be one of {STAGES}, got {stage!r}")
    config = default_job()
    config.model = "lrr"
    config.model_kwargs.num_bases = 10
    config.optimizer.learning_rate = 0.1
    config.optimizer.lr_multipliers = recipes.lrr_multipliers((0.1, 0.1, 0.1, 0.1))
    config.loss.weights = dict(DEFAULT_WEIGHTS)
    config.num_train_steps = 2000
    if stage == "coarse":
        config.loss.weights = {"level_32": 1.0}
    elif stage == "refine":
        config.optimizer.learning_rate /= 16
    return config
