"""Datasets by name: `dataset_info(name, source_dir)`, `splits(...)`, `load_source(...)`.

Names: `shapes` (or `shapes/<config>`, see `lapseg.data.shapes`), `camvid`, `folder`
(your own images and masks in `source_dir`, see `lapseg.data.folder`), the standard
datasets read from the folders their authors ship (`cityscapes`, `voc`, `ade20k`: see
`lapseg.data.local`), and the prepared tfds catalog datasets of `lapseg.data.catalog`.

Split names: `train`, `val` and `test` where a dataset has them (plus VOC's `trainval`
and `train_aug`); `validation` is accepted for `val` everywhere, and tfds slices such
as `val[:50]` work too.
"""

import contextlib
import errno
import io
import logging

import grain
import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from lapseg.data import ade20k, camvid, catalog, cityscapes, folder, shapes, voc
from lapseg.data import info as info_lib
from lapseg.data.info import DataError

# Datasets read from their own folders, one split at a time: name -> module with
# `dataset_info()`, `reader(source_dir, **options)` and `builder(data_dir, source_dir,
# split, **options)` (`lapseg.data.local`).
READERS = {"cityscapes": cityscapes, "voc": voc, "ade20k": ade20k}
VAL = "val"
_VAL_ALIASES = ("val", "validation")  # tfds builders of lapseg (shapes, camvid, folder) and
# catalog datasets call it `validation`; the readers call it `val`.


def names() -> tuple[str, ...]:
    """The dataset names `load_source` accepts (besides `shapes/<config>`)."""
    return ("shapes", "camvid", "folder", *READERS, *catalog.CATALOG)


def dataset_info(name: str, source_dir=None) -> info_lib.DatasetInfo:
    """Classes, ignore label, palette and typical image size of dataset `name`.

    `source_dir`: `folder` reads its `classes.json` (required there); others ignore it,
    so callers may always pass `config.data.source_dir`.
    """
    base, _, config = name.partition("/")
    if base == "shapes":
        return shapes.dataset_info(config or None)
    if name == "camvid":
        return camvid.dataset_info()
    if name == "folder":
        return folder.dataset_info(source_dir)
    if name in READERS:
        return READERS[name].dataset_info()
    if name in catalog.CATALOG:
        return catalog.CATALOG[name].info
    raise DataError(f"unknown dataset {name!r}; choose from {', '.join(names())}")


def _check_options(name, source_dir, sbd_dir):
    dataset_info(name, source_dir)  # Rejects unknown names and a bad classes.json.
    if source_dir is not None and name not in ("camvid", "folder", *READERS):
        raise DataError(f"source_dir is for camvid, folder, {', '.join(READERS)} only, "
                        f"not {name!r}")
    if sbd_dir is not None and name != "voc":
        raise DataError(f"sbd_dir is for voc only, not {name!r}")


def _tfds_builder(name, data_dir, source_dir):
    """The prepared builder of a dataset lapseg generates or converts whole (all splits)."""
    base, _, config = name.partition("/")
    if base == "shapes":
        builder = shapes.builder(data_dir, config or None)
    elif name == "folder":
        builder = folder.builder(data_dir, source_dir)
    else:
        builder = camvid.builder(data_dir, source_dir)
    builder.download_and_prepare(file_format="array_record")
    return builder


def _converting(function, *args, data_dir=None, **kwargs):
    """`function(...)`, its anticipated failures as one-line `DataError`s (a write failure,
    e.g. a full disk, names the build's `data_dir`)."""
    try:  # the source's own checks name the file (folder, camvid, readers); tfds adds nothing
        return function(*args, **kwargs)
    except DataError:
        raise
    except OSError as err:  # incl. FileNotFoundError, ConnectionError
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES) and data_dir:
            raise DataError(f"cannot write the dataset build in {data_dir} ({err.strerror}); "
                            "free disk space or pass a writable --config.data.data_dir") from err
        raise DataError(" ".join(str(err).split())) from err
    except ValueError as err:
        raise DataError(" ".join(str(err).split())) from err


def _canonical(split_name: str) -> str:
    return VAL if split_name in _VAL_ALIASES else split_name


def _stored_split(name, split, available) -> str:
    """`split` as the dataset stores it (`val` <-> `validation`), or a `DataError`
    listing the splits it has."""
    split_name, bracket, rest = split.partition("[")
    for candidate in ((split_name, *_VAL_ALIASES) if split_name in _VAL_ALIASES
                      else (split_name,)):
        if candidate in available:
            return candidate + bracket + rest
    listed = ", ".join(_canonical(s) for s in available)
    raise DataError(f"{name} has no split {split_name!r}; it has {listed}")


def splits(name: str, *, data_dir, source_dir=None, sbd_dir=None) -> tuple[str, ...]:
    """The split names dataset `name` has, `val` for its validation split (which
    `load_source` also accepts as `validation`). Builds nothing but what `load_source`
    would build for `train` (a `shapes`, `camvid` or `folder` dataset is built whole)."""
    _check_options(name, source_dir, sbd_dir)
    if name in READERS:
        options = {"sbd_dir": sbd_dir} if name == "voc" else {}
        return _converting(lambda: READERS[name].reader(source_dir, **options).split_names())
    if name in catalog.CATALOG:
        return tuple(_canonical(s) for s in _converting(catalog.split_names, name, data_dir))
    builder = _converting(_tfds_builder, name, data_dir, source_dir, data_dir=data_dir)
    return tuple(_canonical(s) for s in builder.info.splits)


def location(data_config) -> dict:
    """`data_dir`, `source_dir` and `sbd_dir` of a data config (`config.data`): where
    `splits` and `load_source` find a dataset."""
    return {key: data_config.get(key, None) for key in ("data_dir", "source_dir", "sbd_dir")}


