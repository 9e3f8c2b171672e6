"""Pictures of label maps: palette PNGs of class ids, colour images, overlays on the input.

    from lapseg import visualize
    palette = visualize.palette_for('camvid')                  # uint8 [C + 1, 3]
    png = visualize.label_png(pred, palette, ignore_label=11)  # PIL 'P' image, index = class id
    rgb = visualize.overlay(image, pred, palette, ignore_label=11)

Palettes are those of `lapseg.data.dataset_info(name)` (CamVid, Cityscapes, PASCAL VOC,
ADE20K, shapes, ...). Like the dataset infos, a palette has one row per class and a last
row for ignored pixels.
"""

import numpy as np
import PIL.Image



def palette_for(dataset: str) -> np.ndarray:
    """uint8 `[C + 1, 3]` palette of `dataset`, a name of `lapseg.data.names()`."""
    from lapseg import data  # pylint: disable=import-outside-toplevel  (tfds import)

    return data.dataset_info(dataset).palette


def _check(label, palette):
    label = np.asarray(label)
    palette = np.asarray(palette)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label must be an int [H, W] map, got {label.dtype} {label.shape}")
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.dtype != np.uint8:
        raise ValueError(f"palette must be uint8 [C + 1, 3], got {palette.dtype} {palette.shape}")
    return label, palette


def colorize(label, palette, *, ignore_label: int) -> np.ndarray:
    """Class ids `[H, W]` -> uint8 RGB `[H, W, 3]`: `palette[c]` for class c, the last row
    for `ignore_label`. Any other value outside `0 .. C-1` is an error."""
    label, palette = _check(label, palette)
    num_classes = len(palette) - 1
    index = np.where(label == ignore_label, num_classes, label)
    if index.min(initial=0) < 0 or index.max(initial=0) > num_classes:
        bad = label[(index < 0) | (index > num_classes)][0]
        raise ValueError(f"label value {bad} is neither a class id (0..{num_classes - 1}) "
                         f"nor the ignore label {ignore_label}")
    return palette[index]


def label_png(label, palette, *, ignore_label: int) -> PIL.Image.Image:
    """A palette ('P' mode) PIL image whose pixel values are the class ids of `label`.

    Index c < C shows `palette[c]`; the ignore label keeps its value (it must fit in a
    byte) and shows the palette's last row, so a ground-truth map round-trips unchanged.
    `np.asarray(PIL.Image.open(path))` gives the ids back.
    """
    label, palette = _check(label, palette)
    num_classes = len(palette) - 1
    colorize(label, palette, ignore_label=ignore_label)  # Rejects out-of-range values.
    if num_classes > 256 or not 0 <= ignore_label < 256:
        raise ValueError(f"a palette PNG holds indices 0..255: {num_classes} classes and "
                         f"ignore label {ignore_label} do not fit")
    colors = np.zeros((256, 3), np.uint8)
    colors[:num_classes] = palette[:num_classes]
    colors[ignore_label] = palette[-1]
    image = PIL.Image.fromarray(label.astype(np.uint8))
    image.putpalette(colors.reshape(-1).tolist())  # 'L' -> 'P', the values are the indices
    return image


def overlay(image, label, palette, *, ignore_label: int, alpha: float = 0.5) -> np.ndarray:
    """The label's colours blended over the image: uint8 RGB `[H, W, 3]`.

    `out = (1 - alpha) * image + alpha * colorize(label)`, rounded; ignored pixels show
    the image unchanged.

    Args:
      image: uint8 RGB `[H, W, 3]`.
      label: int `[H, W]` class ids (or the ignore label).
      palette: uint8 `[C + 1, 3]`.
      alpha: weight of the label colours, in [0, 1].
    """
    image = np.asarray(image)
    label, palette = _check(label, palette)
    if image.dtype != np.uint8 or image.shape != (*label.shape, 3):
        raise ValueError(f"image must be uint8 [{label.shape[0]}, {label.shape[1]}, 3] like "
                         f"the label, got {image.dtype} {image.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colors = colorize(label, palette, ignore_label=ignore_label).astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colors
    blended = np.where((label == ignore_label)[..., None], image, blended)
    return np.round(blended).astype(np.uint8)
