"""`shapes`: a procedurally generated segmentation task, the embedded default.

Each image is a textured background with 3-5 shapes (disc, rectangle, triangle, ring),
16-48 pixels across in the 96x96 config, drawn over each other. Every region's colour
and texture are drawn independently of its class, from the same distribution as the
background's, so colour carries no class information: a model must learn shape. Each
new base colour lies at least `MIN_COLOR_DISTANCE` from those already in the image, so
every edge is visible. A shape may hide at most 40% of an earlier one. Pixels on class
boundaries (whose 3x3 neighbourhood holds two labels) get the ignore label 255.

Generation is deterministic: example `i` of split `s` uses
`np.random.default_rng((config.seed, s, i))`. Building the default 2000 + 200 images
takes ~3 ms per image (numpy + PIL drawing, PNG encoding, tfds writing) on one core."""

import dataclasses
import io

from etils import epath
import numpy as np
import PIL.Image
import PIL.ImageDraw
import tensorflow_datasets as tfds

from lapseg.data import info as info_lib
from lapseg.data.features import image_label_features

CLASS_NAMES = ("background", "disc", "rectangle", "triangle", "ring")
IGNORE_LABEL = 255
PALETTE = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [255, 255, 255]],
    np.uint8,
)
SPLITS = ("train", "validation")
MIN_COLOR_DISTANCE = 90.0  # RGB Euclidean distance between the base colours of two regions
MAX_HIDDEN = 0.4  # a new shape may cover at most this fraction of an earlier one
MAX_PLACEMENT_TRIES = 20


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
    """Builder config: image size, split sizes, seed and the shapes' size range (pixels)."""

    image_size: int = 96
    num_train: int = 2000
    num_validation: int = 200
    seed: int = 0
    min_shapes: int = 3
    max_shapes: int = 5
    min_size: int = 16
    max_size: int = 48


class Shapes(tfds.core.GeneratorBasedBuilder):
    """tfds builder of the `shapes` dataset: {'image': uint8 [S, S, 3], 'label': uint8 [S, S, 1]}."""

    # A build in data_dir is reused by version: bump it whenever the generator changes.
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    # tfds 4.9.10 locates a packaged builder's file through `importlib_resources`, which it
    # does not install on Python >= 3.9 (ModuleNotFoundError); naming the file skips that.
    code_path = epath.Path(__file__)
    BUILDER_CONFIGS = [
        ShapesConfig(name="96", description="96x96, 2000 train / 200 validation images."),
        ShapesConfig(
            name="128",
            image_size=128,
            min_size=20,
            max_size=64,
            description="128x128, 2000 train / 200 validation images.",
        ),
    ]

    def _info(self):
        size = self.builder_config.image_size
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=image_label_features(size, size),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split):
        config = self.builder_config
        count = {"train": config.num_train, "validation": config.num_validation}[split]
        for index in range(count):
            image, label = generate_example(config, SPLITS.index(split), index)
            yield index, {"image": _png(image), "label": _png(label)}


def dataset_info(config_name: str | None = None) -> info_lib.DatasetInfo:
    """`DatasetInfo` of `shapes/<config_name>` (default: the first config, 96x96)."""
    config = _config(config_name)
    name = "shapes" if config_name is None else f"shapes/{config_name}"
    return info_lib.DatasetInfo(
        name=name,
        num_classes=len(CLASS_NAMES),
        ignore_label=IGNORE_LABEL,
        class_names=CLASS_NAMES,
        palette=PALETTE,
        image_size=(config.image_size, config.image_size),
    )


def builder(data_dir, config_name: str | None = None) -> Shapes:
    """The `Shapes` builder for `config_name` (a name in `Shapes.BUILDER_CONFIGS`) in `data_dir`."""
    # By name, not object: a pickled builder (sent to grain workers) rebuilds itself from
    # its constructor arguments, and tfds rejects a config object equal to a listed one.
    config = _config(config_name).name
    return Shapes(data_dir=data_dir, config=config, file_format="array_record")


def _config(config_name):
    if config_name is None:
        return Shapes.BUILDER_CONFIGS[0]
    for config in Shapes.BUILDER_CONFIGS:
        if config.name == config_name:
            return config
    names = ", ".join(c.name for c in Shapes.BUILDER_CONFIGS)
    raise ValueError(f"shapes has no config {config_name!r}; choose from {names}")


