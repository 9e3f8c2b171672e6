"""Adapters for tfds catalog datasets with segmentation masks.

Preparing these needs TensorFlow (their tfds builders read archives through `tf.io`),
so lapseg only reads them: prepare once with `pip install lapseg[tf]` and
`tfds build <tfds name> --file_format=array_record --data_dir=DIR` (Cityscapes wants its
zips in DIR/downloads/manual first), then pass `data_dir=DIR`.

Not here: PASCAL VOC / SBD (tfds's `voc` has boxes only and tfds has no SBD builder).
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


def _lookup(mapping: dict, ignore_label: int) -> np.ndarray:
    """uint8 `[256]` table: `mapping[value]` where given, `ignore_label` elsewhere."""
    table = np.full(256, ignore_label, np.uint8)
    table[list(mapping)] = list(mapping.values())
    return table


# Cityscapes label ids -> the 19 train ids (cityscapesScripts' labels.py).
_CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
_CITYSCAPES_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic_light",
    "traffic_sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
_CITYSCAPES_PALETTE = np.array(
    [
        [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
        [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
        [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70],
        [0, 60, 100], [0, 80, 100], [0, 0, 230], [119, 11, 32], [0, 0, 0],
    ],
    np.uint8,
)  # fmt: skip

# tfds's scene_parse150 stores the ADE20K instance annotations (ChallengeData2017
# annotations_instance): the R channel is the category id 1..100, 0 unlabelled.
_ADE_INSTANCE_CLASSES = 100

CATALOG = {
    "cityscapes": CatalogEntry(
        tfds_name="cityscapes/semantic_segmentation",
        image_key="image_left",
        label_key="segmentation_label",
        label_channel=0,
        label_map=_lookup(_CITYSCAPES_TRAIN_IDS, 255),
        info=info_lib.DatasetInfo(
            name="cityscapes",
            num_classes=19,
            ignore_label=255,
            class_names=_CITYSCAPES_NAMES,
            palette=_CITYSCAPES_PALETTE,
            image_size=(1024, 2048),
        ),
    ),
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
    "scene_parse150": CatalogEntry(
        tfds_name="scene_parse150",
        image_key="image",
        label_key="annotation",
        label_channel=0,
        label_map=_lookup({v: v - 1 for v in range(1, _ADE_INSTANCE_CLASSES + 1)}, 255),
        info=info_lib.DatasetInfo(
            name="scene_parse150",
            num_classes=_ADE_INSTANCE_CLASSES,
            ignore_label=255,
            class_names=tuple(f"category_{i}" for i in range(1, _ADE_INSTANCE_CLASSES + 1)),
            palette=np.concatenate(
                [info_lib.pascal_palette(_ADE_INSTANCE_CLASSES + 1)[1:], [[255, 255, 255]]]
            ).astype(np.uint8),
            image_size=None,
        ),
    ),
}


def open_source(name: str, split: str, data_dir):
    """The prepared tfds data source of catalog dataset `name`, split `split`, in `data_dir`.

    Returns:
      (tfds random-access source of raw tfds examples, its `CatalogEntry`).

    Raises:
      FileNotFoundError: the dataset is not prepared in `data_dir` (says how to prepare it).
      ValueError: it is prepared, but not as ArrayRecord.
    """
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
    return builder.as_data_source(split=split, file_format="array_record"), entry
