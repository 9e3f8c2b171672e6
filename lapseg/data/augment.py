"""Per-example transforms: normalisation, random scale / crop / flip, padding for evaluation.

Images arrive as uint8 `[H, W, 3]` RGB and labels as uint8 `[H, W]`; both transforms
return `{'image': float32 [h, w, 3], 'label': int32 [h, w]}`. Images are resized
bilinearly, labels by nearest neighbour. Padding goes at the bottom and right: the image
with 0 after normalisation (the normalisation mean), the label with the ignore label.
Normalisation is `lapseg.ops.normalize` ('torch', 'caffe' or 'none').
"""

import dataclasses

import grain
import numpy as np
import PIL.Image

from lapseg.ops.normalize import normalize

def scaled_window(image, label, scaled_size, top, left, height, width):
    """The part inside the image of window `[top, top+h) x [left, left+w)` of the resized pair.

    Equal to resizing `image` and `label` to `scaled_size` and then cropping, but resizes
    only the window (PIL's `box`), so the cost follows the crop, not the scaled image.

    Args:
      image: uint8 `[H, W, 3]`; label: uint8 `[H, W]`.
      scaled_size: `(H', W')` the pair is resized to.
      top, left: window origin in the resized pair, `0 <= top < H'`, `0 <= left < W'`.
      height, width: window size; the window may extend past the bottom and right.

    Returns:
      uint8 `[h, w, 3]` and `[h, w]`, `h = min(height, H' - top)`, `w = min(width, W' - left)`.
    """
    scaled_height, scaled_width = scaled_size
    bottom, right = min(top + height, scaled_height), min(left + width, scaled_width)
    rows, cols = label.shape[0] / scaled_height, label.shape[1] / scaled_width
    box = (left * cols, top * rows, right * cols, bottom * rows)
    size = (right - left, bottom - top)
    image = PIL.Image.fromarray(image).resize(size, PIL.Image.BILINEAR, box=box)
    label = PIL.Image.fromarray(label).resize(size, PIL.Image.NEAREST, box=box)
    return np.asarray(image), np.asarray(label)


def pad_to(image, label, height, width, *, normalization, ignore_label):
    """Normalises `image` and pads the pair at the bottom/right to `[height, width]`.

    Returns:
      {'image': float32 `[height, width, 3]` (0 in the padding),
       'label': int32 `[height, width]` (`ignore_label` in the padding)}.
    """
    h, w = label.shape
    if h > height or w > width:
        raise ValueError(f"image of {h}x{w} does not fit the padded size {height}x{width}")
    padded_image = np.zeros((height, width, 3), np.float32)
    padded_image[:h, :w] = normalize(image, normalization)
    padded_label = np.full((height, width), ignore_label, np.int32)
    padded_label[:h, :w] = label
    return {"image": padded_image, "label": padded_label}


@dataclasses.dataclass(frozen=True)
class TrainAugment(grain.transforms.RandomMap):
    """Random scale, crop (padding where the scaled image is smaller), flip, normalise.

    The scale factor is uniform in `scale_range`; the crop origin is uniform over the
    positions that keep the crop inside the scaled image padded to at least `crop_size`;
    the flip is horizontal with probability 1/2. All draws come from grain's per-example
    rng, so the result depends only on (pipeline seed, example index).
    """

    crop_size: tuple[int, int]
    scale_range: tuple[float, float]
    flip: bool
    normalization: str
    ignore_label: int

    def random_map(self, element, rng: np.random.Generator):
        image, label = element["image"], element["label"]
        scale = rng.uniform(*self.scale_range)
        scaled = (max(1, round(label.shape[0] * scale)), max(1, round(label.shape[1] * scale)))
        crop_height, crop_width = self.crop_size
        top = rng.integers(max(scaled[0] - crop_height, 0) + 1)
        left = rng.integers(max(scaled[1] - crop_width, 0) + 1)
        image, label = scaled_window(image, label, scaled, top, left, crop_height, crop_width)
        if self.flip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        return pad_to(
            image,
            label,
            crop_height,
            crop_width,
            normalization=self.normalization,
            ignore_label=self.ignore_label,
        )


@dataclasses.dataclass(frozen=True)
class EvalPad(grain.transforms.Map):
    """No augmentation: normalise and pad to `size` so that every batch has one shape."""

    size: tuple[int, int]
    normalization: str
    ignore_label: int

    def map(self, element):
        return pad_to(
            element["image"],
            element["label"],
            *self.size,
            normalization=self.normalization,
            ignore_label=self.ignore_label,
        )
