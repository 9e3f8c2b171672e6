"""Datasets by name: `dataset_info(name, source_dir)` and `load_source(name, split, ...)`.

Names: `shapes` (or `shapes/<config>`, see `lapseg.data.shapes`), `camvid`, `folder`
(your own images and masks in `source_dir`, see `lapseg.data.folder`), and the tfds
catalog adapters of `lapseg.data.catalog` (`cityscapes`, `oxford_iiit_pet`,
`scene_parse150`).
"""

import grain
import numpy as np

from lapseg.data import camvid, catalog, folder, shapes
from lapseg.data import info as info_lib
from lapseg.data.info import DataError


def names() -> tuple[str, ...]:
    """The dataset names `load_source` accepts (besides `shapes/<config>`)."""
    return ("shapes", "camvid", "folder", *catalog.CATALOG)


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
    if name in catalog.CATALOG:
        return catalog.CATALOG[name].info
    raise DataError(f"unknown dataset {name!r}; choose from {', '.join(names())}")


def load_source(name: str, split: str, *, data_dir, source_dir=None) -> grain.MapDataset:
    """Random-access source of one split, built into `data_dir` on first use.

    `shapes` is generated, `camvid` converted from `source_dir` (downloaded when None) and
    `folder` from `source_dir` into ArrayRecord files under `data_dir` the first time;
    later calls only open them (`folder` rebuilds when the folder's files change).
    Catalog datasets must already be prepared in `data_dir` (see `lapseg.data.catalog`).

    Args:
      name: dataset name, see `names()`.
      split: `'train'`, `'validation'` or `'test'` (what the dataset has); tfds slices
        such as `'train[:100]'` work too.
      data_dir: tfds data directory.
      source_dir: camvid: local directory with the raw CamVid PNGs (optional); folder:
        the directory of images/, masks/ and classes.json (required).

    Returns:
      A `grain.MapDataset` (len, indexing) of dicts `{'image': uint8 [H, W, 3],
      'label': uint8 [H, W]}`, labels holding class ids and the dataset's ignore label.
    """
    dataset_info(name, source_dir)  # Rejects unknown names and a bad classes.json.
    if source_dir is not None and name not in ("camvid", "folder"):
        raise DataError(f"source_dir is for camvid and folder only, not {name!r}")
    if name in catalog.CATALOG:
        source, entry = catalog.open_source(name, split, data_dir)
        return grain.MapDataset.source(source).map(entry.standardize)
    base, _, config = name.partition("/")
    try:  # the source's own checks name the file (folder, camvid); tfds adds nothing
        if base == "shapes":
            builder = shapes.builder(data_dir, config or None)
        elif name == "folder":
            builder = folder.builder(data_dir, source_dir)
        else:
            builder = camvid.builder(data_dir, source_dir)
        builder.download_and_prepare(file_format="array_record")
    except DataError:
        raise
    except (ValueError, OSError) as err:  # incl. FileNotFoundError, ConnectionError
        raise DataError(" ".join(str(err).split())) from err
    split_name = split.partition("[")[0]
    if split_name not in builder.info.splits:
        raise DataError(
            f"{name} has no split {split_name!r}; it has {', '.join(builder.info.splits)}"
        )
    source = _CheckedSource(builder.as_data_source(split=split), builder.data_dir)
    if len(source):
        source[0]  # pylint: disable=pointless-statement  (a cut file fails here, at the door)
    return grain.MapDataset.source(source).map(_squeeze_label)


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
