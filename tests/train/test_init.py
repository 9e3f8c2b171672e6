"""Initialisation from weights (`config.init`, `lapseg.train.init`): a torchvision-layout
backbone file, a warm start from another run's checkpoint, never re-applied on resume, and
a wrong-architecture file refused before step 0.

The training runs are tiny (32 x 32 crops, one or two steps, evaluation on one batch);
a torchvision-layout ResNet-18 is necessarily full width. Learning rate 0 keeps params at
their step-0 values (weight decay goes through the learning rate; BatchNorm running
statistics do move in train mode, so those are compared only where nothing trained).
"""

import itertools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lapseg import backbones, models
from lapseg.ops import tree as tree_lib
from lapseg.train import checkpoint as checkpoint_lib
from lapseg.train import init as init_lib
from lapseg.train import loop
from lapseg.train import state as state_lib
from lapseg.train import step as step_lib
from tests.cli import helpers
from tests.train import toy

NUM_CLASSES = 5  # the shapes dataset
FULL_R18 = {"backbone": "resnet18", "backbone_kwargs": {"output_stride": 32}}
# A full-width torchvision-layout ResNet-18 under a small PSPNet head (FCN's score layers
# start at zero, PSPNet's do not).
PSPNET_R18 = {"backbone": "resnet18", "backbone_kwargs": {"deep_stem": False, "output_stride": 32},
              "channels": 16, "aux_channels": 8}
TINY_R18 = {"backbone": "resnet18",
            "backbone_kwargs": {"width": 0.125, "deep_stem": True, "output_stride": 8}}
PSPNET = {**TINY_R18, "channels": 16, "aux_channels": 8}
ICNET = {**TINY_R18, "branch_channels": 8, "channels": 16}


@pytest.fixture(autouse=True)
def toy_model(monkeypatch):
    monkeypatch.setitem(models._MODELS, "toy", "tests.train.toy:toy")  # pylint: disable=protected-access


@pytest.fixture(autouse=True)
def one_eval_batch(monkeypatch):
    """The loop evaluates on the first validation batch only (the runs are not judged)."""
    real = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda state, eval_step, mesh, loader, num_classes:
                        real(state, eval_step, mesh, itertools.islice(loader, 1), num_classes))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _torch_state_dict(deep_stem=False, seed=0):
    """A torchvision-layout ResNet-18 state dict (random weights and BN statistics)."""
    torch = pytest.importorskip("torch")
    from tests.backbones import torch_backbones  # pylint: disable=import-outside-toplevel

    torch.manual_seed(seed)
    net = torch_backbones.ResNet(18, deep_stem=deep_stem)
    with torch.no_grad():
        for name, buffer in net.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_()
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
    return net.state_dict()


@pytest.fixture(scope="module")
def resnet18_pth(tmp_path_factory):
    """`(path, {key: np.ndarray})`: a ResNet-18 state dict written with `torch.save`."""
    torch = pytest.importorskip("torch")
    state_dict = _torch_state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(state_dict, path)
    return path, {k: v.numpy() for k, v in state_dict.items()}


def _config(data_dir, model, model_kwargs, steps=1, learning_rate=0.0):
    config = toy.tiny_config(data_dir, model=model, model_kwargs=model_kwargs, steps=steps)
    config.checkpoint_every_steps = 1
    config.optimizer.learning_rate = learning_rate
    config.optimizer.warmup_steps = 0
    return config


def _paths(tree) -> dict:
    """`{'params/a/kernel': leaf}` (leaves as they are: arrays or `ShapeDtypeStruct`s)."""
    return dict(tree_lib.flatten_with_names(tree))


def _flat(tree) -> dict:
    return {path: np.asarray(leaf) for path, leaf in _paths(tree).items()}


def _saved(workdir) -> dict:
    """`{'params/...': array, 'batch_stats/...': array}` of the run's latest checkpoint."""
    checkpointer = checkpoint_lib.Checkpointer(workdir / "checkpoints")
    state = checkpointer.read()
    checkpointer.close()
    return {**_flat({"params": state["params"]}), **_flat(state["model_state"])}


