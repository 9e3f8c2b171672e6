"""PyTorch weights onto lapseg backbones: reading state dicts, mapping names and layouts.

A state dict is a `dict[str, np.ndarray]` in torchvision's naming (`layer1.0.conv1.weight`,
`features.0.weight`, ...). `read_state_dict` reads one from

- `.npz` (what `lapseg convert-weights` writes; no PyTorch needed),
- `.safetensors` (parsed here with numpy: 8-byte little-endian header length,
  JSON header `{name: {dtype, shape, data_offsets}}`, raw little-endian data),
- `.pth` / `.pt` / `.bin` (needs PyTorch, imported only then).

`load_torch_weights(variables, state_dict, arch)` fills a backbone's flax variables
('params' and 'batch_stats'): each flax leaf names the PyTorch key it expects
(`torch_key`), conv weights go OIHW -> HWIO, Linear weights of VGG's classifier are
reshaped to fc6's 7x7 and fc7's 1x1 kernels, BatchNorm running mean/var go to
'batch_stats' (`num_batches_tracked` is ignored). Missing, unexpected and
mis-shaped keys are all listed in one ValueError.
"""

import fnmatch
import json
import pathlib

import jax.numpy as jnp
import numpy as np
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

_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip


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
    data = path.read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    header_len = int.from_bytes(data[:8], "little")
    if 8 + header_len > len(data):
        raise ValueError(f"{path}: safetensors header length {header_len} exceeds the file")
    header = json.loads(data[8 : 8 + header_len])
    buffer = memoryview(data)[8 + header_len :]
    arrays = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = buffer[begin:end]
        if entry["dtype"] == "BF16":  # bfloat16 is the top half of a float32
            bits = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        elif entry["dtype"] in _SAFETENSORS_DTYPES:
            dtype = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]]).newbyteorder("<")
            array = np.frombuffer(raw, dtype)
        else:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {entry['dtype']}")
        arrays[name] = array.reshape(entry["shape"]).astype(array.dtype.newbyteorder("="))
    return arrays


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
