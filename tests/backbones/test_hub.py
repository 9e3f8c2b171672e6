"""Backbone weights by Hugging Face name (`hf://ORG/REPO[/FILE]`, `lapseg.backbones.hub`),
read offline from a hub cache laid out as `hf download` leaves it:
`$HF_HOME/hub/models--ORG--REPO/snapshots/<commit>/FILE` and `refs/main` holding `<commit>`.

Nothing here may reach the network: every test sets `HF_HUB_OFFLINE=1` and points
`HF_ENDPOINT` at a closed local port. huggingface_hub reads its settings when it is
imported, so the in-process tests set the environment *and* its constants (the
`hub_home` fixture); `test_environment_alone_selects_cache_and_offline_mode` runs a fresh
process with the environment alone.

The training runs are tiny (32 x 32 crops of the shapes data, one step at learning rate 0,
evaluation on one batch) on a full-width ResNet-18 (a torchvision-layout file fits nothing
narrower). BatchNorm running statistics move in a train step even at learning rate 0, so
the checkpoint is compared on params (kernels, BN scales and biases).
"""

import itertools
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy
from flax import traverse_util

from lapseg import backbones
from lapseg.backbones import hub
from lapseg.backbones.weights import torch_key
from lapseg.train import checkpoint as checkpoint_lib
from lapseg.train import init as init_lib
from lapseg.train import loop
from lapseg.train import step as step_lib
from tests.backbones.test_weights import abstract_variables
from tests.cli import helpers

REPO = "timm/resnet18.tv_in1k"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# `lapseg train` with the FCN-8s shapes job (ResNet-18) at full width, tiny and fast (the
# --config file first: field overrides follow it).
FCN8S_CONFIG = pathlib.Path(__file__).resolve().parents[2] / "configs" / "shapes_fcn8s.py"
TRAIN_FLAGS = (f"--config={FCN8S_CONFIG}", "--config.model_kwargs.backbone_kwargs.width=1.0",
               "--config.num_train_steps=1",
               "--config.optimizer.learning_rate=0", "--config.optimizer.warmup_steps=0",
               "--config.data.crop_size=(32,32)", "--config.data.batch_size=8",
               "--config.checkpoint_every_steps=1", "--config.log_every_steps=1")
ENV = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}  # port 9: nothing listens


def write_cache(home, repo, files, commit=COMMIT):
    """`files` (`{FILE: {key: array}}`) as safetensors in `home`'s hub cache, `main` -> commit."""
    root = home / "hub" / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, arrays in files.items():
        safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                                    str(snapshot / name))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub_home(tmp_path, monkeypatch):
    """An empty `HF_HOME`, offline, set in the environment and in huggingface_hub's
    constants (read at its import, which may have happened already)."""
    from huggingface_hub import constants  # pylint: disable=import-outside-toplevel

    home = tmp_path / "hf_home"
    home.mkdir()
    for name, value in {**ENV, "HF_HOME": str(home)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "ENDPOINT", ENV["HF_ENDPOINT"])
    return home


def resnet18_file(seed=0):
    """A torchvision-layout ResNet-18 state dict built from lapseg's resnet18 variables
    (random values; positive running variances), with torchvision's `fc` classifier and
    `num_batches_tracked` counters, as a `timm/resnet18.tv_in1k` file holds them."""
    variables = abstract_variables(backbones.create("resnet18"))
    rng = np.random.default_rng(seed)
    state = {}
    for path, leaf in traverse_util.flatten_dict(variables).items():
        key = torch_key("resnet18", path[1:])
        shape = leaf.shape
        if len(shape) == 4:  # HWIO -> OIHW
            shape = (shape[3], shape[2], shape[0], shape[1])
        if key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        else:
            state[key] = rng.standard_normal(shape).astype(np.float32)
        if key.endswith("running_mean"):
            state[key.replace("running_mean", "num_batches_tracked")] = np.array(5, np.int64)
    state["fc.weight"] = rng.standard_normal((1000, 512)).astype(np.float32)
    state["fc.bias"] = np.zeros(1000, np.float32)
    return state


def expected_backbone(state_dict, paths):
    """`{variable path: array}`: what each `params/backbone/...` of `paths` must hold (the
    file's tensor, OIHW -> HWIO)."""
    want = {}
    for path in paths:
        collection, module, *rest = path.split("/")
        if collection == "params" and module == "backbone":
            array = state_dict[torch_key("resnet18", tuple(rest))]
            want[path] = array.transpose(2, 3, 1, 0) if array.ndim == 4 else array
    return want


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture
def one_eval_batch(monkeypatch):
    """The loop evaluates on the first validation batch only (the runs are not judged)."""
    real = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda state, eval_step, mesh, loader, num_classes:
                        real(state, eval_step, mesh, itertools.islice(loader, 1), num_classes))