def _expected_backbone(state_dict, leaves, arch="resnet18"):
    """What each backbone leaf of `leaves` (`{path: leaf}`) should hold: the file's tensor,
    OIHW -> HWIO."""
    want = {}
    for path, leaf in leaves.items():
        collection, module, *rest = path.split("/")
        if module != "backbone":
            continue
        array = state_dict[backbones.weights.torch_key(arch, tuple(rest))]
        want[path] = array.transpose(2, 3, 1, 0) if array.ndim == 4 else array
        assert want[path].shape == leaf.shape, path
    return want


def _abstract(model_name, kwargs, num_classes=NUM_CLASSES, size=(32, 32)):
    model = models.create_model(model_name, num_classes=num_classes, **kwargs)
    return model, jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, *size, 3)), train=False))


# Pure functions -------------------------------------------------------------------------


@pytest.mark.parametrize("name, kwargs", [
    ("fcn8s", FULL_R18),
    ("dsrl", {**FULL_R18, "base": "fcn8s", "sisr_channels": 8, "espcn_channels": (8, 8)}),
])
def test_from_backbone_weights_fills_the_backbone_only(name, kwargs, resnet18_pth, tmp_path):
    path, state_dict = resnet18_pth
    npz = tmp_path / "resnet18.npz"
    np.savez(npz, **state_dict)
    model, abstract = _abstract(name, kwargs)
    assert init_lib.backbone_arch(model) == "resnet18"
    want = _expected_backbone(state_dict, _paths(abstract))
    assert {p.split("/")[0] for p in want} == {"params", "batch_stats"}
    for source in (path, npz):
        variables, report = init_lib.from_backbone_weights(abstract, source, "resnet18")
        got = _paths(variables)
        for leaf_path, array in want.items():
            assert isinstance(got[leaf_path], np.ndarray), leaf_path
            assert got[leaf_path].dtype == np.float32, leaf_path
            np.testing.assert_array_equal(got[leaf_path], array, err_msg=leaf_path)
        assert set(report.loaded) == set(want)
        assert report.left and not any("/backbone/" in p for p in report.left)
        assert set(report.left) | set(report.loaded) == set(got)
        assert report.refused == () and report.unused == ("fc.bias", "fc.weight")
        # Leaves left at init are untouched (here: still abstract).
        assert all(isinstance(got[p], jax.ShapeDtypeStruct) for p in report.left)
    summary = report.summary()
    assert "arrays loaded" in summary and "params/backbone (" in summary
    assert "left at init" in summary and "fc.weight" in summary


def test_from_checkpoint_refuses_other_shapes(tmp_path, data_dir):
    """The same model with another class count: the classifier is refused, the rest copied."""
    config = _config(data_dir, "toy", {"width": 4}, steps=1, learning_rate=0.1)
    loop.train_and_evaluate(config, str(tmp_path / "source"))
    saved = _saved(tmp_path / "source")
    _, abstract = _abstract("toy", {"width": 4}, num_classes=3)
    for where in ("source", "source/checkpoints", "source/checkpoints/1"):
        variables, report = init_lib.from_checkpoint(abstract, tmp_path / where)
        assert report.source.endswith("checkpoints/1")
        assert {p for p, _, _ in report.refused} == {"params/head/kernel", "params/head/bias"}
        assert ("params/head/kernel", (1, 1, 4, 5), (1, 1, 4, 3)) in report.refused
        assert report.left == () and report.unused == ()
        assert set(report.loaded) == set(saved) - {"params/head/kernel", "params/head/bias"}
        got = _paths(variables)
        for path in report.loaded:
            np.testing.assert_array_equal(got[path], saved[path])
        assert all(isinstance(got[p], jax.ShapeDtypeStruct) for p, _, _ in report.refused)
    assert "refused: params/head/bias (5 in source, 3 in model)" in report.summary()
    with pytest.raises(checkpoint_lib.CheckpointError, match="does not exist"):
        init_lib.from_checkpoint(abstract, tmp_path / "nowhere")
    with pytest.raises(checkpoint_lib.CheckpointError, match="no checkpoint of step 7"):
        init_lib.from_checkpoint(abstract, tmp_path / "source", step=7)


