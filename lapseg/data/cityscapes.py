"""`cityscapes`: Cityscapes fine annotations as the 19 train ids, from the authors' folders.

Layout (`leftImg8bit_trainvaltest.zip` and `gtFine_trainvaltest.zip` unpacked into one
root, `config.data.source_dir`):

    ROOT/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Labels come from `*_gtFine_labelTrainIds.png` where present (cityscapesScripts'
`createTrainIdLabelImgs.py` writes them: train ids 0..18 and 255), otherwise from
`*_gtFine_labelIds.png`, whose ids 0..33 are mapped to the 19 train ids of
cityscapesScripts' `helpers/labels.py`; every other id (void, parking, rail track, guard
rail, bridge, tunnel, polegroup, caravan, trailer) becomes the ignore label 255. (The
license plate, id -1, is never drawn into labelIds: `json2labelImg.py` skips negative ids.)
The color, instanceIds and polygons files beside them are not read.
"""

import pathlib

import numpy as np

from lapseg.data import info as info_lib
from lapseg.data import local

IGNORE_LABEL = 255
# labelIds -> trainIds, cityscapesScripts `cityscapesscripts/helpers/labels.py`.
TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
NUM_LABEL_IDS = 34  # labelIds 0..33
CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic_light",
    "traffic_sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
PALETTE = np.array(
    [
        [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
        [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
        [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70],
        [0, 60, 100], [0, 80, 100], [0, 0, 230], [119, 11, 32], [0, 0, 0],
    ],
    np.uint8,
)  # fmt: skip
SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIXES = ("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png")  # in order of use
LAYOUT = ("leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png and "
          "gtFine/{train,val,test}/<city>/*_gtFine_labelIds.png")

_LABEL_ID_TABLE = np.full(256, IGNORE_LABEL, np.uint8)
_LABEL_ID_TABLE[list(TRAIN_IDS)] = list(TRAIN_IDS.values())
_VALID_TRAIN_IDS = np.array([*range(len(CLASS_NAMES)), IGNORE_LABEL])


def dataset_info() -> info_lib.DatasetInfo:
    return info_lib.DatasetInfo(name="cityscapes", num_classes=len(CLASS_NAMES),
                                ignore_label=IGNORE_LABEL, class_names=CLASS_NAMES,
                                palette=PALETTE, image_size=(1024, 2048))


class Reader(local.Reader):
    """The Cityscapes root `root` (holding `leftImg8bit/` and `gtFine/`)."""

    name = "cityscapes"

    def split_names(self):
        return self.present_splits(self.root, ("leftImg8bit", "gtFine"),
                                   {s: f"leftImg8bit/{s}" for s in SPLITS}, "source_dir", LAYOUT)

    def pairs(self, split):
        image_dir, label_dir = self.root / "leftImg8bit" / split, self.root / "gtFine" / split
        pairs = []
        for image in sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}")):
            key = image.name[: -len(IMAGE_SUFFIX)]
            candidates = [label_dir / image.parent.name / f"{key}{s}" for s in LABEL_SUFFIXES]
            label = next((c for c in candidates if c.is_file()), None)
            if label is None:
                self.fail(f"image {image} has no label {candidates[-1]}",
                          "add the gtFine file or remove the image")
            pairs.append(local.Pair(key, image, label))
        return pairs

    def read_label(self, path):
        image, _ = local.open_image(self, path, "label")
        if image.mode not in ("L", "P", "I", "I;16"):
            self.fail(f"label {path} is {image.mode}, not a single-channel id image",
                      "use the *_gtFine_labelIds.png files, not the color ones")
        values = np.asarray(image).astype(np.int64)
        if path.name.endswith(LABEL_SUFFIXES[0]):
            local.check_label_values(self, path, values, _VALID_TRAIN_IDS,
                                     f"train ids 0..{len(CLASS_NAMES) - 1} and {IGNORE_LABEL}")
            return values.astype(np.uint8)
        local.check_label_values(self, path, values, np.arange(NUM_LABEL_IDS),
                                 f"labelIds 0..{NUM_LABEL_IDS - 1}")
        return _LABEL_ID_TABLE[values]


class Cityscapes(local.PairBuilder, skip_registration=True):
    """tfds builder of one Cityscapes split (`lapseg.data.local.PairBuilder`)."""


def reader(source_dir) -> Reader:
    """The reader of the Cityscapes root `source_dir`."""
    if source_dir is None:
        raise info_lib.DataError("cityscapes: set config.data.source_dir to the Cityscapes "
                                 f"root, holding {LAYOUT}")
    return Reader(pathlib.Path(source_dir).resolve())


def builder(data_dir, source_dir, split) -> Cityscapes:
    """The builder of `split` (`lapseg.data.local.builder`)."""
    return local.builder(Cityscapes, reader(source_dir), split, data_dir=data_dir)


