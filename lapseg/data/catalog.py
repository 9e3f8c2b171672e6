"""Adapters for tfds catalog datasets with segmentation masks (`oxford_iiit_pet`).

Preparing these needs TensorFlow (their tfds builders read archives through `tf.io`),
so lapseg only reads them: prepare once with `pip install lapseg[tf]` and
`tfds build <tfds name> --file_format=array_record --data_dir=DIR`, then pass
`data_dir=DIR`. Cityscapes, PASCAL VOC (+ SBD) and ADE20K are read from their own folders
instead, without TensorFlow (`lapseg.data.cityscapes`, `voc`, `ade20k`).
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from lapseg.data import info as info_lib


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    """How to read one tfds dataset as {'image', 'label'}.

    Attributes:
      tfds_name: name (and config) in the tfds catalog.
      image_key, label_key: feature names of the RGB image and the label map.
      label_channel: channel of the label feature holding the class id.
      label_map: uint8 `[256]` lookup table from stored values to class ids (or the ignore
        label), or None when the stored values are the class ids already.
      info: the `DatasetInfo` of the mapped labels.
    """

    tfds_name: str
    image_key: str
    label_key: str
    label_channel: int
    label_map: np.ndarray | None
    info: info_lib.DatasetInfo

    def standardize(self, example: dict) -> dict:
        """tfds example -> {'image': uint8 [H, W, 3], 'label': uint8 [H, W]}."""
        label = example[self.label_key][..., self.label_channel]
        if self.label_map is not None:
            label = self.label_map[label]
        return {"image": example[self.image_key], "label": label}

    def raw(self, example: dict) -> dict:
        """tfds example read without decoding -> {'image', 'label'}: the stored bytes."""
        return {"image": example[self.image_key], "label": example[self.label_key]}


def _lookup(mapping: dict, ignore_label: int) -> np.ndarray:
    """uint8 `[256]` table: `mapping[value]` where given, `ignore_label` elsewhere."""
    table = np.full(256, ignore_label, np.uint8)
    table[list(mapping)] = list(mapping.values())
    return table


CATALOG = {
    # Trimap 1 pet, 2 background, 3 border (ignored).
    "oxford_iiit_pet": CatalogEntry(
        tfds_name="oxford_iiit_pet",
        image_key="image",
        label_key="segmentation_mask",
        label_channel=0,
        label_map=_lookup({1: 1, 2: 0}, 255),
        info=info_lib.DatasetInfo(
            name="oxford_iiit_pet",
            num_classes=2,
            ignore_label=255,
            class_names=("background", "pet"),
            palette=np.array([[0, 0, 0], [255, 128, 0], [255, 255, 255]], np.uint8),
            image_size=None,
        ),
    ),
}


def split_names(name: str, data_dir) -> tuple[str, ...]:
    """The splits of catalog dataset `name` as prepared in `data_dir`."""
    return tuple(_prepared(name, data_dir).info.splits)


def open_source(name: str, split: str, data_dir, *, decode: bool = True):
    """The prepared tfds data source of catalog dataset `name`, split `split`, in `data_dir`.

    `decode` False: the image and label features are read as their stored bytes.

    Returns:
      (tfds random-access source of raw tfds examples, its `CatalogEntry`).

    Raises:
      FileNotFoundError: the dataset is not prepared in `data_dir` (says how to prepare it).
      ValueError: it is prepared, but not as ArrayRecord.
    """
    entry = CATALOG[name]
    builder = _prepared(name, data_dir)
    skip = {entry.image_key: tfds.decode.SkipDecoding(), entry.label_key: tfds.decode.SkipDecoding()}
    return builder.as_data_source(split=split, file_format="array_record",
                                  decoders=None if decode else skip), entry


def _prepared(name, data_dir):
    """The builder of catalog dataset `name`, prepared as ArrayRecord in `data_dir`."""
    entry = CATALOG[name]
    builder = tfds.builder(entry.tfds_name, data_dir=data_dir)
    prepare = (
        f"`pip install lapseg[tf]` and run `tfds build {entry.tfds_name} "
        f"--file_format=array_record --data_dir={data_dir}` (or pass the data_dir of such a build)"
    )
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"{name}: tfds dataset {entry.tfds_name} is not prepared in {data_dir} "
            f"(looked for {builder.data_path}); preparing it needs TensorFlow: {prepare}"
        )
    if tfds.core.file_adapters.FileFormat.ARRAY_RECORD not in builder.info.available_file_formats():
        raise ValueError(
            f"{name}: {builder.data_path} holds {builder.info.file_format.value} files; reading "
            f"without TensorFlow needs ArrayRecord: {prepare}"
        )
    return builder
