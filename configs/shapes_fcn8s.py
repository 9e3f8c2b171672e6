"""FCN-8s on the embedded `shapes` data: the default job (configs/default.py, LRR) with
FCN-8s's decoder, the same backbone, data, steps, batch and optimiser (no multipliers).

    lapseg train --config configs/shapes_fcn8s.py --workdir workdir/shapes_fcn8s

`python -m benchmarks.decoders_shapes` compares the two over seeds (docs/benchmarks.md).
"""

from lapseg.train.config import shapes_job


def get_config():
    return shapes_job("fcn8s")
