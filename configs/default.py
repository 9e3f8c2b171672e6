"""The embedded default job (`lapseg train` with no --config): LRR on ResNet-18, trained
from scratch on the procedurally generated `shapes` dataset, sized for a 2-core CPU."""

from lapseg.train.config import base_config


def get_config():
    return base_config()
