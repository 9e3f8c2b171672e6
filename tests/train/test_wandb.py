"""Weights & Biases, an optional extra: off by default; when on, every scalar and picture
the TensorBoard writer gets goes to W&B too (checked with a stand-in `wandb` module, since
the real one would try to reach the network); missing, a one-line config error."""

import importlib.util
import sys
import types

import numpy as np
import pytest

from lapseg.train import config as config_lib
from lapseg.train import reporting


class _FakeWandb(types.ModuleType):
    def __init__(self):
        super().__init__("wandb")
        self.calls = []

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))
        return self

    def log(self, values, step):
        self.calls.append(("log", step, values))

    def finish(self):
        self.calls.append(("finish",))

    class Image:  # pylint: disable=too-few-public-methods
        def __init__(self, array):
            self.array = array


def test_off_by_default():
    assert config_lib.base_config().wandb_project is None
    writer_fields = reporting.MetricWriter.__init__.__kwdefaults__
    assert writer_fields["wandb_project"] is None


def test_scalars_and_pictures_go_to_wandb(tmp_path, monkeypatch):
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    writer = reporting.MetricWriter(tmp_path / "run", wandb_project="demo", config={"seed": 3})
    writer.write(5, "train", {"loss": np.float32(0.5), "vector": np.zeros(3)})
    picture = np.zeros((4, 6, 3), np.uint8)
    writer.write_images(5, {"preview/0": picture})
    writer.close()
    init = fake.calls[0][1]
    assert init["project"] == "demo" and init["config"] == {"seed": 3}
    assert init["resume"] == "allow" and init["name"] == "run"
    again = reporting.MetricWriter(tmp_path / "run", wandb_project="demo")
    again.close()
    assert fake.calls[4][1]["id"] == init["id"]  # a resumed run continues the same W&B run
    assert fake.calls[1] == ("log", 5, {"train/loss": 0.5})
    step, images = fake.calls[2][1:]
    assert step == 5 and images["preview/0"].array is picture
    assert fake.calls[3] == ("finish",)


def test_missing_wandb_is_a_config_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    config = config_lib.default_job()
    config.wandb_project = "demo"
    with pytest.raises(config_lib.ConfigError, match=r"config.wandb_project = 'demo': needs "
                                                     r"the wandb package") as err:
        config_lib.validate(config)
    assert "lapseg[wandb]" in err.value.todo
