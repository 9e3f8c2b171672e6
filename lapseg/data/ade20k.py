"""`ade20k`: the ADE20K SceneParsing benchmark (MIT), 150 classes, from the authors' folder.

Layout (`ADEChallengeData2016.zip` unpacked; `config.data.source_dir` is the
`ADEChallengeData2016` folder, or the folder holding it):

    ADEChallengeData2016/images/{training,validation}/ADE_*.jpg
    ADEChallengeData2016/annotations/{training,validation}/ADE_*.png   ids 0..150

Splits `train` (20,210 images) and `val` (2,000). Label 0 ("other objects") is ignored
and class k becomes k - 1, mmsegmentation's `reduce_zero_label`: class ids 0..149 and the
ignore label 255. Class names are those of the benchmark's `objectInfo150.txt`, first
name of each entry, as mmsegmentation's `ADE20KDataset` lists them.
"""

import pathlib

import numpy as np

from lapseg.data import info as info_lib
from lapseg.data import local

CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea",
    "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe",
    "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine",
    "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel",
    "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike",
    "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
    "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
IGNORE_LABEL = 255
SPLIT_DIRS = {"train": "training", "val": "validation"}
FOLDER = "ADEChallengeData2016"
LAYOUT = ("images/{training,validation}/*.jpg and annotations/{training,validation}/*.png "
          "(the ADEChallengeData2016 folder)")

# Stored ids 0..150 -> class ids: 0 ignored, k -> k - 1 (reduce_zero_label).
_TABLE = np.full(256, IGNORE_LABEL, np.uint8)
_TABLE[1:len(CLASS_NAMES) + 1] = np.arange(len(CLASS_NAMES))
_VALID = np.arange(len(CLASS_NAMES) + 1)


def dataset_info() -> info_lib.DatasetInfo:
    palette = np.concatenate([info_lib.pascal_palette(len(CLASS_NAMES) + 1)[1:], [[0, 0, 0]]])
    return info_lib.DatasetInfo(name="ade20k", num_classes=len(CLASS_NAMES),
                                ignore_label=IGNORE_LABEL, class_names=CLASS_NAMES,
                                palette=palette.astype(np.uint8), image_size=None)


class Reader(local.Reader):
    """The `ADEChallengeData2016` folder `root`."""

    name = "ade20k"

    def split_names(self):
        return self.present_splits(self.root, ("images", "annotations"),
                                   {s: f"images/{d}" for s, d in SPLIT_DIRS.items()},
                                   "source_dir", LAYOUT)

    def pairs(self, split):
        image_dir = self.root / "images" / SPLIT_DIRS[split]
        label_dir = self.root / "annotations" / SPLIT_DIRS[split]
        pairs = []
        for image in sorted(image_dir.glob("*.jpg")):
            label = label_dir / f"{image.stem}.png"
            if not label.is_file():
                self.fail(f"image {image} has no annotation {label}",
                          "add the annotation or remove the image")
            pairs.append(local.Pair(image.stem, image, label))
        return pairs

    def read_label(self, path):
        image, _ = local.open_image(self, path, "annotation")
        if image.mode not in ("L", "P"):
            self.fail(f"annotation {path} is {image.mode}, not an 8-bit id image",
                      "use the benchmark's annotations/*.png")
        values = np.asarray(image)
        local.check_label_values(self, path, values, _VALID, f"ids 0..{len(CLASS_NAMES)}")
        return _TABLE[values]


class Ade20k(local.PairBuilder, skip_registration=True):
    """tfds builder of one ADE20K split (`lapseg.data.local.PairBuilder`)."""


def reader(source_dir) -> Reader:
    """The reader of `source_dir`: ADEChallengeData2016, or the folder holding it."""
    if source_dir is None:
        raise info_lib.DataError(f"ade20k: set config.data.source_dir to ADEChallengeData2016, "
                                 f"holding {LAYOUT}")
    root = pathlib.Path(source_dir).resolve()
    return Reader(root / FOLDER if (root / FOLDER).is_dir() else root)


def builder(data_dir, source_dir, split) -> Ade20k:
    """The builder of `split` (`lapseg.data.local.builder`)."""
    return local.builder(Ade20k, reader(source_dir), split, data_dir=data_dir)