# Through the training loop -----------------------------------------------------------------


def test_backbone_weights_through_training(resnet18_pth, data_dir, tmp_path, caplog):
    """One step at learning rate 0: the checkpoint's backbone params are the file's."""
    path, state_dict = resnet18_pth
    config = _config(data_dir, "pspnet", PSPNET_R18)
    config.init.backbone_weights = str(path)
    caplog.set_level(logging.INFO, logger="lapseg.train.init")
    loop.train_and_evaluate(config, str(tmp_path / "run"))
    saved = _saved(tmp_path / "run")
    params = {p: a for p, a in saved.items() if p.startswith("params/")}
    want = _expected_backbone(state_dict, params)
    assert len(want) == sum("/backbone/" in p for p in params) > 40
    for leaf_path, array in want.items():  # kernels, BN scales and biases
        np.testing.assert_array_equal(params[leaf_path], array, err_msg=leaf_path)
    # The rest is the model's initialisers' (with the run's seed), not zeros, not the file's.
    model = models.from_config(config, NUM_CLASSES)
    fresh = _flat(state_lib.init_variables(model, jax.random.key(config.seed), (1, 32, 32, 3)))
    others = [p for p in params if "/backbone/" not in p]
    assert others
    for leaf_path in others:
        np.testing.assert_array_equal(params[leaf_path], fresh[leaf_path], err_msg=leaf_path)
    kernels = [p for p in others if p.endswith("kernel")]
    assert kernels and all(np.any(params[p] != 0) for p in kernels)
    file_arrays = [np.asarray(a) for a in want.values()]
    assert not any(params[p].shape == a.shape and np.array_equal(params[p], a)
                   for p in kernels for a in file_arrays)
    assert "resnet18.pth (resnet18)" in caplog.text and "arrays loaded" in caplog.text
    assert "left at init: params/" in caplog.text


def test_icnet_warm_start_from_pspnet(data_dir, tmp_path, caplog):
    psp = _config(data_dir, "pspnet", PSPNET, steps=2, learning_rate=0.05)
    loop.train_and_evaluate(psp, str(tmp_path / "pspnet"))
    source = _saved(tmp_path / "pspnet")

    config = _config(data_dir, "icnet", ICNET)
    config.init.checkpoint = str(tmp_path / "pspnet")
    caplog.set_level(logging.INFO, logger="lapseg.train.init")
    loop.train_and_evaluate(config, str(tmp_path / "icnet"))
    saved = _saved(tmp_path / "icnet")
    params = [p for p in saved if p.startswith("params/")]
    copied = [p for p in params if p in source and source[p].shape == saved[p].shape]
    assert set(copied) == {p for p in params if p.startswith("params/backbone/")}
    for path in copied:  # learning rate 0: still the PSPNet's values
        np.testing.assert_array_equal(saved[path], source[path], err_msg=path)
    # The PSPNet trained: its backbone is not the ICNet's initialiser.
    model = models.from_config(config, NUM_CLASSES)
    fresh = _flat(state_lib.init_variables(model, jax.random.key(config.seed), (1, 32, 32, 3)))
    assert any(not np.array_equal(fresh[p], source[p]) for p in copied)
    for path in set(params) - set(copied):
        np.testing.assert_array_equal(saved[path], fresh[path], err_msg=path)
    text = caplog.text
    assert f"init from checkpoint {tmp_path / 'pspnet' / 'checkpoints'}/2" in text
    assert "0 refused" in text
    assert "loaded: params/backbone (" in text and "batch_stats/backbone (" in text
    assert "left at init: " in text and "params/classifier (2)" in text
    assert "params/cff_sub12 (" in text
    assert "unused: " in text and "params/head_classifier (2)" in text


