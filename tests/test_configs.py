"""Every experiment config in configs/ loads, and its model builds at the config's crop size
(shapes only, `jax.eval_shape`: nothing is computed)."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import pytest

from lapseg import data, models
from lapseg.train import config as config_lib
from lapseg.train import recipes

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.py"))


def load_config(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_default_config_is_the_default_job():
    assert load_config(CONFIG_DIR / "default.py") == config_lib.default_job()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_its_model(path):
    """Label-fitted constants (LRR, DUpsampling) are variables attached after `init`: the
    model builds and traces without them."""
    config = load_config(path)
    info = data.dataset_info(config.data.dataset)
    model = models.from_config(config, info.num_classes)
    size = tuple(config.data.crop_size)
    out = jax.eval_shape(lambda: model.init_with_output(
        jax.random.key(0), jnp.zeros((1, *size, 3)), train=False)[0])
    assert out["logits"].shape == (1, *size, info.num_classes)


def test_finetune_recipe_sets_the_shared_fields():
    config = recipes.finetune("gcn", {"backbone": "resnet50"}, dataset="cityscapes",
                              crop_size=(800, 800), batch_size=8, learning_rate=0.01,
                              num_train_steps=100, eval_size=(1024, 2048))
    assert config.model == "gcn" and config.model_kwargs.backbone == "resnet50"
    assert config.data.crop_size == (800, 800) and config.data.eval_size == (1024, 2048)
    assert config.optimizer.lr_multipliers == recipes.NEW_HEAD_10X and config.optimizer.warmup_steps == 0
    assert config.loss.weights.to_dict() == {"logits": 1.0}
    assert (config.eval_every_steps, config.checkpoint_every_steps) == (5000, 2000)
    unknown = recipes.finetune("gcn", {}, dataset="shapes", crop_size=(96, 96), batch_size=2,
                               learning_rate=0.1, num_train_steps=10)
    assert unknown.eval_every_steps == config_lib.base_config().eval_every_steps
