"""`voc`: PASCAL VOC 2012 segmentation, 21 classes, optionally with SBD's `train_aug`.

Layout (`VOCtrainval_11-May-2012.tar` unpacked; `config.data.source_dir` is
`.../VOCdevkit/VOC2012`, or `.../VOCdevkit` holding it):

    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClass/<id>.png            palette PNGs: class ids 0..20, 255 on borders
    VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt    one id per line

Splits: `train` (1,464 images), `val` (1,449) and `trainval`, from the lists. With
`config.data.sbd_dir` set to SBD's `benchmark_RELEASE` (Hariharan et al., ICCV 2011):

    benchmark_RELEASE/dataset/img/<id>.jpg
    benchmark_RELEASE/dataset/cls/<id>.mat        `GTcls.Segmentation`: class ids 0..20
    benchmark_RELEASE/dataset/{train,val}.txt

there is also `train_aug`: SBD train + SBD val + VOC train, minus VOC val (10,582 images
with the full releases), the set the VOC papers train on. Where both sets have an image,
VOC's mask and JPEG are used: VOC's masks mark object borders as 255 (ignored), SBD's do
not, and VOC's are the ones `val` is scored against.
"""

import pathlib

import numpy as np
import scipy.io

from lapseg.data import info as info_lib
from lapseg.data import local

CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
IGNORE_LABEL = 255
LIST_SPLITS = ("train", "val", "trainval")
AUG_SPLIT = "train_aug"
LAYOUT = ("JPEGImages/*.jpg, SegmentationClass/*.png and ImageSets/Segmentation/"
          "{train,val,trainval}.txt (the VOCdevkit/VOC2012 folder)")
SBD_LAYOUT = "dataset/img/*.jpg, dataset/cls/*.mat and dataset/{train,val}.txt"
_VALID = np.array([*range(len(CLASS_NAMES)), IGNORE_LABEL])


# The VOC devkit's colour map for the 21 classes, then its colour of index 255 (void).
PALETTE = info_lib.pascal_palette(256)[[*range(len(CLASS_NAMES)), 255]]


def dataset_info() -> info_lib.DatasetInfo:
    return info_lib.DatasetInfo(name="voc", num_classes=len(CLASS_NAMES),
                                ignore_label=IGNORE_LABEL, class_names=CLASS_NAMES,
                                palette=PALETTE, image_size=None)


def voc_root(source_dir) -> pathlib.Path:
    """`source_dir`, or its `VOC2012/` when given the `VOCdevkit` folder."""
    root = pathlib.Path(source_dir).resolve()
    return root / "VOC2012" if (root / "VOC2012").is_dir() else root


def sbd_root(sbd_dir) -> pathlib.Path:
    """SBD's `dataset/` folder, given `benchmark_RELEASE` or `dataset` itself."""
    root = pathlib.Path(sbd_dir).resolve()
    return root / "dataset" if (root / "dataset").is_dir() else root


