"""The config schema (every field the training system reads, with its default), the default
job, and a run's saved config.

Experiment configs (`configs/*.py`) start from `base_config()` (or `default_job()`) and
change a few fields:

    from lapseg.train.config import base_config

    def get_config():
        config = base_config()
        config.model = 'pspnet'
        ...
        return config

Override any field on the command line, e.g. `--config.data.batch_size=16`; a misspelt
field is an error naming it (the config is locked). Training writes the resolved config to
`<workdir>/config.json` (`save`); `load` reads it back, and `get_config('<workdir>/config.json')`
makes it a config file argument (`--config=lapseg/train/config.py:W/config.json`), which is
how `lapseg eval` / `lapseg predict` restore a work dir without `--config`.
"""

import contextlib
import json
import math
import os

import ml_collections

from lapseg.train.lock import WorkdirWriteError

# The resolved config of a run, in its work dir. This module imports neither JAX nor
# lapseg.data at import time (they are imported where used), so that `lapseg.cli.common`
# can take this name from here.
CONFIG_FILE = "config.json"


def base_config() -> ml_collections.ConfigDict:
    """The schema: every field with its default (the data fields from `lapseg.data`)."""
    from lapseg.data import pipeline as data_pipeline  # pylint: disable=import-outside-toplevel

    config = ml_collections.ConfigDict()
    config.seed = 0

    # Model: `lapseg.models.create_model(config.model, num_classes=..., **config.model_kwargs)`.
    config.model = "fcn8s"
    config.model_kwargs = ml_collections.ConfigDict(
        {"backbone": "resnet18", "backbone_kwargs": {"output_stride": 32, "width": 0.25}})
    config.dtype = "float32"  # compute dtype: "float32" or "bfloat16" (params stay f32)
    # Label-fitted constants (LRR bases, the DUpsampling matrix; `lapseg.bases`): fitted from
    # the training labels before step 0 and kept in `path`, or `<workdir>/basis.npz` when
    # empty; an existing file is reused. `num_batches` caps the label batches read (0: all).
    # `lrr_scale`: LRR bases at unit flat-field gain ('flat_field') or the reference's scale.
    config.basis = ml_collections.ConfigDict({"path": "", "num_batches": 20,
                                              "lrr_scale": "flat_field"})

    # Initialisation from weights (`lapseg.train.init`), applied to a fresh run only (a
    # resumed run restores its own checkpoint). `backbone_weights`: a .pth / .npz /
    # .safetensors file in torchvision's ResNet / VGG-16 layout for the backbone
    # (`lapseg convert-weights` makes the .npz). `checkpoint`: another lapseg run (its work
    # dir, checkpoints/ dir or a step dir); every variable whose path and shape match is
    # copied (a warm start: ICNet from a PSPNet, the same model with other classes).
    config.init = ml_collections.ConfigDict(
        {"backbone_weights": ml_collections.config_dict.placeholder(str),
         "checkpoint": ml_collections.config_dict.placeholder(str)})

    # Data: `lapseg.data.create_loader(config.data, ...)`; the defaults are the loader's own.
    config.data = data_pipeline.default_config()

    # Optimiser (`lapseg.train.optim`): SGD momentum, poly 0.9 with warm-up.
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 0.1  # from scratch with BN (shapes: 0.1 > 0.05 > 0.02)
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 1e-4
    # Which parameters are decayed (`lapseg.train.optim.WEIGHT_DECAY_MASKS`): 'kernels'
    # (ndim > 1) or 'all' (BatchNorm scales/offsets, biases and scalars too, as the PyTorch
    # references' `torch.optim.SGD(model.parameters(), weight_decay=...)`).
    config.optimizer.weight_decay_mask = "kernels"
    config.optimizer.warmup_steps = 50
    config.optimizer.lr_power = 0.9
    # Per-parameter-group learning rates: ordered (path pattern, multiplier), first match wins,
    # unmatched parameters 1x (`lapseg.train.optim`), e.g. (('backbone/*', 1.0), ('*', 10.0)).
    config.optimizer.lr_multipliers = ()

    # Loss (`lapseg.losses.for_model`): output key -> weight (LRR: 'level_32' ... 'level_4').
    config.loss = ml_collections.ConfigDict()
    config.loss.weights = {"logits": 1.0}
    config.loss.class_weights = ml_collections.config_dict.placeholder(tuple)

    config.num_train_steps = 6500
    config.log_every_steps = 50
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 2
    # At every evaluation, this many validation images with their predictions and ground
    # truth go to TensorBoard (`lapseg.train.preview`); 0: none.
    config.preview_images = 3
    # Weights & Biases (`pip install 'lapseg[wandb]'`): the project every scalar and preview
    # image also goes to; None: off. WANDB_MODE=offline keeps the run on disk.
    config.wandb_project = ml_collections.config_dict.placeholder(str)
    # A step whose loss or gradient norm is not finite (`lapseg.train.step.NONFINITE_MODES`):
    # 'stop' raises `lapseg.train.loop.DivergenceError` before any checkpoint, `best/` or
    # evaluation of the diverged state; 'skip' drops that step's update and goes on, logging
    # the count as `skipped_steps`. Either way no non-finite state is ever saved.
    config.nonfinite = "stop"
    # Several processes (hosts) training one model (`lapseg.train.distributed`;
    # docs/training.md: "Several processes"). Off by default. `enabled = True` joins a job whose settings are
    # auto-detected (a TPU pod slice, SLURM, Open MPI); setting `coordinator_address`,
    # `num_processes` and `process_id` (a manual launch: every process the same address
    # and count, its own id) turns it on too, any field left unset being auto-detected.
    # `local_device_ids`: the accelerators this process uses (None: JAX's choice; under
    # SLURM on GPUs that is one per task). A process that dies makes the others exit within
    # `heartbeat_timeout_seconds`; one that never joins, within
    # `initialization_timeout_seconds`.
    config.distributed = distributed_defaults()
    # The device mesh `('data', 'spatial')` (`lapseg.train.step.make_mesh`): `spatial`
    # devices share each image, split along its height (XLA exchanges the halos of the
    # convolutions), so per-device activation memory shrinks with it; the batch is split
    # over the remaining `device_count / spatial` devices.
    config.mesh = ml_collections.ConfigDict({"spatial": 1})
    return config


