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


# The paper configs start from ImageNet weights (ICNet: no half-width weights exist; the
# shapes jobs train from scratch). The expected file per config, by IMAGENET_WEIGHTS key:
PRETRAINED = {
    "ade20k_pspnet_resnet50": "resnet50_deep_stem", "camvid_pspnet_resnet50": "resnet50_deep_stem",
    "cityscapes_pspnet_resnet50": "resnet50_deep_stem",
    "camvid_dsrl_pspnet": "resnet50_deep_stem", "cityscapes_dsrl_pspnet": "resnet50_deep_stem",
    "camvid_dupsampling_resnet50": "resnet50", "cityscapes_dupsampling_resnet50": "resnet50",
    "camvid_gcn_resnet50": "resnet50", "cityscapes_gcn_resnet101": "resnet101",
    "camvid_lrr_resnet50": "resnet50", "camvid_refinenet_resnet101": "resnet101",
    "cityscapes_refinenet_resnet101": "resnet101", "voc_fcn8s_vgg16": "vgg16_caffe",
    "voc_lrr_vgg16": "vgg16_caffe",
    "camvid_icnet_resnet50": None, "cityscapes_icnet_resnet50": None, "default": None,
    "shapes_lrr": None,
}  # fmt: skip


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_paper_configs_start_from_imagenet_weights(path, tmp_path, monkeypatch):
    monkeypatch.setenv(recipes.WEIGHTS_DIR_ENV, str(tmp_path))
    name = PRETRAINED[path.stem]  # a new config must say here where it starts from
    expected = str(tmp_path / f"{name}.npz") if name else None
    assert load_config(path).init.backbone_weights == expected


RECIPES_DOC = CONFIG_DIR.parent / "docs" / "recipes.md"


def test_every_config_is_in_the_recipe_table():
    """docs/recipes.md has a row for every configs/*.py, named `configs/<name>.py`."""
    text = RECIPES_DOC.read_text(encoding="utf-8")
    missing = [p.name for p in CONFIGS if f"`configs/{p.name}`" not in text]
    assert not missing, f"docs/recipes.md lacks rows for {missing}"


def test_icnet_configs_warm_start_from_the_pspnet_run_in_the_environment(monkeypatch, tmp_path):
    """`config.init.checkpoint` is `$LAPSEG_ICNET_PSPNET_RUN`, None (from scratch) when unset."""
    for name in ("cityscapes_icnet_resnet50", "camvid_icnet_resnet50"):
        monkeypatch.delenv(recipes.PSPNET_RUN_ENV, raising=False)
        assert load_config(CONFIG_DIR / f"{name}.py").init.checkpoint is None
        monkeypatch.setenv(recipes.PSPNET_RUN_ENV, str(tmp_path))
        assert load_config(CONFIG_DIR / f"{name}.py").init.checkpoint == str(tmp_path)


def test_imagenet_weights_default_dir_and_unknown_name(monkeypatch):
    monkeypatch.delenv(recipes.WEIGHTS_DIR_ENV, raising=False)
    path = recipes.imagenet_weights("resnet101")
    assert path.endswith("/.cache/lapseg/weights/resnet101.npz") and "~" not in path
    with pytest.raises(ValueError, match="resnet7"):
        recipes.imagenet_weights("resnet7")