class Reader(local.Reader):
    """VOC 2012 at `root` (`VOCdevkit/VOC2012`), and SBD's `dataset/` at `sbd` (or None)."""

    name = "voc"

    def __init__(self, root, sbd=None):
        super().__init__(root)
        self.sbd = None if sbd is None else pathlib.Path(sbd)

    def options(self, split):
        return f"sbd={self.sbd}" if split == AUG_SPLIT else ""

    def _list(self, split) -> pathlib.Path:
        return self.root / "ImageSets" / "Segmentation" / f"{split}.txt"

    def extra_files(self, split):
        if split != AUG_SPLIT:
            return (self._list(split),)
        return (self._list("train"), self._list("val"),
                self.sbd / "train.txt", self.sbd / "val.txt")

    def split_names(self):
        found = self.present_splits(
            self.root, ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"),
            {s: f"ImageSets/Segmentation/{s}.txt" for s in LIST_SPLITS}, "source_dir", LAYOUT)
        if self.sbd is not None:
            self.present_splits(self.sbd, ("img", "cls", "train.txt", "val.txt"),
                                {AUG_SPLIT: "train.txt"}, "sbd_dir", SBD_LAYOUT)
            found += (AUG_SPLIT,)
        return found

    def _ids(self, path: pathlib.Path) -> list[str]:
        try:
            lines = path.read_text(encoding="utf-8").split()
        except (OSError, UnicodeDecodeError) as err:
            self.fail(f"cannot read split list {path} ({err})", "replace it")
        return lines

    def _file(self, path: pathlib.Path, listed_in: pathlib.Path, what: str) -> pathlib.Path:
        if not path.is_file():
            self.fail(f"{listed_in} names {path.stem}, but its {what} {path} does not exist",
                      "add the file or remove the id from the list")
        return path

    def pairs(self, split):
        if split != AUG_SPLIT:
            listed = self._list(split)
            return [local.Pair(i, self._file(self.root / "JPEGImages" / f"{i}.jpg", listed, "image"),
                               self._file(self.root / "SegmentationClass" / f"{i}.png", listed,
                                          "mask"))
                    for i in sorted(set(self._ids(listed)))]
        val = set(self._ids(self._list("val")))
        sources = {}  # id -> the list that brings it
        for listed in (self.sbd / "train.txt", self.sbd / "val.txt", self._list("train")):
            for i in self._ids(listed):
                sources.setdefault(i, listed)
        pairs = []
        for i in sorted(set(sources) - val):
            image, mask = self.root / "JPEGImages" / f"{i}.jpg", self.root / "SegmentationClass" / f"{i}.png"
            if not image.is_file():
                image = self._file(self.sbd / "img" / f"{i}.jpg", sources[i], "image")
            if not mask.is_file():
                mask = self._file(self.sbd / "cls" / f"{i}.mat", sources[i], "SBD mask")
            pairs.append(local.Pair(i, image, mask))
        return pairs

    def read_label(self, path):
        if path.suffix == ".mat":
            values = self._read_mat(path)
        else:
            image, _ = local.open_image(self, path, "mask")
            if image.mode not in ("P", "L"):
                self.fail(f"mask {path} is {image.mode}, not a palette (P) or grayscale (L) PNG "
                          "of class ids", "use VOC's SegmentationClass masks")
            values = np.asarray(image)
        local.check_label_values(self, path, values, _VALID,
                                 f"class ids 0..{len(CLASS_NAMES) - 1} and {IGNORE_LABEL}")
        return values.astype(np.uint8)

    def _read_mat(self, path) -> np.ndarray:
        """SBD's `GTcls.Segmentation` of the MATLAB file `path`."""
        try:
            gt = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"]
            values = np.asarray(gt.Segmentation)
        except (OSError, ValueError, KeyError, AttributeError, TypeError, NotImplementedError,
                scipy.io.matlab.MatReadError) as err:
            reason = " ".join(str(err).split())[:200] or type(err).__name__
            self.fail(f"cannot read SBD mask {path} ({reason}); expected a MATLAB file with "
                      "GTcls.Segmentation", "replace or remove it")
        if values.ndim != 2 or not np.issubdtype(values.dtype, np.integer):
            self.fail(f"SBD mask {path}: GTcls.Segmentation is {values.dtype} {values.shape}, "
                      "not a 2-D integer array", "replace or remove it")
        return values


class Voc(local.PairBuilder, skip_registration=True):
    """tfds builder of one VOC split (`lapseg.data.local.PairBuilder`)."""


def reader(source_dir, sbd_dir=None) -> Reader:
    """The reader of VOC at `source_dir` (and SBD at `sbd_dir`)."""
    if source_dir is None:
        raise info_lib.DataError(f"voc: set config.data.source_dir to VOCdevkit/VOC2012, "
                                 f"holding {LAYOUT}")
    return Reader(voc_root(source_dir), None if sbd_dir is None else sbd_root(sbd_dir))


def builder(data_dir, source_dir, split, sbd_dir=None) -> Voc:
    """The builder of `split` (`lapseg.data.local.builder`)."""
    if split == AUG_SPLIT and sbd_dir is None:
        raise info_lib.DataError(f"voc: split {AUG_SPLIT} needs SBD: set config.data.sbd_dir to "
                                 f"SBD's benchmark_RELEASE, holding {SBD_LAYOUT}")
    return local.builder(Voc, reader(source_dir, sbd_dir), split, data_dir=data_dir)