class ConfigError(ValueError):
    """A config field holds a value training cannot use; the message names the field, the
    value, and what it must be. `todo`: what to do, when more than setting that field."""

    def __init__(self, message: str, todo: str | None = None):
        super().__init__(message)
        self.todo = todo


DTYPES = ("float32", "bfloat16")
NONFINITE_MODES = ("stop", "skip")  # = lapseg.train.step.NONFINITE_MODES


def _size_pair(value) -> bool:
    return (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))


def validate(config) -> None:
    """Raises `ConfigError` naming the first field of `config` training cannot use.

    Checked before anything is built or written, so that a typo costs a second, not a
    crash at the first evaluation or checkpoint (`check_eval_size` once the dataset is
    known).
    """

    # pylint: disable=import-outside-toplevel  (the registries import JAX)
    from lapseg import backbones, data, models
    from lapseg.ops import normalize

    def fail(field, value, must, todo=None):
        raise ConfigError(f"config.{field} = {value!r}: {must}", todo)

    for field, value, known in (
            ("model", config.model, models.names()),
            ("model_kwargs.backbone", config.model_kwargs.get("backbone"), backbones.names()),
            ("data.dataset", config.data.dataset, data.names()),
            ("data.normalize", config.data.normalize, normalize.CONVENTIONS)):
        if value is not None and value not in known:
            fail(field, value, f"unknown; choose from {', '.join(known)}")

    def at_least(field, minimum):
        value = config
        for part in field.split("."):
            value = value[part]
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            fail(field, value, f"must be an integer >= {minimum}")

    at_least("num_train_steps", 0)
    if "preview_images" in config:
        at_least("preview_images", 0)
    if config.get("wandb_project") is not None:
        import importlib.util  # pylint: disable=import-outside-toplevel

        if importlib.util.find_spec("wandb") is None:
            fail("wandb_project", config.wandb_project, "needs the wandb package",
                 "pip install 'lapseg[wandb]', or set --config.wandb_project=None")
    for field in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps",
                  "keep_checkpoints", "data.batch_size"):
        at_least(field, 1)
    if config.dtype not in DTYPES:
        fail("dtype", config.dtype, f"must be one of {', '.join(DTYPES)}")
    if config.nonfinite not in NONFINITE_MODES:
        fail("nonfinite", config.nonfinite, f"must be one of {', '.join(NONFINITE_MODES)}")
    opt = config.optimizer
    if not (isinstance(opt.learning_rate, (int, float)) and math.isfinite(opt.learning_rate)
            and opt.learning_rate >= 0):  # 0: BatchNorm statistics only, weights unchanged
        fail("optimizer.learning_rate", opt.learning_rate, "must be a finite number >= 0")
    if not 0 <= opt.momentum < 1:
        fail("optimizer.momentum", opt.momentum, "must be in [0, 1)")
    if not (math.isfinite(opt.weight_decay) and opt.weight_decay >= 0):
        fail("optimizer.weight_decay", opt.weight_decay, "must be a finite number >= 0")
    at_least("optimizer.warmup_steps", 0)
    data = config.data
    for field, unset in (("crop_size", "the dataset's image size"),
                         ("eval_size", "each image at its own size")):
        if data[field] is not None and not _size_pair(data[field]):
            fail(f"data.{field}", data[field], "must be (height, width), two integers > 0, "
                 f"or None for {unset}")
    split = data.get("train_split", "train")
    if not (isinstance(split, str) and split):
        fail("data.train_split", split, "must be a split name such as 'train' (VOC: 'train_aug')")
    for field in ("worker_count", "cache_mb", "device_prefetch"):
        at_least(f"data.{field}", 0)
    for field in ("num_threads", "prefetch"):
        at_least(f"data.{field}", 1)
    if data.num_epochs is not None:
        at_least("data.num_epochs", 1)
    _validate_distributed(config.get("distributed"), fail, at_least)
    low, high = (tuple(data.scale_range) + (None, None))[:2]
    if not (len(data.scale_range) == 2 and 0 < low <= high):
        fail("data.scale_range", data.scale_range, "must be (low, high) with 0 < low <= high")
    if config.get("mesh") is not None:
        at_least("mesh.spatial", 1)


