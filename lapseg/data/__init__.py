"""Datasets and the grain input pipeline.

    from lapseg import data
    info = data.dataset_info('shapes')           # classes, ignore label, palette, size
    data.splits('voc', data_dir=DIR, source_dir=VOC, sbd_dir=SBD)  # ('train', 'val', ...)
    source = data.load_source('shapes', 'train', data_dir=DIR)   # source[i]: image, label
    loader = data.create_loader(config, 'train', data_dir=DIR, seed=0, train=True)

Datasets are tfds builders writing ArrayRecord, read through tfds data sources and
grain without TensorFlow: `shapes` (generated, the default), `camvid` (local directory
or download), `folder` (your own images and masks, `lapseg.data.folder`), Cityscapes,
PASCAL VOC (+ SBD) and ADE20K from the folders their authors ship (`lapseg.data.local`)
and prepared tfds catalog datasets (`catalog.CATALOG`).
"""

from lapseg.data.info import DataError, DatasetInfo
from lapseg.data.pipeline import checkpoint_args, create_loader, default_config
from lapseg.data.sources import (VAL, dataset_info, image_sizes, load_source, location,
                                 names, splits)

__all__ = [
    "DataError",
    "DatasetInfo",
    "checkpoint_args",
    "create_loader",
    "dataset_info",
    "default_config",
    "image_sizes",
    "load_source",
    "location",
    "names",
    "splits",
    "VAL",
]
