"""`folder`: your own images and masks in a local directory (`config.data.source_dir`).

Layout, following `lapseg.data.camvid` (split directories of images, label maps under
the same file names) with the file stem as the key:

    DIR/classes.json                      {"names": [...], "ignore_label": 255, "palette": ...}
    DIR/images/{train,val[,test]}/*.png   RGB images (.png, .jpg or .jpeg)
    DIR/masks/{train,val[,test]}/*.png    class-id masks (8-bit L or palette P PNGs)

`images/x/a.jpg` pairs with `masks/x/a.png`. The tfds splits are `train`, `validation`
(from `val/`) and `test`; `train` is required. In classes.json, `names` gives the C
class names in id order, `ignore_label` (default 255, outside 0..C-1) the mask value of
ignored pixels, and the optional `palette` C (or C + 1, the last for ignored pixels)
`[r, g, b]` colours; without it classes get the PASCAL VOC colours.

The builder checks every pair (readable, same size, mask values class ids or the ignore
label) and writes ArrayRecord into `data_dir/folder/<fingerprint>/`: the fingerprint
hashes classes.json and the relative path, size and mtime of every file under images/
and masks/, so an edited folder is rebuilt and an unchanged one reused. Images and masks
are stored as they are (JPEG stays JPEG), except that images not in RGB are converted to
RGB PNGs and masks not in mode L to L PNGs. Every problem is a one-line ValueError naming
the file. Hidden files and directories (`.DS_Store`, `._a.png`) and the files and
directories that operating systems leave behind (`Thumbs.db`, `desktop.ini`, `__MACOSX/`,
`@eaDir/`; `SYSTEM_NAMES`) are skipped, and left out of the fingerprint; a build that
skips any says so in one log line.
"""

import io
import json
import logging
import pathlib

from etils import epath
import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from lapseg.data import fingerprint as fingerprint_lib
from lapseg.data import images
from lapseg.data import info as info_lib
from lapseg.data.features import image_label_features

SPLIT_DIRS = {"train": "train", "validation": "val", "test": "test"}  # tfds split: directory
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MASK_SUFFIX = ".png"
CLASSES_FILE = "classes.json"
DEFAULT_IGNORE_LABEL = 255
IGNORE_COLOR = (255, 255, 255)  # colour of ignored pixels when the palette has none
LAYOUT = (
    "images/{train,val,test}/*.{png,jpg,jpeg}, masks/{train,val,test}/*.png of equal file "
    "stems, and classes.json"
)
CLASSES_EXAMPLE = '{"names": ["background", "cat"], "ignore_label": 255}'
# Files and directories that file managers and OS features write (lower case), skipped as
# hidden files (names starting with '.') are.
SYSTEM_NAMES = frozenset({
    "thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r",  # Windows, macOS
    "__macosx", "@eadir", "$recycle.bin", "system volume information",  # directories
})

log = logging.getLogger(__name__)


