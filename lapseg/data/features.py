"""The tfds features of lapseg's own builders (`shapes`, `camvid`, `folder`)."""

import tensorflow_datasets as tfds


def image_label_features(height: int | None = None,
                         width: int | None = None) -> tfds.features.FeaturesDict:
    """`{'image': uint8 [H, W, 3], 'label': uint8 [H, W, 1]}`, both PNG-encoded images.

    `height` / `width`: a fixed image size, or None (default) for images of any size.
    """
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(height, width, 3)),
            "label": tfds.features.Image(shape=(height, width, 1)),
        }
    )
