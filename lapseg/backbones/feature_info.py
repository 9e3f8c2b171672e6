"""`FeatureInfo`: what a backbone's named feature looks like, known without running it."""

from typing import NamedTuple


class FeatureInfo(NamedTuple):
    """Stride (input pixels per feature pixel, nominal) and channel count of a feature."""

    stride: int
    channels: int
