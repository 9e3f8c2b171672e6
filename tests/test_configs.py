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


def test_the_default_job_is_lrr_and_shapes_fcn8s_differs_only_in_the_decoder():
    """`lapseg train` trains LRR; configs/shapes_fcn8s.py is the same job (steps, batch,
    data, backbone, base optimiser) with FCN-8s's decoder."""
    lrr, fcn8s = config_lib.default_job(), load_config(CONFIG_DIR / "shapes_fcn8s.py")
    assert (lrr.model, fcn8s.model) == ("lrr", "fcn8s")
    assert lrr.model_kwargs.num_bases == 10 and "num_bases" not in fcn8s.model_kwargs
    assert set(lrr.loss.weights) == {"level_32", "level_16", "level_8", "level_4"}
    assert dict(fcn8s.loss.weights) == {"logits": 1.0} and fcn8s.optimizer.lr_multipliers == ()
    different = {"model", "model_kwargs", "loss", "optimizer"}
    assert all(lrr[key] == fcn8s[key] for key in lrr if key not in different)
    assert lrr.model_kwargs.backbone_kwargs == fcn8s.model_kwargs.backbone_kwargs
    assert {k: v for k, v in lrr.optimizer.items() if k != "lr_multipliers"} == {
        k: v for k, v in fcn8s.optimizer.items() if k != "lr_multipliers"}
    assert lrr.num_train_steps == fcn8s.num_train_steps and lrr.data == fcn8s.data


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
# shapes jobs train from scratch): a Hugging Face name where the hub holds the file, else
# `$LAPSEG_WEIGHTS/<name>.npz` (semseg's deep-stem ResNet-50, Caffe's VGG-16). The expected
# weights per config, by IMAGENET_WEIGHTS key:
PRETRAINED = {
    "ade20k_pspnet_resnet50": "resnet50_deep_stem", "camvid_pspnet_resnet50": "resnet50_deep_stem",
    "cityscapes_pspnet_resnet50": "resnet50_deep_stem",
    "camvid_dsrl_pspnet": "resnet50_deep_stem", "cityscapes_dsrl_pspnet": "resnet50_deep_stem",
    "camvid_dupsampling_resnet50": "resnet50", "cityscapes_dupsampling_resnet50": "resnet50",
    "camvid_gcn_resnet50": "resnet50", "cityscapes_gcn_resnet101": "resnet101",
    "camvid_lrr_resnet50": "resnet50", "camvid_refinenet_resnet101": "resnet101",
    "cityscapes_refinenet_resnet101": "resnet101", "voc_fcn8s_vgg16": "vgg16_caffe",
    "voc_lrr_vgg16": "vgg16_caffe",
    "voc_dfn_resnet101": "resnet101_deep_stem", "cityscapes_dfn_resnet101": "resnet101_deep_stem",
    "camvid_icnet_resnet50": None, "cityscapes_icnet_resnet50": None, "default": None,
    "shapes_lrr": None, "shapes_fcn8s": None,
}  # fmt: skip
HUB = {"resnet50": "hf://timm/resnet50.tv_in1k", "resnet101": "hf://timm/resnet101.tv_in1k"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_paper_configs_start_from_imagenet_weights(path, tmp_path, monkeypatch):
    monkeypatch.setenv(recipes.WEIGHTS_DIR_ENV, str(tmp_path))
    name = PRETRAINED[path.stem]  # a new config must say here where it starts from
    expected = HUB.get(name) or (str(tmp_path / f"{name}.npz") if name else None)
    assert load_config(path).init.backbone_weights == expected


def test_pretrained_weights_prefer_the_hub(monkeypatch, tmp_path):
    """Every torchvision backbone has a hub name (docs/weights.md's table); the deep-stem
    ResNet-50 and Caffe's VGG-16 have none and stay `.npz` files."""
    monkeypatch.setenv(recipes.WEIGHTS_DIR_ENV, str(tmp_path))
    for depth in (18, 34, 50, 101, 152):
        assert recipes.pretrained_weights(f"resnet{depth}") == f"hf://timm/resnet{depth}.tv_in1k"
    assert recipes.pretrained_weights("vgg16") == "hf://timm/vgg16.tv_in1k"
    for name in ("resnet50_deep_stem", "vgg16_caffe"):
        assert recipes.pretrained_weights(name) == str(tmp_path / f"{name}.npz")
        assert recipes.imagenet_weights(name) == str(tmp_path / f"{name}.npz")
    assert set(recipes.HUB_WEIGHTS) <= set(recipes.IMAGENET_WEIGHTS)
    with pytest.raises(ValueError, match="resnet7"):
        recipes.pretrained_weights("resnet7")


# Which parameters each config decays (`config.optimizer.weight_decay_mask`): 'all' where the
# reference hands every parameter to its SGD (semseg, Dootmaan/DSRL, DUpsampling, RefineNet,
# LRR's coefficient biases; GCN takes semseg's recipe), 'kernels' where it decays weights only
# (FCN's `decay_mult: 0` biases, hellochick's ICNet) or the recipe is lapseg's own.
DECAY_ALL = {"ade20k_pspnet_resnet50", "camvid_pspnet_resnet50", "cityscapes_pspnet_resnet50",
             "camvid_dsrl_pspnet", "cityscapes_dsrl_pspnet", "camvid_dupsampling_resnet50",
             "cityscapes_dupsampling_resnet50", "camvid_refinenet_resnet101",
             "cityscapes_refinenet_resnet101", "camvid_gcn_resnet50", "cityscapes_gcn_resnet101",
             "voc_lrr_vgg16"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_weight_decay_mask(path):
    expected = "all" if path.stem in DECAY_ALL else "kernels"
    assert load_config(path).optimizer.weight_decay_mask == expected


@pytest.mark.parametrize("name", ["camvid_refinenet_resnet101", "cityscapes_refinenet_resnet101"])
def test_refinenet_configs_follow_the_reference_data_and_labels(name):
    """guosheng/refinenet: short edge enlarged to 450, MATLAB nearest label downsampling,
    frozen global BN statistics."""
    config = load_config(CONFIG_DIR / f"{name}.py")
    assert config.data.min_short_edge == 450
    assert config.loss.label_sampling == "matlab"
    assert config.model_kwargs.bn_statistics == "global" and config.model_kwargs.input_scale == 1.2
    from lapseg import losses  # pylint: disable=import-outside-toplevel

    losses.for_model(config.model, config.loss, ignore_label=255)  # the option is honoured


@pytest.mark.parametrize("name", ["camvid_dupsampling_resnet50", "cityscapes_dupsampling_resnet50"])
def test_dupsampling_configs_follow_dunet_sybn(name):
    """LinZhuoChen/DUpsampling `train.sh` / `models/dunet_sybn.py`: trainable W, dropout
    0.5 / 0.1, L = 64 at ratio 16 (OS 16), one learning rate, batch 16."""
    config = load_config(CONFIG_DIR / f"{name}.py")
    for key, value in recipes.DUPSAMPLING_REFERENCE.items():
        assert config.model_kwargs[key] == value
    assert (config.model_kwargs.dim, config.model_kwargs.ratio) == (64, 16)
    assert config.model_kwargs.backbone_kwargs.output_stride == 16
    assert tuple(config.optimizer.lr_multipliers) == () and config.data.batch_size == 16
    assert config.optimizer.learning_rate == 0.007 and config.optimizer.warmup_steps == 0


def test_camvid_lengths():
    """The CamVid configs train about 100 epochs of the 367 images (ICNet and DSRL too)."""
    for path in CONFIGS:
        config = load_config(path)
        if config.data.dataset != "camvid" or path.stem == "camvid_lrr_resnet50":
            continue
        epochs = config.num_train_steps * config.data.batch_size / 367
        assert 99 <= epochs <= 101, (path.stem, epochs)


def test_voc_lrr_rates_and_stages():
    """golnazghiasi/LRR: coefficient filters at the per-level rates, their biases at 2 (an
    absolute rate, `AddSubModel.m`), VGG biases at 2x; 65 epochs of the 32x level at 1e-3,
    then 16 of everything at 1e-3 / 16."""
    spec = importlib.util.spec_from_file_location("voc_lrr", CONFIG_DIR / "voc_lrr_vgg16.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    rules = dict(config.optimizer.lr_multipliers)
    for level, rate in zip(module.VGG_LEVELS, (0.1, 0.05, 0.0125, 0.1 / 512)):
        assert rules[f"*coefficients_{level}/*"] == rate
        assert rules[f"*coefficients_{level}/*/bias"] == 2.0
    assert rules["backbone/*/bias"] == 2.0
    assert config.loss.label_sampling == "center" and config.loss.dilation_erosion
    coarse, refine = module.get_config("coarse"), module.get_config("refine")
    assert set(coarse.loss.weights) == {"level_32"} and coarse.optimizer.learning_rate == 1e-3
    assert refine.optimizer.learning_rate == 1e-3 / 16
    per_epoch = module.TRAIN_AUG_IMAGES / config.data.batch_size
    assert round(coarse.num_train_steps / per_epoch) == 65
    assert round(refine.num_train_steps / per_epoch) == 16
    assert round(config.num_train_steps / per_epoch) == 81
    with pytest.raises(ValueError, match="stage must be one of"):
        module.get_config("fine")


RECIPES_DOC = CONFIG_DIR.parent / "docs" / "recipes.md"


def test_every_config_is_in_the_recipe_table():
    """docs/recipes.md has a row for every configs/*.py, named `configs/<name>.py`."""
    text = RECIPES_DOC.read_text(encoding="utf-8")
    missing = [p.name for p in CONFIGS if f"`configs/{p.name}`" not in text]
    assert not missing, f"docs/recipes.md lacks rows for {missing}"


def test_icnet_configs_start_from_scratch_unless_a_run_is_named():
    """The PSPNet run comes from `--config.init.checkpoint=RUN`, not from the environment."""
    for name in ("cityscapes_icnet_resnet50", "camvid_icnet_resnet50"):
        assert load_config(CONFIG_DIR / f"{name}.py").init.checkpoint is None


def test_imagenet_weights_default_dir_and_unknown_name(monkeypatch):
    monkeypatch.delenv(recipes.WEIGHTS_DIR_ENV, raising=False)
    path = recipes.imagenet_weights("resnet101")
    assert path.endswith("/.cache/lapseg/weights/resnet101.npz") and "~" not in path
    with pytest.raises(ValueError, match="resnet7"):
        recipes.imagenet_weights("resnet7")
