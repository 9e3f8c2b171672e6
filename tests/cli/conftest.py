"""Fixtures of the command tests: the toy model, one shapes build for the session, and one
tiny trained FCN-8s shapes-job work dir for the session."""

import pytest

from lapseg.train import config as config_lib
from tests.cli import helpers

# The FCN-8s shapes job (configs/shapes_fcn8s.py) made tiny: narrower and shorter.
TINY_DEFAULT_JOB = '''
from lapseg.train.config import shapes_job


def get_config():
    config = shapes_job("fcn8s")
    config.model_kwargs.backbone_kwargs.width = 0.125
    config.data.data_dir = {data_dir!r}
    config.data.crop_size = (32, 32)
    config.data.batch_size = 8
    config.num_train_steps = 40
    config.optimizer.warmup_steps = 1
    return config
'''


@pytest.fixture(autouse=True)
def toy_model(monkeypatch):
    helpers.register_toy(monkeypatch)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A tfds data dir shared by the command tests (shapes is built into it once, ~15 s)."""
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory, data_dir):
    """A work dir of the FCN-8s shapes job (ResNet-18) at an eighth of the width, trained
    by `lapseg train` for 40 steps on 32 x 32 crops of the shapes data: enough that it
    predicts more than the background (after 20 steps it does not), so that equal labels
    mean something. Trained once per session, read-only for the tests."""
    root = tmp_path_factory.mktemp("fcn8s")
    (root / "tiny.py").write_text(TINY_DEFAULT_JOB.format(data_dir=str(data_dir)))
    assert helpers.run("train", f"--config={root / 'tiny.py'}", "--workdir", root / "w") == 0
    assert config_lib.load(root / "w" / "config.json").model == "fcn8s"
    return root / "w"
