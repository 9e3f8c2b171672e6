"""Weight import: key mapping, layouts, error listings, file formats (.npz, .safetensors, .pth)."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lapseg import backbones
from lapseg.backbones.weights import torch_key


def abstract_variables(model, param_dtype=jnp.float32):
    model = model.clone(param_dtype=param_dtype)
    images = jnp.zeros((1, 32, 32, 3))
    return jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))


def torch_layout_state_dict(variables, arch, seed=0):
    """A state dict in torchvision's layout built from flax shapes: OIHW convs, BN buffers."""
    rng = np.random.default_rng(seed)
    state = {}
    for collection in ("params", "batch_stats"):
        for path, leaf in jax.tree_util.tree_flatten_with_path(variables[collection])[0]:
            names = tuple(p.key for p in path)
            shape = leaf.shape
            if len(shape) == 4:  # HWIO -> OIHW
                shape = (shape[3], shape[2], shape[0], shape[1])
            state[torch_key(arch, names)] = rng.standard_normal(shape).astype(np.float32)
    return state


@pytest.fixture(scope="module")
def resnet18():
    variables = abstract_variables(backbones.create("resnet18"))
    return variables, torch_layout_state_dict(variables, "resnet18")


@pytest.mark.parametrize(
    "arch, path, key",
    [
        ("resnet50", ("conv1", "conv", "kernel"), "conv1.weight"),
        ("resnet50", ("conv3", "bn", "scale"), "bn3.weight"),
        ("resnet50", ("layer1_0", "conv2", "bn", "mean"), "layer1.0.bn2.running_mean"),
        ("resnet50", ("layer4_2", "conv3", "bn", "var"), "layer4.2.bn3.running_var"),
        ("resnet50", ("layer2_0", "downsample", "conv", "kernel"), "layer2.0.downsample.0.weight"),
        ("resnet50", ("layer2_0", "downsample", "bn", "bias"), "layer2.0.downsample.1.bias"),
        ("vgg16", ("conv1_1", "conv", "kernel"), "features.0.weight"),
        ("vgg16", ("conv2_1", "conv", "bias"), "features.5.bias"),
        ("vgg16", ("conv5_3", "conv", "kernel"), "features.28.weight"),
        ("vgg16", ("fc6", "conv", "kernel"), "classifier.0.weight"),
        ("vgg16", ("fc7", "conv", "bias"), "classifier.3.bias"),
    ],
)
def test_torch_key(arch, path, key):
    assert torch_key(arch, path) == key


def test_loads_values_transposed_to_hwio_and_bn_stats(resnet18):
    variables, state = resnet18
    state = dict(state, **{"fc.weight": np.zeros((1000, 512)), "bn1.num_batches_tracked": 0})
    loaded = backbones.load_torch_weights(variables, state, "resnet18")
    kernel = loaded["params"]["layer1_0"]["conv2"]["conv"]["kernel"]
    np.testing.assert_array_equal(kernel, state["layer1.0.conv2.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(
        loaded["batch_stats"]["conv1"]["bn"]["var"], state["bn1.running_var"]
    )
    np.testing.assert_array_equal(loaded["params"]["conv1"]["bn"]["scale"], state["bn1.weight"])
    assert jax.tree.structure(loaded) == jax.tree.structure(variables)


def test_keeps_the_parameter_dtype():
    variables = abstract_variables(backbones.create("resnet18"), param_dtype=jnp.bfloat16)
    state = torch_layout_state_dict(abstract_variables(backbones.create("resnet18")), "resnet18")
    loaded = backbones.load_torch_weights(variables, state, "resnet18")
    assert loaded["params"]["conv1"]["conv"]["kernel"].dtype == jnp.bfloat16
    assert loaded["batch_stats"]["conv1"]["bn"]["mean"].dtype == jnp.float32


def test_errors_list_missing_unexpected_and_misshaped_keys(resnet18):
    variables, state = resnet18
    state = dict(state)
    del state["layer3.1.bn2.running_mean"], state["layer2.0.downsample.0.weight"]
    state["layer5.0.conv1.weight"] = np.zeros((3, 3, 3, 3), np.float32)
    state["layer1.0.conv1.weight"] = np.zeros((64, 64, 1, 1), np.float32)
    with pytest.raises(ValueError) as info:
        backbones.load_torch_weights(variables, state, "resnet18")
    message = str(info.value)
    assert "2 missing" in message and "1 unexpected" in message and "1 mis-shaped" in message
    for key in ("layer3.1.bn2.running_mean", "layer2.0.downsample.0.weight",
                "layer5.0.conv1.weight", "layer1.0.conv1.weight"):  # fmt: skip
        assert key in message


def test_classifier_is_unexpected_when_not_ignored(resnet18):
    variables, state = resnet18
    state = dict(state, **{"fc.weight": np.zeros((1000, 512)), "fc.bias": np.zeros(1000)})
    with pytest.raises(ValueError, match=r"2 unexpected:\n    fc.bias\n    fc.weight"):
        backbones.load_torch_weights(variables, state, "resnet18", ignore=())
    backbones.load_torch_weights(variables, state, "resnet18", ignore=["fc.*"])


def test_deep_stem_weights_do_not_fit_the_plain_stem():
    deep = abstract_variables(backbones.create("resnet50", deep_stem=True))
    plain = abstract_variables(backbones.create("resnet50"))
    with pytest.raises(ValueError, match="conv2.weight"):
        backbones.load_torch_weights(plain, torch_layout_state_dict(deep, "resnet50"), "resnet50")


def test_vgg_classifier_linear_weights_become_fc6_and_fc7_kernels():
    model = backbones.create("vgg16", width=1 / 8)  # fc6: 7x7x64 -> 512
    variables = abstract_variables(model)
    rng = np.random.default_rng(0)
    state = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables["params"])[0]:
        names = tuple(p.key for p in path)
        shape = leaf.shape
        if names[0] in ("fc6", "fc7") and len(shape) == 4:  # torchvision: Linear [out, in*7*7]
            shape = (shape[3], shape[2] * shape[0] * shape[1])
        elif len(shape) == 4:
            shape = (shape[3], shape[2], shape[0], shape[1])
        state[torch_key("vgg16", names)] = rng.standard_normal(shape).astype(np.float32)
    state["classifier.6.weight"] = np.zeros((1000, 512), np.float32)
    loaded = backbones.load_torch_weights(variables, state, "vgg16")
    fc6 = loaded["params"]["fc6"]["conv"]["kernel"]
    # torchvision flattens pool5 as (C, H, W): input index c*49 + 7*i + j.
    linear = state["classifier.0.weight"]
    assert fc6[2, 5, 7, 9] == linear[9, 7 * 49 + 2 * 7 + 5]
    fc7 = loaded["params"]["fc7"]["conv"]["kernel"]
    np.testing.assert_array_equal(fc7[0, 0], state["classifier.3.weight"].T)