def generate_example(config: ShapesConfig, split_index: int, index: int):
    """Draws example `index` of split `split_index` (0 train, 1 validation).

    Returns:
      image: uint8 `[S, S, 3]`; label: uint8 `[S, S]` with class ids and 255 on boundaries.
    """
    rng = np.random.default_rng((config.seed, split_index, index))
    size = config.image_size
    colors = [_random_color(rng, [])]
    image = _texture(rng, colors[0], np.ones((size, size), bool)).reshape(size, size, 3)
    label = np.zeros((size, size), np.uint8)
    owner = np.zeros((size, size), np.int32)  # which shape (1-based) shows at each pixel
    areas = []
    for _ in range(rng.integers(config.min_shapes, config.max_shapes + 1)):
        class_id = int(rng.integers(1, len(CLASS_NAMES)))
        mask = _place_shape(rng, config, class_id, owner, areas)
        if mask is None:
            continue
        colors.append(_random_color(rng, colors))
        image[mask] = _texture(rng, colors[-1], mask)
        label[mask] = class_id
        areas.append(int(mask.sum()))
        owner[mask] = len(areas)
    label[_boundary(label)] = IGNORE_LABEL
    return np.clip(image, 0, 255).round().astype(np.uint8), label


def _place_shape(rng, config, class_id, owner, areas):
    """A boolean mask for a new shape that hides at most `MAX_HIDDEN` of any earlier one."""
    visible = np.bincount(owner.ravel(), minlength=len(areas) + 1)[1:]
    for _ in range(MAX_PLACEMENT_TRIES):
        mask = _shape_mask(rng, config, class_id)
        hidden = np.bincount(owner[mask], minlength=len(areas) + 1)[1:]
        if np.all(visible - hidden >= (1 - MAX_HIDDEN) * np.asarray(areas, np.int64)):
            return mask
    return None


def _shape_mask(rng, config, class_id):
    """Boolean `[S, S]` mask of one shape of class `class_id`, random size, place and angle."""
    size = config.image_size
    extent = rng.uniform(config.min_size, config.max_size)  # outer diameter / longer side
    center = rng.uniform(0.1 * size, 0.9 * size, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    canvas = PIL.Image.new("L", (size, size), 0)
    draw = PIL.ImageDraw.Draw(canvas)
    name = CLASS_NAMES[class_id]
    if name in ("disc", "ring"):
        radius = extent / 2
        draw.ellipse(_circle_box(center, radius), fill=1)
        if name == "ring":
            draw.ellipse(_circle_box(center, radius * rng.uniform(0.4, 0.6)), fill=0)
    elif name == "rectangle":
        half = np.array([extent, extent * rng.uniform(0.6, 1.0)]) / 2
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
        draw.polygon(_rotate(corners, angle, center), fill=1)
    else:  # triangle: roughly equilateral (vertex angles jittered by up to 15 degrees),
        # circumradius 0.7 * extent, so that its area (0.64 extent^2) is close to the others'.
        angles = np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.26, 0.26, size=3)
        corners = 0.7 * extent * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        draw.polygon(_rotate(corners, angle, center), fill=1)
    return np.asarray(canvas, bool)


def _circle_box(center, radius):
    return [center[0] - radius, center[1] - radius, center[0] + radius, center[1] + radius]


def _rotate(points, angle, center):
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return [tuple(p) for p in points @ rotation.T + center]


def _random_color(rng, taken):
    """Uniform RGB colour at least `MIN_COLOR_DISTANCE` from every colour in `taken`."""
    while True:
        color = rng.uniform(0, 255, size=3)
        if all(np.linalg.norm(color - other) >= MIN_COLOR_DISTANCE for other in taken):
            return color


def _texture(rng, color, mask):
    """float32 `[n, 3]`: the pixels of `mask` (n of them) in `color` plus a random pattern.

    Patterns: flat, stripes (random angle and period), checkerboard, blotches (upsampled
    noise), zero-mean and along a random RGB direction; then per-pixel noise. The same
    distribution serves background and shapes.
    """
    yy, xx = np.nonzero(mask)
    kind = rng.integers(4)
    if kind == 0:
        pattern = np.zeros(yy.shape, np.float32)
    elif kind == 1:
        theta, period = rng.uniform(0, np.pi), rng.uniform(4, 12)
        pattern = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    elif kind == 2:
        cell = rng.integers(3, 9)
        pattern = ((yy // cell + xx // cell) % 2) * 2.0 - 1
    else:
        size = mask.shape[0]
        coarse = rng.uniform(-1, 1, size=(size // 12 + 1, size // 12 + 1)).astype(np.float32)
        blotches = PIL.Image.fromarray(coarse).resize((size, size), PIL.Image.BICUBIC)
        pattern = np.clip(np.asarray(blotches)[yy, xx], -1, 1)
    direction = rng.normal(size=3)
    direction *= rng.uniform(0, 30) / np.linalg.norm(direction)
    noise = rng.standard_normal((yy.size, 3), dtype=np.float32) * rng.uniform(0, 8)
    return (color + pattern[:, None] * direction + noise).astype(np.float32)


def _boundary(label):
    """Boolean `[H, W]`: pixels whose 3x3 neighbourhood (edge-padded) holds more than one label."""
    padded = np.pad(label, 1, mode="edge")
    height, width = label.shape
    shifted = np.stack([padded[i : i + height, j : j + width] for i in range(3) for j in range(3)])
    return shifted.min(axis=0) != shifted.max(axis=0)


def _png(array):
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
