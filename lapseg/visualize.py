"""Pictures of label maps: palette PNGs of class ids, colour images, overlays on the input,
legends and side-by-side panels.

    from lapseg import visualize
    palette = visualize.palette_for('camvid')                  # uint8 [C + 1, 3]
    png = visualize.label_png(pred, palette, ignore_label=11)  # PIL 'P' image, index = class id
    rgb = visualize.overlay(image, pred, palette, ignore_label=11)
    panels = visualize.side_by_side(image, pred, palette, ignore_label=11,
                                    class_names=names, ground_truth=label)

Palettes are those of `lapseg.data.dataset_info(name)` (CamVid, Cityscapes, PASCAL VOC,
ADE20K, shapes, ...). Like the dataset infos, a palette has one row per class and a last
row for ignored pixels.

Background: a dataset whose class 0 is named 'background' or 'void' (any case; shapes,
VOC, Oxford pets, a `folder` dataset that names it so) has a background class
(`background_class`). The overlay leaves it, like ignored pixels, untouched, so the photo
shows through at full brightness; the colour panels still paint it in its palette colour.

Display size: the overlay and the panels are for looking at, so `lapseg predict` draws
them on the image enlarged by a whole factor until its long side is at least
`DISPLAY_SIZE` (`display_scale`): labels by repetition (nearest), the photo bilinearly.
The label PNG keeps the image's own size, one class id per input pixel.
"""

import math

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

BACKGROUND_NAMES = ("background", "void")  # class 0 named so is left untouched in overlays
DISPLAY_SIZE = 512  # the long side, in pixels, that overlays and panels are enlarged to
OUTLINE = 2  # width in pixels of the class-coloured contour inside each class region
_WHITE = (255, 255, 255)
_FONT_SIZE = 14
_GAP = 8  # pixels between panels and around the legend


def palette_for(dataset: str) -> np.ndarray:
    """uint8 `[C + 1, 3]` palette of `dataset`, a name of `lapseg.data.names()`."""
    from lapseg import data  # pylint: disable=import-outside-toplevel  (tfds import)

    return data.dataset_info(dataset).palette


def background_class(class_names) -> int | None:
    """0 when class 0 is named 'background' or 'void' (any case), else None (CamVid's
    'sky', Cityscapes' 'road': every class is a thing to show)."""
    if len(class_names) and str(class_names[0]).strip().lower() in BACKGROUND_NAMES:
        return 0
    return None


def _check_palette(palette) -> np.ndarray:
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.dtype != np.uint8:
        raise ValueError(f"palette must be uint8 [C + 1, 3], got {palette.dtype} {palette.shape}")
    return palette


def _check(label, palette):
    label = np.asarray(label)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label must be an int [H, W] map, got {label.dtype} {label.shape}")
    return label, _check_palette(palette)


def _check_image(image, label) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.shape != (*label.shape, 3):
        raise ValueError(f"image must be uint8 [{label.shape[0]}, {label.shape[1]}, 3] like "
                         f"the label, got {image.dtype} {image.shape}")
    return image


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
    `np.asarray(PIL.Image.open(path))` gives the ids back, and a viewer shows the colours.
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


def contour(label, width: int = OUTLINE) -> np.ndarray:
    """bool `[H, W]`: the pixels within `width` pixels (in x and in y) of a pixel of another
    value, i.e. the inner rim of every region of `label`, `width` pixels wide. The image's
    border is no boundary (edge-replicated)."""
    label = np.asarray(label)
    if label.ndim != 2 or width < 0:
        raise ValueError(f"contour needs an [H, W] map and a width >= 0, got {label.shape} "
                         f"and {width}")
    height, wide = label.shape
    padded = np.pad(label, width, mode="edge")
    edge = np.zeros(label.shape, bool)
    for dy in range(2 * width + 1):
        for dx in range(2 * width + 1):
            edge |= padded[dy:dy + height, dx:dx + wide] != label
    return edge


def overlay(image, label, palette, *, ignore_label: int, alpha: float = 0.5,
            background: int | None = None, outline: int = OUTLINE) -> np.ndarray:
    """The label's colours over the image, each class region outlined: uint8 RGB `[H, W, 3]`.

    Pixels of `ignore_label` or of the `background` class are the image's, unchanged (a
    background blended with black would halve the photo's brightness). Every other pixel
    is `(1 - alpha) * image + alpha * palette[label]`, rounded, except the region's inner
    rim (`contour(label, outline)`), which is the class colour itself, so that regions stay
    visible where their colours resemble the photo.

    Args:
      image: uint8 RGB `[H, W, 3]`.
      label: int `[H, W]` class ids (or the ignore label).
      palette: uint8 `[C + 1, 3]`.
      alpha: weight of the label colours, in [0, 1].
      background: the class left untouched, e.g. `background_class(info.class_names)`;
        None: every class is coloured.
      outline: width of the contour in pixels; 0 for none.
    """
    label, palette = _check(label, palette)
    image = _check_image(image, label)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colors = colorize(label, palette, ignore_label=ignore_label)
    blended = np.round((1.0 - alpha) * image.astype(np.float32)
                       + alpha * colors.astype(np.float32)).astype(np.uint8)
    blended = np.where(contour(label, outline)[..., None], colors, blended)
    untouched = label == ignore_label
    if background is not None:
        untouched |= label == background
    return np.where(untouched[..., None], image, blended)


def display_scale(height: int, width: int, size: int = DISPLAY_SIZE) -> int:
    """The whole factor (>= 1) that brings an image's long side to at least `size`."""
    return max(1, math.ceil(size / max(height, width, 1)))