def test_unknown_arch_raises(resnet18):
    with pytest.raises(ValueError, match="unknown arch"):
        backbones.load_torch_weights(resnet18[0], resnet18[1], "resnet9")


# ---------------------------------------------------------------- reading files


def test_reads_safetensors(tmp_path):
    # Written by the reference writer (the safetensors package); bfloat16 comes back as float32.
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    weight = np.arange(24, dtype="<f4").reshape(2, 3, 4)
    half = np.array([[0.5, -2.0]], dtype="<f2")
    safetensors_numpy.save_file({
        "a.weight": weight,
        "b.bf16": np.array([1.0, -6.0], ml_dtypes.bfloat16),
        "c.half": half,
        "d.count": np.array(7, "<i8"),
    }, str(tmp_path / "w.safetensors"))
    state = backbones.read_state_dict(tmp_path / "w.safetensors")
    assert sorted(state) == ["a.weight", "b.bf16", "c.half", "d.count"]
    np.testing.assert_array_equal(state["a.weight"], weight)
    np.testing.assert_array_equal(state["b.bf16"], np.array([1.0, -6.0], np.float32))
    assert state["b.bf16"].dtype == np.float32
    np.testing.assert_array_equal(state["c.half"], half)
    assert state["d.count"].shape == () and state["d.count"] == 7


def test_corrupt_safetensors_is_a_clear_error(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        backbones.read_state_dict(tmp_path / "bad.safetensors")


def test_reads_npz_and_strips_data_parallel_prefix(tmp_path):
    arrays = {"module.conv1.weight": np.ones((2, 3)), "module.fc.bias": np.zeros(2)}
    np.savez(tmp_path / "w.npz", **arrays)
    state = backbones.read_state_dict(tmp_path / "w.npz")
    assert sorted(state) == ["conv1.weight", "fc.bias"]


def test_unknown_format_raises(tmp_path):
    with pytest.raises(ValueError, match="unknown weight format"):
        backbones.read_state_dict(tmp_path / "w.h5")


def test_reads_pth_checkpoint_with_torch(tmp_path):
    torch = pytest.importorskip("torch")
    weights = {"conv1.weight": torch.randn(4, 3, 3, 3), "bn1.weight": torch.randn(4).bfloat16()}
    torch.save({"state_dict": weights, "epoch": 3}, tmp_path / "w.pth")
    state = backbones.read_state_dict(tmp_path / "w.pth")
    np.testing.assert_array_equal(state["conv1.weight"], weights["conv1.weight"].numpy())
    np.testing.assert_array_equal(state["bn1.weight"], weights["bn1.weight"].float().numpy())


def test_library_does_not_import_torch():
    code = (
        "import sys, lapseg, lapseg.backbones, lapseg.cli.convert_weights, lapseg.layers; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pth_without_torch_says_how_to_convert(tmp_path, monkeypatch):
    (tmp_path / "w.pth").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    with pytest.raises(ImportError, match="needs PyTorch.*convert-weights"):
        backbones.read_state_dict(tmp_path / "w.pth")
