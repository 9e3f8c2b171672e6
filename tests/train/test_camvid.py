"""CamVid end to end: tfds build from the local copy, a few training steps, evaluation.

Skipped when ../shared/data/camvid is absent. A toy model keeps it cheap; the loop, data
pipeline and evaluation are the real ones."""

import ml_collections
import numpy as np
import pytest

from lapseg import models
from lapseg.train import loop
from lapseg.train.config import base_config


@pytest.fixture(autouse=True)
def toy_model(monkeypatch):
    monkeypatch.setitem(models._MODELS, "toy", "tests.train.toy:toy")  # pylint: disable=protected-access


def test_camvid_trains_and_evaluates(camvid_dir, tmp_path):
    config = base_config()
    config.model = "toy"
    config.model_kwargs = ml_collections.ConfigDict({"width": 4})
    config.loss.weights = {"logits": 1.0}
    config.data.dataset = "camvid"
    config.data.source_dir = str(camvid_dir)
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.crop_size = (90, 120)  # reduced resolution
    config.data.batch_size = 8
    config.data.eval_size = (384, 480)
    config.num_train_steps = 3
    config.log_every_steps = 1
    config.checkpoint_every_steps = 3
    result = loop.train_and_evaluate(config, str(tmp_path / "work"))
    assert result["step"] == 3
    assert result["per_class_iou"].shape == (11,)
    assert 0.0 <= result["pixel_accuracy"] <= 1.0
    assert np.isfinite(result["miou"])
