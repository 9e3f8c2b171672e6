"""`config.data.min_short_edge` reaches the training crops (`pipeline._train_batches` ->
`augment.TrainCrop`): RefineNet's enlargement of images whose short edge is shorter
(`augment.enlarged_size`; its arithmetic is tested in tests/data/test_augment.py)."""

import types

import grain
import numpy as np

from lapseg import data
from lapseg.data import pipeline

HEIGHT, WIDTH = 8, 12


def _batches(min_short_edge, count=4):
    """Training batches of whole 8 x 12 crops at scale 1, no flips, from four examples whose
    labels hold 96 distinct ids (one per pixel)."""
    label = np.arange(HEIGHT * WIDTH, dtype=np.uint8).reshape(HEIGHT, WIDTH)
    rng = np.random.default_rng(0)
    examples = [{"image": rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8),
                 "label": label} for _ in range(4)]
    settings = dict(data.default_config().items())
    settings.update(crop_size=(HEIGHT, WIDTH), scale_range=(1.0, 1.0), flip=False,
                    min_short_edge=min_short_edge)
    info = types.SimpleNamespace(name="toy", image_size=(HEIGHT, WIDTH), ignore_label=255)
    shard = grain.MapDataset.source(examples).seed(0)
    batches = pipeline._train_batches(shard, info, settings, batch_size=2)  # pylint: disable=protected-access
    iterator = iter(batches)
    return [next(iterator) for _ in range(count)]


def test_default_is_off():
    assert data.default_config().min_short_edge is None


def test_min_short_edge_enlarges_the_training_images():
    label = np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH)
    # Off, or a short edge already long enough: every crop is the whole image.
    for value in (None, HEIGHT):
        for batch in _batches(value):
            np.testing.assert_array_equal(batch["label"], np.stack([label, label]))
    # Short edge 16: the pair is enlarged x2 to 16 x 24 before the 8 x 12 crop, so each crop
    # is a quarter of the image at twice the size: at most 5 x 7 of the 96 ids, each in
    # 2 x 2 blocks (nearest).
    for batch in _batches(16):
        for crop in batch["label"]:
            ids = np.unique(crop)
            assert len(ids) <= 5 * 7 and set(ids) <= set(label.ravel())
            rows = {tuple(np.unique(crop[i])) for i in range(HEIGHT)}
            assert len(rows) <= 5
