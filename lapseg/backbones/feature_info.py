"""`FeatureInfo`: what a backbone's named feature looks like, known without running it;
`require_features` / `feature_strides`: check the features a decoder reads / their strides."""

from typing import NamedTuple


class FeatureInfo(NamedTuple):
    """Stride (input pixels per feature pixel, nominal) and channel count of a feature."""

    stride: int
    channels: int



def require_features(available, names, owner: str) -> None:
    """Checks that the features `names` a decoder reads are among `available`.

    Args:
      available: the backbone's features by name: its output dict or its `feature_info()`.
      names: the feature names the decoder reads.
      owner: the decoder's name, which starts the error message.

    Raises:
      ValueError: `'<owner> needs backbone features [...]; the backbone has no features
        [...] (it has [...])'` when any of `names` is missing.
    """
    missing = [name for name in names if name not in available]
    if missing:
        raise ValueError(f"{owner} needs backbone features {list(names)}; the backbone has no "
                         f"features {missing} (it has {list(available)})")


def feature_strides(backbone, names, owner: str) -> list[int]:
    """The strides of `backbone`'s features `names`, in order (from `feature_info()`).

    Args:
      backbone: a backbone Module with `feature_info()`.
      names: the feature names a decoder reads.
      owner: the decoder's name, which starts the error message.

    Raises:
      ValueError: from `require_features`, when the backbone lacks any of `names`.
    """
    info = backbone.feature_info()
    require_features(info, names, owner)
    return [info[name].stride for name in names]