def test_resumed_run_does_not_reapply_init(data_dir, tmp_path, monkeypatch):
    source = _config(data_dir, "toy", {"width": 4}, steps=2, learning_rate=0.1)
    loop.train_and_evaluate(source, str(tmp_path / "source"))
    config = _config(data_dir, "toy", {"width": 4}, steps=2)
    config.init.checkpoint = str(tmp_path / "source")
    loop.train_and_evaluate(config, str(tmp_path / "run"))
    want = {p: a for p, a in _saved(tmp_path / "source").items() if p.startswith("params/")}
    got = _saved(tmp_path / "run")
    for path, array in want.items():
        np.testing.assert_array_equal(got[path], array)

    calls = []
    monkeypatch.setattr(init_lib, "apply", lambda *args, **kwargs: calls.append(args))
    monkeypatch.setattr(init_lib, "from_checkpoint", lambda *args, **kwargs: calls.append(args))
    # A resumed run restores its own checkpoint, even when the source has changed since.
    config.init.checkpoint = str(tmp_path / "nowhere")
    config.num_train_steps = 3
    result = loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert result["step"] == 3 and calls == []
    resumed = _saved(tmp_path / "run")
    for path, array in want.items():
        np.testing.assert_array_equal(resumed[path], array)


_CONFIG_FILE = """
import ml_collections
from lapseg.train.config import base_config


def get_config():
    config = base_config()
    config.model = "pspnet"
    config.model_kwargs = ml_collections.ConfigDict({kwargs!r})
    config.data.crop_size = (32, 32)
    config.data.batch_size = 8
    config.num_train_steps = 1
    return config
"""


def test_wrong_architecture_fails_before_step_0(data_dir, tmp_path, monkeypatch):
    """`lapseg train --config.init.backbone_weights=...` with a deep-stem ResNet-18's file
    for a plain ResNet-18: one line naming the keys, before any step."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "deep_stem_resnet18.pth"
    torch.save(_torch_state_dict(deep_stem=True), path)
    (tmp_path / "config.py").write_text(_CONFIG_FILE.format(kwargs=PSPNET_R18))
    workdir = tmp_path / "run"
    steps = []
    monkeypatch.setattr(step_lib, "jit_train_step", lambda *a, **k: steps.append(1))
    message = helpers.run("train", f"--config={tmp_path / 'config.py'}", f"--workdir={workdir}",
                          f"--config.data.data_dir={data_dir}",
                          f"--config.init.backbone_weights={path}")
    assert message.startswith("lapseg train: config.init.backbone_weights: ") and "\n" not in message
    assert "state dict does not fit the resnet18 variables" in message
    assert "unexpected" in message and "conv2.weight" in message and "bn3.running_mean" in message
    assert "mis-shaped" in message and "conv1.weight" in message
    assert steps == []
    assert checkpoint_lib.Checkpointer(workdir / "checkpoints").latest_step() is None
    assert not (workdir / "config.json").exists()  # written only by runs that save (#26)


def test_missing_weights_file_is_one_line_with_the_remedy(data_dir, tmp_path, monkeypatch):
    (tmp_path / "config.py").write_text(_CONFIG_FILE.format(kwargs=PSPNET_R18))
    steps = []
    monkeypatch.setattr(step_lib, "jit_train_step", lambda *a, **k: steps.append(1))
    missing = tmp_path / "weights" / "resnet18.npz"
    message = helpers.run("train", f"--config={tmp_path / 'config.py'}",
                          f"--workdir={tmp_path / 'run'}", f"--config.data.data_dir={data_dir}",
                          f"--config.init.backbone_weights={missing}")
    assert message.startswith(f"lapseg train: config.init.backbone_weights: {missing} does not exist")
    assert "lapseg convert-weights" in message and "backbone_weights=''" in message
    assert "\n" not in message and steps == []