# Names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name, repo, filename", [
    ("hf://timm/resnet18.tv_in1k", "timm/resnet18.tv_in1k", "model.safetensors"),
    ("hf://timm/vgg16.tv_in1k/pytorch_model.bin", "timm/vgg16.tv_in1k", "pytorch_model.bin"),
    ("hf://me/weights/resnet50/backbone.npz", "me/weights", "resnet50/backbone.npz"),
])
def test_parse(name, repo, filename):
    assert hub.is_hub_name(name)
    assert hub.parse(name) == (repo, filename)


@pytest.mark.parametrize("name, message", [
    ("hf://timm", "expected hf://ORG/REPO or hf://ORG/REPO/FILE"),
    ("hf://timm/", "expected hf://ORG/REPO"),
    ("hf:///resnet18.tv_in1k", "expected hf://ORG/REPO"),
    ("hf://timm/resnet18.tv_in1k/README.md", "README.md is not a weights file"),
])
def test_malformed_names(name, message):
    with pytest.raises(hub.HubError, match=message):
        hub.parse(name)
    assert not hub.is_hub_name("weights/hf/resnet18.npz")


def test_file_in_the_name_picks_that_file(hub_home):
    """`hf://ORG/REPO/FILE` reads FILE; `hf://ORG/REPO` reads model.safetensors."""
    snapshot = write_cache(hub_home, "me/two-files", {
        "model.safetensors": {"a": np.zeros(3, np.float32)},
        "other.safetensors": {"a": np.arange(3, dtype=np.float32)},
    })
    assert hub.fetch("hf://me/two-files") == str(snapshot / "model.safetensors")
    path = hub.fetch("hf://me/two-files/other.safetensors")
    assert path == str(snapshot / "other.safetensors")
    state, local = hub.read_state_dict("hf://me/two-files/other.safetensors")
    assert local == path
    np.testing.assert_array_equal(state["a"], np.arange(3))


def test_timm_vgg16_names_load_as_torchvision_ones(hub_home):
    """timm's VGG-16 file (`pre_logits.fc1/fc2` as 7x7 / 1x1 convolutions, `head.fc`) fills
    the backbone exactly as torchvision's (`classifier.0/3` Linear weights) does."""
    variables = abstract_variables(backbones.create("vgg16", width=1 / 8))  # fc6: 7x7x64 -> 512
    rng = np.random.default_rng(0)
    torchvision = {}
    for path, leaf in traverse_util.flatten_dict(variables["params"]).items():
        shape = leaf.shape
        if path[0] in ("fc6", "fc7") and len(shape) == 4:  # Linear [out, in * kh * kw]
            shape = (shape[3], shape[2] * shape[0] * shape[1])
        elif len(shape) == 4:
            shape = (shape[3], shape[2], shape[0], shape[1])
        torchvision[torch_key("vgg16", path)] = rng.standard_normal(shape).astype(np.float32)
    torchvision["classifier.6.weight"] = rng.standard_normal((1000, 512)).astype(np.float32)
    torchvision["classifier.6.bias"] = np.zeros(1000, np.float32)
    timm = {}  # timm/models/vgg.py `_filter_fn`
    for key, array in torchvision.items():
        if key.startswith("classifier.0."):
            key, array = key.replace("classifier.0.", "pre_logits.fc1."), (
                array.reshape(-1, 64, 7, 7) if array.ndim == 2 else array)
        elif key.startswith("classifier.3."):
            key, array = key.replace("classifier.3.", "pre_logits.fc2."), (
                array.reshape(-1, 512, 1, 1) if array.ndim == 2 else array)
        elif key.startswith("classifier.6."):
            key = key.replace("classifier.6.", "head.fc.")
        timm[key] = array
    assert "pre_logits.fc1.weight" in timm and timm["pre_logits.fc1.weight"].ndim == 4
    write_cache(hub_home, "timm/vgg16.tv_in1k", {"model.safetensors": timm})
    state, _ = hub.read_state_dict("hf://timm/vgg16.tv_in1k")
    assert set(state) == set(torchvision)
    got = traverse_util.flatten_dict(backbones.load_torch_weights(variables, state, "vgg16"))
    want = traverse_util.flatten_dict(
        backbones.load_torch_weights(variables, torchvision, "vgg16"))
    assert set(got) == set(want)
    for path, array in want.items():
        np.testing.assert_array_equal(got[path], array, err_msg="/".join(path))