class Folder(fingerprint_lib.SourceBuilder):
    """tfds builder of a local folder: {'image': uint8 [H, W, 3], 'label': uint8 [H, W, 1]}.

    Its builder config, named by `fingerprint(source_dir)`, keys the build directory.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    # As in camvid.py: naming the file skips tfds's `importlib_resources` lookup.
    code_path = epath.Path(__file__)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=image_label_features()
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        info = dataset_info(self._source_dir)
        return {split: self._generate_examples(pairs, info) for split, pairs in
                scan(self._source_dir, report=True).items()}

    def _generate_examples(self, pairs, info):
        for image_path, mask_path in pairs:
            image_bytes, mask_bytes = read_pair(image_path, mask_path, info)
            yield image_path.stem, {"image": image_bytes, "label": mask_bytes}


def _fail(what: str, todo: str):
    raise info_lib.DataError(f"folder: {what}; {todo}")


def dataset_info(source_dir) -> info_lib.DatasetInfo:
    """`DatasetInfo` from `source_dir/classes.json` (image_size None: sizes may vary)."""
    if source_dir is None:
        _fail("dataset 'folder' needs a source directory",
              f"set config.data.source_dir to a directory with {LAYOUT}")
    root = pathlib.Path(source_dir)
    if not root.is_dir():
        _fail(f"source directory {root} does not exist", f"create it with {LAYOUT}")
    path = root / CLASSES_FILE
    if not path.is_file():
        _fail(f"{path} does not exist", f"write it, e.g. {CLASSES_EXAMPLE}")
    try:
        classes = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        _fail(f"{path} is not valid JSON ({err})", f"write e.g. {CLASSES_EXAMPLE}")
    if not isinstance(classes, dict) or set(classes) - {"names", "ignore_label", "palette"}:
        _fail(f"{path} must be an object with keys names, ignore_label (optional) and "
              "palette (optional)", f"write e.g. {CLASSES_EXAMPLE}")
    names = classes.get("names")
    if (not isinstance(names, list) or not 0 < len(names) < 256
            or not all(isinstance(n, str) and n for n in names) or len(set(names)) < len(names)):
        _fail(f"{path}: names must be a list of 1 to 255 distinct non-empty strings",
              "list the class names in class-id order")
    ignore = classes.get("ignore_label", DEFAULT_IGNORE_LABEL)
    if not _is_int(ignore) or not len(names) <= ignore <= 255:
        _fail(f"{path}: ignore_label {ignore!r} is not an integer in {len(names)}..255",
              "use a mask value that no class id takes, e.g. 255")
    return info_lib.DatasetInfo(
        name="folder", num_classes=len(names), ignore_label=ignore, class_names=tuple(names),
        palette=_palette(path, classes.get("palette"), len(names)), image_size=None)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _palette(path, palette, num_classes) -> np.ndarray:
    """uint8 `[C + 1, 3]`: classes.json's palette (ignore colour appended if absent), or VOC's."""
    if palette is None:
        palette = info_lib.pascal_palette(num_classes).tolist()
    valid = (isinstance(palette, list) and len(palette) in (num_classes, num_classes + 1)
             and all(isinstance(row, list) and len(row) == 3
                     and all(_is_int(v) and 0 <= v <= 255 for v in row) for row in palette))
    if not valid:
        _fail(f"{path}: palette must be {num_classes} (or {num_classes + 1}, the last for "
              "ignored pixels) [r, g, b] lists of integers 0..255",
              "fix it or remove it (then classes get the PASCAL VOC colours)")
    rows = palette if len(palette) == num_classes + 1 else [*palette, IGNORE_COLOR]
    return np.array(rows, np.uint8)


def skipped(name: str) -> bool:
    """Whether a file or directory name is hidden (`.DS_Store`) or an OS's (`Thumbs.db`)."""
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


def _files(directory: pathlib.Path, skips: list) -> list[pathlib.Path]:
    """The files directly in `directory`, hidden and system ones left out (and appended to
    `skips`), sorted."""
    files = []
    for path in sorted(directory.iterdir()):
        if skipped(path.name):
            skips.append(path)
        elif path.is_file():
            files.append(path)
    return files


def scan(source_dir, *, report: bool = False) -> dict:
    """`{split: [(image_path, mask_path), ...]}` of `source_dir`, checking the layout only
    (no file is read): every image has a mask and every mask an image, no split is empty,
    `train` exists. Hidden and system files and directories (`skipped`) are left out; with
    `report` (when building), one log line says how many and names the first."""
    root = pathlib.Path(source_dir)
    if not root.is_dir():
        _fail(f"source directory {root} does not exist", f"create it with {LAYOUT}")
    skips = []
    for kind in ("images", "masks"):
        if not (root / kind).is_dir():
            _fail(f"{root / kind} does not exist", f"expected in {root}: {LAYOUT}")
        for path in sorted((root / kind).iterdir()):
            if skipped(path.name):
                skips.append(path)
            elif path.is_dir() and path.name not in SPLIT_DIRS.values():
                _fail(f"{path} is not a split directory",
                      f"name splits {', '.join(SPLIT_DIRS.values())} or move it out")
    if not (root / "images" / "train").is_dir():
        _fail(f"{root / 'images' / 'train'} does not exist", "a folder dataset needs a train split")
    found = {}
    for split, name in SPLIT_DIRS.items():
        image_dir, mask_dir = root / "images" / name, root / "masks" / name
        if image_dir.is_dir() != mask_dir.is_dir():
            present, absent = (image_dir, mask_dir) if image_dir.is_dir() else (mask_dir, image_dir)
            _fail(f"{present} exists but {absent} does not", "add it or remove both")
        if image_dir.is_dir():
            found[split] = _pairs(image_dir, mask_dir, skips)
    if report and skips:
        log.info("folder: skipped %d hidden or system file%s in %s (%s%s)", len(skips),
                 "" if len(skips) == 1 else "s", root, skips[0].relative_to(root).as_posix(),
                 ", ..." if len(skips) > 1 else "")
    return found


