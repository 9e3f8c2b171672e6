"""One split of a dataset on disk, in the layout its authors ship, built into ArrayRecord.

A `Reader` knows one layout (`lapseg.data.cityscapes`, `voc`, `ade20k`): which splits a
root directory holds, the `Pair`s of a split (image file, label file) and how to decode a
label file into class ids. `PairBuilder` is the tfds builder that turns one split of a
reader into ArrayRecord files, without TensorFlow:

    data_dir/<dataset>/<split>-<fingerprint>/1.0.0/

The fingerprint hashes the dataset's reader options and the relative path, size and
mtime of every file the split uses (`fingerprint`), so an edited, added or removed file
gives a new build and an unchanged split reuses its build without reading a file. Each
split is built on its first use, alone: training on VOC `train_aug` never builds `val`.

Every pair is checked while it is built (both files decode in full, same size, label
values in the dataset's range) and every problem is a `DataError` naming the file. Images
are stored as their files' bytes when they are RGB JPEG or PNG (no re-encoding); labels
are stored as 8-bit PNGs of mapped class ids, the ignore label where the dataset ignores.
Pairs are read and checked in a thread pool (PIL decodes without the GIL).
"""

import concurrent.futures
import dataclasses
import hashlib
import io
import os
import pathlib
from collections.abc import Iterable, Iterator

from etils import epath
import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from lapseg.data import images as images_lib
from lapseg.data import info as info_lib
from lapseg.data.features import image_label_features

BUILD_THREADS = max(1, min(8, os.cpu_count() or 1))  # pairs read and checked at once


@dataclasses.dataclass(frozen=True)
class Pair:
    """One example: its key, its image file and the file its label comes from."""

    key: str
    image: pathlib.Path
    label: pathlib.Path


class Reader:
    """A dataset layout on disk under `root`. Subclasses set `name` and implement
    `split_names`, `pairs` and `read_label`.

    Instances must pickle: tfds pickles the builder that holds one.
    """

    name: str = ""

    def __init__(self, root):
        self.root = pathlib.Path(root)

    def split_names(self) -> tuple[str, ...]:
        """The splits present on disk (e.g. `('train', 'val')`), checking the layout only."""
        raise NotImplementedError

    def pairs(self, split: str) -> list[Pair]:
        """The split's pairs, sorted by key; `DataError` naming the file for a missing one."""
        raise NotImplementedError

    def read_label(self, path: pathlib.Path) -> np.ndarray:
        """uint8 `[H, W]` class ids and the ignore label; `DataError` naming `path`."""
        raise NotImplementedError

    def options(self, split: str) -> str:
        """What else decides the split's content besides its files (e.g. the SBD root)."""
        del split
        return ""

    def extra_files(self, split: str) -> tuple[pathlib.Path, ...]:
        """Files besides the pairs that decide the split (e.g. its list file)."""
        del split
        return ()

    def fail(self, what: str, todo: str):
        raise info_lib.DataError(f"{self.name}: {what}; {todo}")

    def present_splits(self, root, required, splits: dict, setting: str, layout: str):
        """The names of `splits` (`{name: folder under root}`) whose folder exists, after
        checking that every one of `required` (folders under `root`) does; `DataError`s say
        to set `setting` to a folder holding `layout`."""
        root = pathlib.Path(root)
        for folder in required:
            if not (root / folder).exists():
                self.fail(f"{root / folder} does not exist",
                          f"set config.data.{setting} to the folder holding {layout}")
        found = tuple(name for name, folder in splits.items() if (root / folder).exists())
        if not found:
            self.fail(f"{root} holds none of {', '.join(map(str, splits.values()))}",
                      f"expected {layout}")
        return found


def fingerprint(reader: Reader, split: str, pairs: Iterable[Pair], extra_files=()) -> str:
    """16 hex digits hashing the reader, the split, and the path, size and mtime of every
    file of `pairs` (and `extra_files`, e.g. split lists)."""
    digest = hashlib.sha256(f"{reader.name}\0{split}\0{reader.options(split)}\n".encode())
    paths = [p for pair in pairs for p in (pair.image, pair.label)] + list(extra_files)
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def open_image(reader: Reader, path: pathlib.Path, what: str) -> tuple[PIL.Image.Image, bytes]:
    """`(decoded PIL image, the file's bytes)`; an unreadable file fails naming it."""
    try:
        data = path.read_bytes()
        image = PIL.Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, SyntaxError) as err:  # PIL: unidentified/truncated/corrupt
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        reader.fail(f"cannot read {what} {path} ({reason})", "replace or remove it")
    return image, data


