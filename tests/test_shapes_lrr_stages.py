"""configs/shapes_lrr.py's staged schedule: the 32x level alone, then every level at lr / 16."""

import importlib.util
import pathlib

import pytest

from lapseg.losses.lrr import DEFAULT_WEIGHTS

PATH = pathlib.Path(__file__).resolve().parents[1] / "configs" / "shapes_lrr.py"


def _module():
    spec = importlib.util.spec_from_file_location("shapes_lrr", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stages():
    module = _module()
    full, coarse, refine = (module.get_config(stage) for stage in ("all", "coarse", "refine"))
    assert full == module.get_config()
    assert full.loss.weights.to_dict() == DEFAULT_WEIGHTS
    assert coarse.loss.weights.to_dict() == {"level_32": 1.0}
    assert coarse.optimizer.learning_rate == full.optimizer.learning_rate
    assert refine.loss.weights.to_dict() == DEFAULT_WEIGHTS
    assert refine.optimizer.learning_rate == pytest.approx(full.optimizer.learning_rate / 16)
    with pytest.raises(ValueError, match="stage must be one of"):
        module.get_config("fine")
