"""What a training loop needs to know about a dataset, whatever its source."""

import dataclasses

import numpy as np


class DataError(ValueError):
    """A dataset cannot be built or read: the message names the file or directory and
    what to do. Raised by `dataset_info` / `load_source` for anticipated problems (an
    unknown name or split, a bad or missing source file, an unreachable download, a
    damaged build); a bug in the data code stays its own exception type."""



@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static description of a segmentation dataset.

    Attributes:
      name: the name `lapseg.data.load_source` accepts, e.g. `'shapes'`, `'camvid'`.
      num_classes: number of classes C; labels are class ids `0 .. C-1`.
      ignore_label: label value of pixels excluded from loss and metrics (outside `0 .. C-1`).
      class_names: C names, in class-id order.
      palette: uint8 `[C + 1, 3]` RGB colours, one per class, then the colour of ignored pixels.
      image_size: typical `(height, width)` of the images, or `None` where sizes vary.
    """

    name: str
    num_classes: int
    ignore_label: int
    class_names: tuple[str, ...]
    palette: np.ndarray
    image_size: tuple[int, int] | None

    def __post_init__(self):
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes"
            )
        if self.palette.shape != (self.num_classes + 1, 3) or self.palette.dtype != np.uint8:
            raise ValueError(
                f"{self.name}: palette must be uint8 [{self.num_classes + 1}, 3], "
                f"got {self.palette.dtype} {self.palette.shape}"
            )
        if 0 <= self.ignore_label < self.num_classes:
            raise ValueError(
                f"{self.name}: ignore label {self.ignore_label} is a class id "
                f"(0..{self.num_classes - 1})"
            )


def pascal_palette(num_colors: int) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved class ids), uint8 `[num_colors, 3]`.

    Used for datasets that define no colours of their own.
    """
    ids = np.arange(num_colors)
    palette = np.zeros((num_colors, 3), np.uint8)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= (((ids >> (3 * bit + channel)) & 1) << (7 - bit)).astype(np.uint8)
    return palette