def _pairs(image_dir, mask_dir, skips):
    images = {}
    for path in _files(image_dir, skips):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            _fail(f"image {path} is not a .png, .jpg or .jpeg file", "convert it or move it out")
        if path.stem in images:
            _fail(f"images {images[path.stem]} and {path} share the stem {path.stem!r}",
                  "rename or remove one")
        images[path.stem] = path
    if not images:
        _fail(f"{image_dir} holds no images", "add .png/.jpg/.jpeg images or remove the split")
    masks = {}
    for path in _files(mask_dir, skips):
        if path.suffix.lower() != MASK_SUFFIX:
            _fail(f"mask {path} is not a .png file",
                  "save masks as PNG (lossless class ids) or move it out")
        if path.stem not in images:
            _fail(f"mask {path} has no image {image_dir / path.stem}.png/.jpg/.jpeg",
                  "add the image or remove the mask")
        masks[path.stem] = path
    for stem, path in images.items():
        if stem not in masks:
            _fail(f"image {path} has no mask {mask_dir / stem}.png",
                  "add the mask or remove the image")
    return [(images[stem], masks[stem]) for stem in sorted(images)]


def _open(path, what):
    """`(PIL image, decoded in full, the file's bytes)`; an unreadable file fails naming it."""
    data = path.read_bytes()
    try:
        image = PIL.Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, SyntaxError) as err:  # PIL: Unidentified/truncated/corrupt
        reason = " ".join(str(err).split()) or type(err).__name__
        _fail(f"cannot read {what} {path} ({reason})", "replace or remove it")
    return image, data


def _png(array) -> bytes:
    out = io.BytesIO()
    PIL.Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def read_pair(image_path, mask_path, info: info_lib.DatasetInfo) -> tuple[bytes, bytes]:
    """`(image bytes, mask bytes)` to store: an RGB image and its uint8 L mask of equal size.

    Raises:
      ValueError naming the file: unreadable, sizes differ, a colour mask, or a mask value
      neither a class id nor the ignore label.
    """
    image, image_bytes = _open(image_path, "image")
    mask, mask_bytes = _open(mask_path, "mask")
    if image.size != mask.size:
        _fail(f"image {image_path} is {image.height}x{image.width} (HxW) but its mask "
              f"{mask_path} is {mask.height}x{mask.width}", "masks must be their image's size")
    if mask.mode not in ("L", "P", "1", "I", "I;16"):
        _fail(f"mask {mask_path} is {mask.mode}; expected a single-channel PNG of class ids "
              "(mode L or P)", "convert colour masks to class-id maps")
    values = np.asarray(mask).astype(np.int64)
    unique = np.unique(values)
    bad = unique[((unique < 0) | (unique >= info.num_classes)) & (unique != info.ignore_label)]
    if bad.size:
        _fail(f"mask {mask_path} holds value {int(bad[0])}; classes.json allows class ids "
              f"0..{info.num_classes - 1} and the ignore label {info.ignore_label}",
              "fix the mask or classes.json")
    if image.mode != "RGB":
        try:
            image_bytes = _png(images.rgb_array(image, f"image {image_path}"))
        except ValueError as err:
            _fail(str(err), "convert it")
    if mask.mode != "L":
        mask_bytes = _png(values.astype(np.uint8))
    return image_bytes, mask_bytes


def fingerprint(source_dir) -> str:
    """16 hex digits hashing classes.json and every file's relative path, size and mtime
    under `images/` and `masks/` (not the skipped ones): changes whenever the dataset does."""
    return fingerprint_lib.files(source_dir, ("images", "masks"), contents=(CLASSES_FILE,),
                                 skip=skipped)


def builder(data_dir, source_dir) -> Folder:
    """The `Folder` builder of `source_dir` writing ArrayRecord to `data_dir/folder/<fingerprint>`.

    Checks classes.json first (`dataset_info`); the layout and files are checked while
    building, on the first use of this fingerprint.
    """
    dataset_info(source_dir)
    root = pathlib.Path(source_dir).resolve()
    scan(root)  # layout errors before tfds creates anything
    return Folder(data_dir=data_dir, source_dir=root,
                  config=fingerprint_lib.config(fingerprint(root), root), file_format="array_record")