def enlarge(image=None, label=None, *, scale: int):
    """`(image, label)` enlarged `scale` times: the uint8 `[H, W, 3]` photo bilinearly
    (PIL), the int `[H, W]` label by repetition (nearest: every id stays an id). Either may
    be None, and stays None."""
    if image is not None and scale != 1:
        image = np.asarray(image)
        height, width = image.shape[:2]
        image = np.asarray(PIL.Image.fromarray(image).resize(
            (width * scale, height * scale), PIL.Image.Resampling.BILINEAR))
    if label is not None and scale != 1:
        label = np.repeat(np.repeat(np.asarray(label), scale, axis=0), scale, axis=1)
    return image, label


def _font():
    return PIL.ImageFont.load_default(size=_FONT_SIZE)


def legend(class_names, palette, *, classes=None, width: int = 0,
           ignore_label: int | None = None) -> np.ndarray:
    """A white strip of colour swatches, each followed by its class name: uint8 `[h, w, 3]`.

    Args:
      class_names: the C names, in class-id order.
      palette: uint8 `[C + 1, 3]`.
      classes: the class ids to list, in this order (default: all C); the value
        `ignore_label` among them is listed as 'ignored' in the palette's last colour.
      width: the strip's width; entries wrap onto new rows to fit it (0: one row).
      ignore_label: the ignore label, only to recognise it in `classes`.

    Each swatch is a `_FONT_SIZE` square of exactly the class colour, outlined in grey so
    that a white class shows.
    """
    palette = _check_palette(palette)
    num_classes = len(palette) - 1
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a palette of {num_classes} classes")
    classes = range(num_classes) if classes is None else [int(c) for c in classes]
    entries = []
    for c in classes:
        if c == ignore_label:
            entries.append(("ignored", palette[-1]))
        elif 0 <= c < num_classes:
            entries.append((str(class_names[c]), palette[c]))
        else:
            raise ValueError(f"legend class {c} is neither a class id (0..{num_classes - 1}) "
                             f"nor the ignore label {ignore_label}")
    font, box = _font(), _FONT_SIZE
    row_height = box + _GAP
    spans = [box + 4 + math.ceil(font.getlength(name)) + 2 * _GAP for name, _ in entries]
    rows, x = [[]], _GAP
    for entry, span in zip(entries, spans):
        if width and rows[-1] and x + span > width:
            rows.append([])
            x = _GAP
        rows[-1].append((entry, x))
        x += span
    strip_width = width or max(x, 1)
    strip = PIL.Image.new("RGB", (strip_width, len(rows) * row_height + _GAP), _WHITE)
    draw = PIL.ImageDraw.Draw(strip)
    for r, row in enumerate(rows):
        y = _GAP + r * row_height
        for (name, color), x in row:
            draw.rectangle((x, y, x + box - 1, y + box - 1), fill=tuple(int(v) for v in color),
                           outline=(128, 128, 128))
            draw.text((x + box + 4, y + box // 2), name, fill=(0, 0, 0), font=font, anchor="lm")
    return np.asarray(strip)


def side_by_side(image, prediction, palette, *, class_names, ignore_label: int,
                 ground_truth=None, size: int = DISPLAY_SIZE) -> np.ndarray:
    """Input | prediction | ground truth (when given), titled, with a legend: uint8 RGB.

    The panels are the image and the label maps in palette colours, each enlarged by
    `display_scale(H, W, size)` (`enlarge`). The legend beneath lists the classes present
    in the prediction or the ground truth (not all C: ADE20K has 150), in id order, and
    'ignored' when the ground truth has ignored pixels.

    Args:
      image: uint8 RGB `[H, W, 3]`.
      prediction: int `[H, W]` class ids.
      palette: uint8 `[C + 1, 3]`.
      class_names: the C class names.
      ignore_label: the value of ignored pixels.
      ground_truth: int `[H, W]` class ids or `ignore_label`, or None for two panels.
      size: the long side the panels are enlarged to (at least).
    """
    prediction, palette = _check(prediction, palette)
    image = _check_image(image, prediction)
    maps = [prediction]
    if ground_truth is not None:
        ground_truth = _check(ground_truth, palette)[0]
        if ground_truth.shape != prediction.shape:
            raise ValueError(f"ground truth is {ground_truth.shape}, the prediction "
                             f"{prediction.shape}: they must be the image's size")
        maps.append(ground_truth)
    scale = display_scale(*prediction.shape, size)
    panels = [enlarge(image, scale=scale)[0]]
    panels += [colorize(enlarge(label=m, scale=scale)[1], palette, ignore_label=ignore_label)
               for m in maps]
    titles = ["image", "prediction", "ground truth"][:len(panels)]
    height, width = panels[0].shape[:2]
    title_height = _FONT_SIZE + _GAP
    total = len(panels) * width + (len(panels) + 1) * _GAP
    present = np.unique(np.concatenate([m.reshape(-1) for m in maps]))
    strip = legend(class_names, palette, classes=present, width=total, ignore_label=ignore_label)
    canvas = PIL.Image.new("RGB", (total, title_height + height + _GAP + len(strip)), _WHITE)
    draw, font = PIL.ImageDraw.Draw(canvas), _font()
    for i, (panel, title) in enumerate(zip(panels, titles)):
        x = _GAP + i * (width + _GAP)
        draw.text((x, title_height // 2), title, fill=(0, 0, 0), font=font, anchor="lm")
        canvas.paste(PIL.Image.fromarray(panel), (x, title_height))
    canvas.paste(PIL.Image.fromarray(strip), (0, title_height + height + _GAP))
    return np.asarray(canvas)
