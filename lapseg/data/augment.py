"""Per-example transforms: normalisation, random scale / crop / flip, padding for evaluation.

Images arrive as uint8 `[H, W, 3]` RGB and labels as uint8 `[H, W]`; `TrainAugment` and
`EvalPad` return `{'image': float32 [h, w, 3], 'label': int32 [h, w]}`. Images are resized
bilinearly, labels by nearest neighbour. Padding goes at the bottom and right: the image
with 0 after normalisation (the normalisation mean), the label with the ignore label.
Normalisation is `lapseg.ops.normalize` ('torch', 'caffe' or 'none').

The training pipeline splits `TrainAugment` in two for speed: `TrainCrop` per example
(the same random draws, uint8 output and the crop's valid size) and `NormalizeBatch` on
whole batches (one vectorised normalisation instead of one per example). Together they
give bit for bit what `TrainAugment` gives, example by example.
"""

import dataclasses
import functools
import math

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
    padded_image[:h, :w] = normalize_uint8(image, normalization)
    padded_label = np.full((height, width), ignore_label, np.int32)
    padded_label[:h, :w] = label
    return {"image": padded_image, "label": padded_label}


def enlarged_size(size, min_short_edge: int | None) -> tuple[int, int]:
    """`size` `(H, W)` enlarged so that its short edge is at least `min_short_edge` (None:
    unchanged), as guosheng/refinenet does to every image before augmenting it
    (`main/my_get_batch_ds_info.m` `do_load_batch_data`: `short_edge=min(img_size); if
    short_edge<train_opts.input_img_short_edge_min todo_scale=
    train_opts.input_img_short_edge_min/short_edge; ...`, then
    `img_data_batch=imresize(img_data_batch, todo_scale)`, with
    `run_config.input_img_short_edge_min=450` in `main/demo_refinenet_train.m`). MATLAB's
    `imresize` with a scale factor makes `ceil(scale .* A_2d_size)` (`deriveSizeFromScale`
    in `imresize.m`), in float64 as here."""
    if min_short_edge is None or min(size) >= min_short_edge:
        return tuple(size)
    scale = min_short_edge / min(size)
    return tuple(math.ceil(scale * s) for s in size)


@dataclasses.dataclass(frozen=True)
class TrainAugment(grain.transforms.RandomMap):
    """Random scale, crop (padding where the scaled image is smaller), flip, normalise.

    The scale factor is uniform in `scale_range`; the crop origin is uniform over the
    positions that keep the crop inside the scaled image padded to at least `crop_size`;
    the flip is horizontal with probability 1/2. All draws come from grain's per-example
    rng, so the result depends only on (pipeline seed, example index).

    `min_short_edge` (None: off): an image whose short edge is shorter is first enlarged to
    it (`enlarged_size`, RefineNet's `input_img_short_edge_min=450`), and the random scale
    applies to the enlarged size. Deviation: the enlargement and the random scale are one
    resize here (bilinear image, nearest label, from the original pair), where the reference
    resizes the image twice (bicubic `imresize`, `do_load_batch_data` then
    `main/batch_do_data_augmentation.m` `apply_data_aug`); its label is resized once, by
    nearest, to the final image size (`main/batch_do_data_crop.m`), as here.
    """

    crop_size: tuple[int, int]
    scale_range: tuple[float, float]
    flip: bool
    normalization: str
    ignore_label: int
    min_short_edge: int | None = None

    def random_map(self, element, rng: np.random.Generator):
        image, label = self.window(element, rng)
        return pad_to(
            image,
            label,
            *self.crop_size,
            normalization=self.normalization,
            ignore_label=self.ignore_label,
        )

    def window(self, element, rng: np.random.Generator):
        """The scaled, cropped, maybe flipped uint8 pair, before padding and normalisation:
        `[h, w, 3]` and `[h, w]` with `h, w` at most the crop size."""
        image, label = element["image"], element["label"]
        height, width = enlarged_size(label.shape, self.min_short_edge)
        scale = rng.uniform(*self.scale_range)
        scaled = (max(1, round(height * scale)), max(1, round(width * scale)))
        crop_height, crop_width = self.crop_size
        top = rng.integers(max(scaled[0] - crop_height, 0) + 1)
        left = rng.integers(max(scaled[1] - crop_width, 0) + 1)
        image, label = scaled_window(image, label, scaled, top, left, crop_height, crop_width)
        if self.flip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        return image, label


@dataclasses.dataclass(frozen=True)
class TrainCrop(TrainAugment):
    """`TrainAugment`'s random draws and window, left in uint8 for `NormalizeBatch`.

    Returns:
      {'image': uint8 `[h, w, 3]` (0 in the padding), 'label': int32 `[h, w]`
       (`ignore_label` in the padding), 'valid': int32 `[2]`, the height and width of the
       window before padding}, `(h, w)` the crop size. `normalization` is not applied here.
    """

    def random_map(self, element, rng: np.random.Generator):
        image, label = self.window(element, rng)
        height, width = self.crop_size
        h, w = label.shape
        padded_image = np.zeros((height, width, 3), np.uint8)
        padded_image[:h, :w] = image
        padded_label = np.full((height, width), self.ignore_label, np.int32)
        padded_label[:h, :w] = label
        return {"image": padded_image, "label": padded_label, "valid": np.array([h, w], np.int32)}


@dataclasses.dataclass(frozen=True)
class NormalizeBatch(grain.transforms.Map):
    """A batch of `TrainCrop` examples -> the batch of `TrainAugment` examples.

    Normalises the uint8 images `[B, h, w, 3]` in one call and zeroes each example's
    padding (past its `valid` height and width); drops `valid`. Returns
    `{'image': float32 [B, h, w, 3], 'label': int32 [B, h, w]}`.
    """

    normalization: str

    def map(self, element):
        image = normalize_uint8(element["image"], self.normalization)
        for example, (h, w) in zip(image, element["valid"]):
            example[h:] = 0
            example[:h, w:] = 0
        return {"image": image, "label": element["label"]}


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


def normalize_uint8(images, convention):
    """`normalize(images, convention)` for uint8 images, bit for bit, by table look-up.

    Each output channel is a function of one input channel (the same one, or the reversed
    order for 'caffe'); the 256 values of each are `normalize`'s own outputs, looked up
    with `np.take` (about 3x faster than the arithmetic on a batch of 16 96x96 images).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        return normalize(images, convention)
    table, sources = _lookup_table(convention)
    out = np.empty(images.shape, np.float32)
    for channel, source in enumerate(sources):
        np.take(table[:, channel], images[..., source], out=out[..., channel])
    return out


@functools.cache
def _lookup_table(convention):
    """`[256, 3]` outputs of `normalize` for an input with every channel at value 0..255,
    and the input channel each output channel reads."""
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    table = normalize(levels, convention)
    table.flags.writeable = False
    zero = normalize(np.zeros((1, 3), np.uint8), convention)[0]
    sources = []
    for channel in range(3):
        probes = np.zeros((3, 3), np.uint8)
        probes[np.arange(3), np.arange(3)] = 255  # probe k: input channel k at 255
        moved = normalize(probes, convention)[:, channel] != zero[channel]
        if moved.sum() != 1:
            raise ValueError(f"normalisation {convention!r} is not per channel")
        sources.append(int(np.argmax(moved)))
    return table, tuple(sources)