def has_split(name: str, split: str, **kwargs) -> bool:
    """Whether dataset `name` has `split` (`val` and `validation` are one)."""
    available = splits(name, **kwargs)
    return _canonical(split.partition("[")[0]) in available


def load_source(name: str, split: str, *, data_dir, source_dir=None, sbd_dir=None,
                decode: bool = True) -> grain.MapDataset:
    """Random-access source of one split, built into `data_dir` on first use.

    `shapes` is generated, `camvid` converted from `source_dir` (downloaded when None),
    `folder` from `source_dir`, and `cityscapes`, `voc`, `ade20k` one split at a time from
    the folders their authors ship (`source_dir`, and `sbd_dir` for VOC's `train_aug`),
    into ArrayRecord files under `data_dir` the first time; later calls only open them
    (a changed source is rebuilt). Catalog datasets must already be prepared in
    `data_dir` (see `lapseg.data.catalog`).

    Args:
      name: dataset name, see `names()`.
      split: a split the dataset has (`splits`), e.g. `'train'` or `'val'` (or
        `'validation'`); tfds slices such as `'val[:100]'` work too.
      data_dir: tfds data directory.
      source_dir: camvid: local directory with the raw CamVid PNGs (optional); folder,
        cityscapes, voc, ade20k: the dataset's root folder (required).
      sbd_dir: voc only: SBD's `benchmark_RELEASE`, for the split `train_aug`.
      decode: False: `{'image', 'label'}` hold the stored PNG/JPEG bytes, not arrays
        (e.g. to read image sizes from the headers, `image_sizes`).

    Returns:
      A `grain.MapDataset` (len, indexing) of dicts `{'image': uint8 [H, W, 3],
      'label': uint8 [H, W]}`, labels holding class ids and the dataset's ignore label.
    """
    _check_options(name, source_dir, sbd_dir)
    if name in catalog.CATALOG:
        split = _stored_split(name, split, _converting(catalog.split_names, name, data_dir))
        source, entry = _converting(catalog.open_source, name, split, data_dir, decode=decode)
        return grain.MapDataset.source(source).map(entry.standardize if decode else entry.raw)
    if name in READERS:
        split_name, bracket, rest = split.partition("[")
        options = {"sbd_dir": sbd_dir} if name == "voc" else {}
        builder = _converting(READERS[name].builder, data_dir, source_dir,
                              _canonical(split_name), **options)
        _converting(builder.download_and_prepare, file_format="array_record", data_dir=data_dir)
        split = _canonical(split_name) + bracket + rest
    else:
        builder = _converting(_tfds_builder, name, data_dir, source_dir, data_dir=data_dir)
        split = _stored_split(name, split, list(builder.info.splits))
    skip = {"image": tfds.decode.SkipDecoding(), "label": tfds.decode.SkipDecoding()}
    source = _CheckedSource(builder.as_data_source(split=split, decoders=None if decode else skip),
                            builder.data_dir)
    if len(source):
        with _without_opencv_hint():
            source[0]  # pylint: disable=pointless-statement  (a cut file fails here, at the door)
    return grain.MapDataset.source(source).map(_squeeze_label if decode else _raw)


class _OpenCVHint(logging.Filter):
    """Drops tfds' "OpenCV is not installed ... Defaulting to PIL" (absl, once per process)."""

    def filter(self, record):
        return "OpenCV is not installed" not in record.getMessage()


@contextlib.contextmanager
def _without_opencv_hint():
    """The first decode of a process, quiet: tfds then advises OpenCV once (`log_first_n`,
    whose count runs out here whether or not the record is shown). lapseg decodes with
    PIL, which tfds falls back to; the hint is no problem for the user to act on. The
    filter is on the 'absl' logger only for this block."""
    absl_logger, hint = logging.getLogger("absl"), _OpenCVHint()
    absl_logger.addFilter(hint)
    try:
        yield
    finally:
        absl_logger.removeFilter(hint)


def image_sizes(source) -> np.ndarray:
    """int `[N, 2]` (height, width) of each image of an undecoded source
    (`load_source(..., decode=False)`), read from the PNG/JPEG headers only."""
    sizes = np.zeros((len(source), 2), np.int64)
    for index in range(len(source)):
        width, height = PIL.Image.open(io.BytesIO(source[index]["image"])).size
        sizes[index] = height, width
    return sizes


def _raw(example: dict) -> dict:
    return {"image": example["image"], "label": example["label"]}


class _CheckedSource:
    """A tfds data source whose read errors (a cut or corrupt ArrayRecord file) are
    `DataError`s naming the build directory and how to rebuild it."""

    def __init__(self, source, directory):
        self._source, self._directory = source, directory

    def __len__(self):
        return len(self._source)

    def __getitem__(self, index):
        try:
            return self._source[index]
        except (RuntimeError, OSError) as err:
            raise self._error(index, err) from err

    def __getitems__(self, indices):
        try:
            return self._source.__getitems__(indices)
        except (RuntimeError, OSError) as err:
            raise self._error(indices[0] if len(indices) else 0, err) from err

    def _error(self, index, err) -> DataError:  # array_record / riegeli read errors
        first = " ".join(str(err).split())[:200]
        return DataError(f"cannot read record {index} of the dataset build in {self._directory} "
                         f"({first}): the file is cut or corrupt; delete {self._directory} and "
                         f"run again to rebuild it")

    def __repr__(self):
        return f"_CheckedSource({self._source!r})"


def _squeeze_label(example: dict) -> dict:
    return {"image": example["image"], "label": np.squeeze(example["label"], -1)}