def png(array: np.ndarray) -> bytes:
    """`array` (uint8 `[H, W]` or `[H, W, 3]`) as PNG bytes."""
    out = io.BytesIO()
    PIL.Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def check_label_values(reader: Reader, path, values: np.ndarray, valid: np.ndarray,
                       describe: str) -> None:
    """Fails naming `path` if `values` holds an entry outside the sorted ids `valid`."""
    unique = np.unique(values)
    bad = unique[~np.isin(unique, valid)]
    if bad.size:
        reader.fail(f"label {path} holds id {int(bad[0])}, outside the dataset's range "
                    f"({describe})", "fix or remove the file")


def read_pair(reader: Reader, pair: Pair) -> dict:
    """The stored example of `pair`: `{'image': RGB PNG/JPEG bytes, 'label': L PNG bytes}`."""
    image, image_bytes = open_image(reader, pair.image, "image")
    label = reader.read_label(pair.label)
    if label.shape != (image.height, image.width):
        reader.fail(f"image {pair.image} is {image.height}x{image.width} (HxW) but its label "
                    f"{pair.label} is {label.shape[0]}x{label.shape[1]}",
                    "labels must have their image's size")
    if image.mode != "RGB" or image.format not in ("JPEG", "PNG"):
        try:
            image_bytes = png(images_lib.rgb_array(image, f"image {pair.image}"))
        except ValueError as err:
            reader.fail(str(err), "convert it")
    return {"image": image_bytes, "label": png(label)}


class PairBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """tfds builder of one split of a `Reader`: {'image': uint8 [H, W, 3], 'label': uint8
    [H, W, 1]}; sizes vary. Subclasses set `name` (the build directory's name)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    # As in camvid.py: naming a file skips tfds's `importlib_resources` lookup.
    code_path = epath.Path(__file__)

    def __init__(self, *, reader: Reader, split: str, pairs=None, config_name: str, **kwargs):
        self._reader, self._split, self._pairs = reader, split, pairs
        super().__init__(config=tfds.core.BuilderConfig(
            name=config_name, description=f"{reader.name} {split}"), **kwargs)
        # tfds pickles a builder as the constructor arguments it recorded, without ours.
        self._original_state.update(reader=reader, split=split, pairs=None,
                                    config_name=config_name)

    def _create_builder_config(self, builder_config, version):
        del version  # a fingerprint config is never among BUILDER_CONFIGS: use it as given
        return builder_config

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, description=__doc__,
                                     features=image_label_features())

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        pairs = self._pairs if self._pairs is not None else self._reader.pairs(self._split)
        return {self._split: self._generate_examples(pairs)}

    def _generate_examples(self, pairs) -> Iterator:
        with concurrent.futures.ThreadPoolExecutor(BUILD_THREADS) as pool:
            window = 4 * BUILD_THREADS  # bounded read-ahead, in order
            pending = []
            for pair in pairs:
                pending.append((pair.key, pool.submit(read_pair, self._reader, pair)))
                if len(pending) >= window:
                    key, future = pending.pop(0)
                    yield key, future.result()
            for key, future in pending:
                yield key, future.result()


def builder(builder_class, reader: Reader, split: str, *, data_dir) -> PairBuilder:
    """The builder of `split` of `reader` in `data_dir`, keyed by the split's fingerprint.

    Raises `DataError` for an unknown split, a missing file or an empty split (nothing
    is created then).
    """
    available = reader.split_names()
    if split not in available:
        raise info_lib.DataError(f"{reader.name} has no split {split!r}; it has "
                                 f"{', '.join(available)}")
    pairs = reader.pairs(split)
    if not pairs:
        reader.fail(f"split {split} is empty", "check the split's folder or list file")
    name = f"{split}-{fingerprint(reader, split, pairs, reader.extra_files(split))}"
    return builder_class(reader=reader, split=split, pairs=pairs, config_name=name,
                         data_dir=data_dir, file_format="array_record")
