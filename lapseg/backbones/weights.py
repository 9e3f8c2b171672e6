"""PyTorch weights onto lapseg backbones: reading state dicts, mapping names and layouts.

A state dict is a `dict[str, np.ndarray]` in torchvision's naming (`layer1.0.conv1.weight`,
`features.0.weight`, ...). `read_state_dict` reads one from

- `.npz` (what `lapseg convert-weights` writes; no PyTorch needed),
- `.safetensors` (read with the `safetensors` package; bfloat16 becomes float32),
- `.pth` / `.pt` / `.bin` (needs PyTorch, imported only then).

`load_torch_weights(variables, state_dict, arch)` fills a backbone's flax variables
('params' and 'batch_stats'): each flax leaf names the PyTorch key it expects
(`torch_key`), conv weights go OIHW -> HWIO, Linear weights of VGG's classifier are
reshaped to fc6's 7x7 and fc7's 1x1 kernels, BatchNorm running mean/var go to
'batch_stats' (`num_batches_tracked` is ignored). Missing, unexpected and
mis-shaped keys are all listed in one ValueError.
"""

import fnmatch
import pathlib

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors.numpy
from flax import traverse_util

from lapseg.backbones import vgg

# Keys of classification heads that a backbone does not have, ignored by default.
DEFAULT_IGNORE = {"resnet": ("fc.*",), "vgg16": ("classifier.6.*",)}
ALWAYS_IGNORED = ("*num_batches_tracked",)

# (ConvBN part, flax leaf) -> PyTorch parameter/buffer name.
_LEAF_NAMES = {
    ("conv", "kernel"): "weight",
    ("conv", "bias"): "bias",
    ("bn", "scale"): "weight",
    ("bn", "bias"): "bias",
    ("bn", "mean"): "running_mean",
    ("bn", "var"): "running_var",
}


def _vgg_module_names() -> dict[str, str]:
    """VGG-16 flax conv name -> torchvision module name (`features.{i}`, `classifier.{i}`)."""
    names, index = {"fc6": "classifier.0", "fc7": "classifier.3"}, 0
    for block, (_, convs) in enumerate(vgg.STAGES, start=1):
        for conv in range(1, convs + 1):
            names[f"conv{block}_{conv}"] = f"features.{index}"
            index += 2  # Conv2d, ReLU
        index += 1  # MaxPool2d
    return names


_VGG_MODULES = _vgg_module_names()

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg16")


def _family(arch: str) -> str:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
    return "vgg16" if arch == "vgg16" else "resnet"


def torch_key(arch: str, path: tuple[str, ...]) -> str:
    """The PyTorch state-dict key of a flax leaf `path` (without its collection).

    ResNet: `('layer1_0', 'conv2', 'bn', 'mean')` -> `'layer1.0.bn2.running_mean'`,
    `('layer2_0', 'downsample', 'conv', 'kernel')` -> `'layer2.0.downsample.0.weight'`,
    stem `('conv1', 'conv', 'kernel')` -> `'conv1.weight'` (deep stem: conv2, conv3).
    VGG-16: `('conv1_1', 'conv', 'bias')` -> `'features.0.bias'`, `('fc6', 'conv', 'kernel')`
    -> `'classifier.0.weight'`.
    """
    if len(path) < 3 or tuple(path[-2:]) not in _LEAF_NAMES:
        raise ValueError(f"no PyTorch name for flax path {'/'.join(path)} (not a ConvBN leaf)")
    *blocks, unit, part, leaf = path
    if _family(arch) == "vgg16":
        if blocks or unit not in _VGG_MODULES:
            raise ValueError(f"no VGG-16 PyTorch name for flax path {'/'.join(path)}")
        module = _VGG_MODULES[unit]
    elif unit == "downsample":
        module = "downsample.0" if part == "conv" else "downsample.1"
    else:
        module = unit if part == "conv" else unit.replace("conv", "bn", 1)
    return ".".join([b.replace("_", ".") for b in blocks] + [module, _LEAF_NAMES[(part, leaf)]])


def _to_flax_layout(array: np.ndarray, target_shape: tuple[int, ...]) -> np.ndarray:
    """OIHW conv weight (or [O, I*kh*kw] Linear weight) -> HWIO; other arrays as they are."""
    if len(target_shape) != 4:
        return array
    kh, kw, cin, cout = target_shape
    if array.ndim == 2 and array.size == kh * kw * cin * cout:
        array = array.reshape(cout, cin, kh, kw)  # Linear over a flattened C x H x W input
    if array.ndim != 4:
        return array
    return array.transpose(2, 3, 1, 0)