def _validate_distributed(settings, fail, at_least) -> None:
    """`config.distributed`: the timeouts positive (0 would wait forever) and the coordinator
    address `host:port` with a port in 1..65535, checked before any process starts."""
    if not isinstance(settings, ml_collections.ConfigDict):
        return
    for field in ("initialization_timeout_seconds", "heartbeat_timeout_seconds",
                  "shutdown_timeout_seconds"):
        at_least(f"distributed.{field}", 1)
    address = settings.get("coordinator_address")
    if address is not None:
        host, _, port = str(address).rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            fail("distributed.coordinator_address", address,
                 "must be 'host:port' with a port in 1..65535, e.g. '10.0.0.1:1234'")


def check_eval_size(config, info) -> None:
    """Raises `ConfigError` if `config.data.eval_size` is smaller than the images of the
    dataset (`info`: its `lapseg.data.DatasetInfo`), which evaluation pads to it, or if
    `crop_size` is unset for a dataset whose images vary in size."""
    eval_size, image_size = config.data.eval_size, info.image_size
    if config.data.crop_size is None and image_size is None:
        raise ConfigError(f"config.data.crop_size = None: {info.name} images vary in size, so "
                          "training crops need one", "set --config.data.crop_size='(H, W)'")
    if eval_size is not None and image_size is not None and any(
            e < s for e, s in zip(eval_size, image_size)):
        raise ConfigError(
            f"config.data.eval_size = {eval_size!r}: smaller than the {info.name} images "
            f"({image_size[0]}x{image_size[1]}), which are padded to it for evaluation",
            f"set --config.data.eval_size to at least {tuple(image_size)}, or leave it unset")


# The fields that make a checkpoint's variables: a resumed run must repeat them.
MODEL_FIELDS = ("model", "model_kwargs")


def _leaves(value, prefix) -> dict:
    """`{'model_kwargs.backbone_kwargs.width': 0.25, ...}`: the fields under `prefix`
    (`lapseg.ops.tree` names with '.'), lists as tuples; `{prefix: value}` for a value."""
    from lapseg.ops import tree as tree_lib  # pylint: disable=import-outside-toplevel  (JAX)

    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    named = tree_lib.flatten_with_names(value, sep=".",
                                        is_leaf=lambda node: not isinstance(node, dict))
    return {f"{prefix}.{name}" if name else prefix: _tuples(leaf) for name, leaf in named}


def check_resumable(config, workdir) -> None:
    """Raises `ConfigError` if `workdir` holds a saved config whose model (`MODEL_FIELDS`)
    differs from `config`'s, naming the first differing field and both values; resuming
    it would fail on a page of mismatched shapes. Nothing to check without a saved config."""
    path = os.path.join(os.fspath(workdir), CONFIG_FILE)
    if not os.path.isfile(path):
        return
    try:
        saved = load(path)
    except ValueError as err:
        raise ConfigError(f"work dir {workdir} has checkpoints, but {err}",
                          f"restore {path} from a backup or delete it (the next checkpoint "
                          "rewrites it)") from err
    for field in MODEL_FIELDS:
        old, new = _leaves(saved[field], field), _leaves(config[field], field)
        for key in sorted(set(old) | set(new)):
            if old.get(key, "(unset)") != new.get(key, "(unset)"):
                raise ConfigError(
                    f"work dir {workdir} holds a run trained with config.{key} = "
                    f"{old.get(key, '(unset)')!r}, this config has {new.get(key, '(unset)')!r}",
                    "to resume it, drop that override (its config.json has the right value), "
                    "or pass another --workdir")


