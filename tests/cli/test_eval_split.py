"""`lapseg eval --split=test`: a CamVid-layout directory with a test split (synthetic
360x480 PNGs, so no data is needed), a 2-step toy run on it, then evaluation of each split
by name; a split the dataset lacks is a one-line error listing those it has."""

import json

import numpy as np
import PIL.Image
import pytest

from lapseg.train import loop
from tests.cli import helpers
from tests.cli.helpers import run
from tests.train import toy

COUNTS = {"train": 4, "val": 2, "test": 3}
SIZE = (360, 480)  # CamVid's (H, W)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A toy run trained on a synthetic CamVid directory holding train, val and test."""
    root = tmp_path_factory.mktemp("split")
    rng = np.random.default_rng(0)
    for split, count in COUNTS.items():
        (root / "camvid" / split).mkdir(parents=True)
        (root / "camvid" / f"{split}annot").mkdir()
        for i in range(count):
            image = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
            label = rng.integers(0, 12, SIZE, dtype=np.uint8)  # classes 0..10, void 11
            PIL.Image.fromarray(image).save(root / "camvid" / split / f"{split}{i}.png")
            PIL.Image.fromarray(label).save(root / "camvid" / f"{split}annot" / f"{split}{i}.png")
    config = toy.tiny_config(str(root / "tfds"), steps=2)
    config.data.dataset = "camvid"
    config.data.source_dir = str(root / "camvid")
    config.data.eval_size = (384, 480)
    with pytest.MonkeyPatch.context() as patch:
        helpers.register_toy(patch)
        assert loop.train_and_evaluate(config, str(root / "w"))["step"] == 2
    return root / "w"


def test_eval_of_the_test_split(workdir):
    assert run("eval", "--workdir", workdir, "--split=test") == 0
    result = json.loads((workdir / "eval_test.json").read_text())
    assert (result["split"], result["num_images"], result["step"]) == ("test", COUNTS["test"], 2)
    assert len(result["per_class_iou"]) == 11


def test_eval_of_a_missing_split_lists_the_splits(workdir):
    message = run("eval", "--workdir", workdir, "--split=training")
    assert isinstance(message, str) and "\n" not in message, message
    assert "no split 'training'; it has train, val, test" in message
    assert message.endswith("pass a --split the dataset has")
