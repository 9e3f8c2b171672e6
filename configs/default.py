"""The embedded default job (`lapseg train` with no --config): LRR-4x on a quarter-width
ResNet-18, trained from scratch on the procedurally generated `shapes` dataset, sized for a
2-core CPU (>= 0.85 val mIoU in under 10 minutes). The schema and its defaults live in
`lapseg/train/config.py` (`shapes_job`), inside the package, so that `lapseg train` works
from any directory. configs/shapes_fcn8s.py is the same job with FCN-8s."""

from lapseg.train.config import default_job


def get_config():
    return default_job()