def distributed_defaults() -> ml_collections.ConfigDict:
    """`config.distributed`: off, every launch setting unset (auto-detected when on)."""
    return ml_collections.ConfigDict({
        "enabled": False,
        "coordinator_address": ml_collections.config_dict.placeholder(str),
        "num_processes": ml_collections.config_dict.placeholder(int),
        "process_id": ml_collections.config_dict.placeholder(int),
        "local_device_ids": ml_collections.config_dict.placeholder(tuple),
        "initialization_timeout_seconds": 300,
        "heartbeat_timeout_seconds": 100,
        "shutdown_timeout_seconds": 300,
    })


SHAPES_MODELS = ("lrr", "fcn8s")


def shapes_job(model: str = "lrr") -> ml_collections.ConfigDict:
    """The embedded `shapes` job: `model` ('lrr' or 'fcn8s') on a quarter-width ResNet-18
    (output stride 32) from scratch, batch 16 of 96 x 96 crops, 4000 steps of SGD at 0.1.

    'lrr' is the default job (`default_job`): LRR-4x with K = 10 PCA bases per class fitted
    from the training labels, every pyramid level supervised (weights 1), its coefficient
    convs at 0.1x the base rate (biases 2x that), from the loss curvature at initialisation
    (`python -m benchmarks.lrr_curvature`: the head's top Hessian eigenvalue is 241 with
    unit-gain bases against FCN-8s's 24). It is sized to reach >= 0.85 val mIoU in under
    10 minutes on a 2-core CPU (docs/benchmarks.md, "The main job", has the measurement).
    'fcn8s' is the same job with FCN-8s's decoder (configs/shapes_fcn8s.py).
    """
    # pylint: disable=import-outside-toplevel  (losses and optim import JAX)
    from lapseg.losses.lrr import DEFAULT_WEIGHTS
    from lapseg.train import optim

    if model not in SHAPES_MODELS:
        raise ValueError(f"shapes_job: model must be one of {SHAPES_MODELS}, got {model!r}")
    config = base_config()
    config.data.crop_size = (96, 96)  # whole shapes images (96x96), randomly rescaled
    config.data.scale_range = (0.75, 1.5)
    config.num_train_steps = 4000
    config.model = model
    if model == "lrr":
        config.model_kwargs.num_bases = 10
        config.optimizer.lr_multipliers = optim.lrr_multipliers((0.1, 0.1, 0.1, 0.1))
        config.loss.weights = dict(DEFAULT_WEIGHTS)
    return config


def default_job() -> ml_collections.ConfigDict:
    """The embedded default job (`lapseg train` without --config): LRR on `shapes`
    (`shapes_job('lrr')`)."""
    return shapes_job("lrr")


def save(config, workdir) -> str:
    """Writes `config` to `<workdir>/config.json` atomically; returns the path."""
    path = os.path.join(os.fspath(workdir), CONFIG_FILE)
    tmp = path + ".tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(config.to_json(indent=2, sort_keys=True))
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a read-only work dir: nothing half-written stays
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise WorkdirWriteError(f"cannot write {path} ({err.strerror or err})") from err
    return path



def _tuples(value):
    """JSON lists -> tuples, recursively (configs hold tuples: sizes, feature names)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _merge(config, values, where):
    for key, value in values.items():
        if where == "" and key == "distributed" and isinstance(value, bool):
            value = {"enabled": value}  # saved before config.distributed was a group
        if key in config and isinstance(config[key], ml_collections.ConfigDict) and isinstance(value, dict):
            if key in ("model_kwargs", "loss"):  # free-form: the saved one replaces the default
                config[key] = ml_collections.ConfigDict(_tuples(value))
            else:
                _merge(config[key], value, f"{where}{key}.")
        else:
            config[key] = _tuples(value)


def load(path) -> ml_collections.ConfigDict:
    """The config saved by `save` (a `config.json` or the work dir holding one), locked.

    Fields are laid over `base_config()`, so types and placeholders are the schema's and
    fields added to the schema since the run was saved take their defaults.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: the work dir has no saved config "
                                f"(pass --config with the config it was trained with)")
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable config: {err}") from err
    config = base_config()
    try:
        if not isinstance(values, dict):
            raise TypeError(f"a JSON {type(values).__name__}, not an object")
        _merge(config, values, "")
    except (TypeError, AttributeError, KeyError, ValueError) as err:
        raise ValueError(f"{path} is not a readable config: {err}") from err
    config.lock()
    return config


def get_config(saved: str | None = None) -> ml_collections.ConfigDict:
    """Config-file entry point: the default job, or with an argument the saved config it names
    (`--config=lapseg/train/config.py:<workdir>/config.json`)."""
    return default_job() if not saved else load(saved)