def load_torch_weights(variables, state_dict, arch: str, *, ignore=None) -> dict:
    """Returns `variables` with 'params' and 'batch_stats' replaced by `state_dict`'s arrays.

    Args:
      variables: the backbone's variables, e.g. from `backbone.init(...)` or
        `jax.eval_shape(backbone.init, ...)` (only shapes and dtypes are used; leaves
        keep their dtype). Other collections pass through unchanged.
      state_dict: `{torchvision key: array}` (numpy or anything `np.asarray` takes).
      arch: 'resnet18', ..., 'resnet152' or 'vgg16' (selects the naming scheme).
      ignore: fnmatch patterns of state-dict keys to drop first; default
        `('fc.*',)` for ResNet and `('classifier.6.*',)` for VGG-16 (the ImageNet
        classifier). `num_batches_tracked` is always dropped.

    Returns:
      A new variables dict of jnp arrays.

    Raises:
      ValueError: listing every missing, unexpected and mis-shaped key.
    """
    family = _family(arch)
    patterns = tuple(DEFAULT_IGNORE[family] if ignore is None else ignore) + ALWAYS_IGNORED
    provided = {
        k: v for k, v in state_dict.items() if not any(fnmatch.fnmatchcase(k, p) for p in patterns)
    }
    flat = traverse_util.flatten_dict(dict(variables))
    loaded, missing, misshaped, used = {}, [], [], set()
    for path, leaf in flat.items():
        if path[0] not in ("params", "batch_stats"):
            loaded[path] = leaf
            continue
        key = torch_key(arch, path[1:])
        if key not in provided:
            missing.append(f"{key} (for {'/'.join(path)}, shape {tuple(leaf.shape)})")
            continue
        used.add(key)
        source = np.asarray(provided[key])
        array = _to_flax_layout(source, tuple(leaf.shape))
        if array.shape != tuple(leaf.shape):
            misshaped.append(
                f"{key}: {source.shape} cannot fill {'/'.join(path)} of shape {tuple(leaf.shape)}"
            )
            continue
        loaded[path] = jnp.asarray(array, dtype=leaf.dtype)
    unexpected = sorted(set(provided) - used)
    kinds = (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
    problems = [(f"{len(items)} {kind}", items) for kind, items in kinds if items]
    if problems:
        lines = [f"state dict does not fit the {arch} variables:"]
        for title, items in problems:
            lines.append(f"  {title}:")
            lines.extend(f"    {item}" for item in items)
        raise ValueError("\n".join(lines))
    return traverse_util.unflatten_dict(loaded)


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    """The tensors of a `.safetensors` file (the `safetensors` package); bfloat16 -> float32."""
    try:
        arrays = safetensors.numpy.load_file(str(path))
    except Exception as err:  # the package raises its own SafetensorError and others
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    return {name: array.astype(np.float32) if array.dtype == ml_dtypes.bfloat16 else array
            for name, array in arrays.items()}


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise ImportError(
            f"reading {path} needs PyTorch (pip install 'lapseg[torch]'); or convert it to .npz "
            "on a machine with PyTorch: lapseg convert-weights IN.pth OUT.npz"
        ) from err
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):  # training checkpoints nest the weights
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    arrays = {}
    for name, tensor in obj.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{path}: entry {name!r} is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach()
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
            tensor = tensor.float()
        arrays[name] = tensor.numpy()
    return arrays


def read_state_dict(path) -> dict[str, np.ndarray]:
    """Reads `{key: np.ndarray}` from `.npz`, `.safetensors` or (with PyTorch) `.pth`/`.pt`/`.bin`.

    bfloat16 tensors become float32. A `module.` prefix on every key (checkpoints of
    `nn.DataParallel`) is removed.
    """
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    elif suffix == ".safetensors":
        arrays = _read_safetensors(path)
    elif suffix in (".pth", ".pt", ".bin"):
        arrays = _read_torch(path)
    else:
        raise ValueError(f"{path}: unknown weight format {suffix!r} (.npz, .safetensors, .pth)")
    if arrays and all(name.startswith("module.") for name in arrays):
        arrays = {name[len("module.") :]: array for name, array in arrays.items()}
    return arrays


def check_state_dict(state_dict, arch: str, *, deep_stem: bool = False, ignore=None) -> None:
    """Raises ValueError (listing the keys) unless `state_dict` loads into backbone `arch`.

    Abstract: the backbone's variables are only shapes (`jax.eval_shape`), nothing is run.

    Args:
      state_dict: PyTorch key -> array (`read_state_dict`).
      arch: 'resnet18' ... 'resnet152' or 'vgg16'.
      deep_stem: a ResNet with the deep (three 3x3 convolutions) stem.
      ignore: fnmatch patterns of keys left out (default: the ImageNet classifier's).
    """
    import jax  # pylint: disable=import-outside-toplevel

    from lapseg.backbones import resnet  # pylint: disable=import-outside-toplevel

    if _family(arch) == "resnet":
        backbone = resnet.ResNet(depth=int(arch.removeprefix("resnet")), deep_stem=deep_stem)
    elif deep_stem:
        raise ValueError(f"deep_stem is for ResNets, not {arch}")
    else:
        backbone = vgg.VGG16()
    abstract = jax.eval_shape(
        lambda: backbone.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    load_torch_weights(abstract, state_dict, arch, ignore=ignore)