@pytest.mark.parametrize("error, message", [
    ("RepositoryNotFoundError", "Hugging Face repo timm/nope.tv_in1k not found"),
    ("RemoteEntryNotFoundError",
     "Hugging Face repo timm/nope.tv_in1k has no file model.safetensors"),
    ("LocalEntryNotFoundError", "cannot reach the Hugging Face hub"),
])
def test_online_failures_are_one_line(error, message, monkeypatch):
    """Online errors of huggingface_hub (simulated: nothing downloads) become one line."""
    import huggingface_hub  # pylint: disable=import-outside-toplevel
    from huggingface_hub import constants, errors  # pylint: disable=import-outside-toplevel

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cls = getattr(errors, error)

    def fail(repo_id, filename, **kwargs):
        assert kwargs == {"local_files_only": False}
        err = cls.__new__(cls)  # HTTP errors want a response; the message is all we need
        Exception.__init__(err, "404 Client Error\nsecond line")
        raise err

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    with pytest.raises(hub.HubError) as raised:
        hub.fetch("hf://timm/nope.tv_in1k")
    assert str(raised.value).startswith("hf://timm/nope.tv_in1k: ")
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_environment_alone_selects_cache_and_offline_mode(tmp_path):
    """A fresh process given only `HF_HOME` and `HF_HUB_OFFLINE=1` reads the cached repo and
    refuses the uncached one with the command that pre-downloads it."""
    snapshot = write_cache(tmp_path, REPO, {"model.safetensors": {"a": np.ones(2, np.float32)}})
    code = ("import json; from lapseg.backbones import hub\n"
            "out = {'path': hub.fetch('hf://timm/resnet18.tv_in1k')}\n"
            "try:\n    hub.fetch('hf://timm/resnet50.tv_in1k')\n"
            "except hub.HubError as err:\n    out['error'] = str(err)\n"
            "print(json.dumps(out))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE")}
    env.update(ENV, HF_HOME=str(tmp_path), JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["path"] == str(snapshot / "model.safetensors")
    assert out["error"].startswith("hf://timm/resnet50.tv_in1k: model.safetensors of Hugging "
                                   "Face repo timm/resnet50.tv_in1k is not in the hub cache "
                                   f"{tmp_path / 'hub'} and HF_HUB_OFFLINE is set")
    assert "`hf download timm/resnet50.tv_in1k model.safetensors`" in out["error"]


# Through `lapseg train` ------------------------------------------------------------------


def test_training_from_hub_name_keeps_the_files_kernels(hub_home, data_dir, tmp_path,
                                                        one_eval_batch):
    """`lapseg train --config.init.backbone_weights=hf://timm/resnet18.tv_in1k`, one step at
    learning rate 0, offline from the cache: every backbone kernel (and BN scale and bias)
    in the checkpoint is the file's."""
    state_dict = resnet18_file()
    write_cache(hub_home, REPO, {"model.safetensors": state_dict})
    workdir = tmp_path / "run"
    code = helpers.run("train", f"--workdir={workdir}", *TRAIN_FLAGS,
                       f"--config.data.data_dir={data_dir}",
                       f"--config.init.backbone_weights=hf://{REPO}")
    assert code == 0
    checkpointer = checkpoint_lib.Checkpointer(workdir / "checkpoints")
    assert checkpointer.latest_step() == 1
    saved = checkpointer.read()
    checkpointer.close()
    params = {"params/" + "/".join(k): np.asarray(v)
              for k, v in traverse_util.flatten_dict(dict(saved["params"])).items()}
    want = expected_backbone(state_dict, params)
    kernels = [p for p in want if p.endswith("/kernel")]
    assert len(kernels) == 20  # ResNet-18: stem, 16 block convolutions, 3 downsamples
    assert len(want) == sum("/backbone/" in p for p in params)  # every backbone param
    for path, array in want.items():
        assert params[path].shape == array.shape, path
        np.testing.assert_array_equal(params[path], array, err_msg=path)


def test_uncached_repo_offline_fails_before_step_0_in_one_line(hub_home, data_dir, tmp_path,
                                                               monkeypatch):
    """An uncached repo with HF_HUB_OFFLINE=1: exit status 2, one line (no traceback)
    naming the repo and the pre-download command; no step ran, no checkpoint."""
    write_cache(hub_home, REPO, {"model.safetensors": resnet18_file()})  # another repo
    steps = []
    monkeypatch.setattr(step_lib, "jit_train_step", lambda *a, **k: steps.append(1))
    workdir = tmp_path / "run"
    message = helpers.run("train", f"--workdir={workdir}", *TRAIN_FLAGS,
                          f"--config.data.data_dir={data_dir}",
                          "--config.init.backbone_weights=hf://timm/resnet34.tv_in1k")
    helpers.one_line(
        message, "lapseg train: config.init.backbone_weights: hf://timm/resnet34.tv_in1k: ",
        "Hugging Face repo timm/resnet34.tv_in1k is not in the hub cache",
        "HF_HUB_OFFLINE is set", "`hf download timm/resnet34.tv_in1k model.safetensors`")
    assert steps == []
    assert checkpoint_lib.Checkpointer(workdir / "checkpoints").latest_step() is None
    metrics = workdir / "metrics.jsonl"
    assert not metrics.exists() or not metrics.read_text().strip()


def test_init_error_names_the_field_for_hub_names(hub_home):
    """`lapseg.train.init` turns a hub failure into its one-line `InitError`."""
    abstract = {"params": {"backbone": {}}}
    with pytest.raises(init_lib.InitError, match=r"^config.init.backbone_weights: "
                       r"hf://timm/resnet50.tv_in1k: model.safetensors of Hugging Face repo"):
        init_lib.from_backbone_weights(abstract, "hf://timm/resnet50.tv_in1k", "resnet50")
