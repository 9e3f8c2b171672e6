"""LRR-4x on the embedded `shapes` data, and the reference's staged schedule for it.

'all' is the default job itself (configs/default.py, `lapseg.train.config.shapes_job`):
every pyramid level supervised from the start, K = 10 PCA bases per class, coefficient convs
at 0.1x the base rate.

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

from lapseg.train.config import default_job


STAGES = ("all", "coarse", "refine")


def get_config(stage: str = "all"):
    """LRR on shapes; `stage`: 'all' (every level from the start), or the staged schedule's
    'coarse' (the 32x level alone) and 'refine' (every level at lr / 16, from a 'coarse'
    run given by `--config.init.checkpoint`)."""
    if stage not in STAGES:
        raise ValueError(f"shapes_lrr: stage must be one of {STAGES}, got {stage!r}")
    config = default_job()
    if stage == "coarse":
        config.loss.weights = {"level_32": 1.0}
    elif stage == "refine":
        config.optimizer.learning_rate /= 16
    return config
