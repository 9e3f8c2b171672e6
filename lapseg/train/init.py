"""Initialisation from weights (`config.init`): pretrained backbones and warm starts.

A fresh run (no checkpoint in its work dir yet) initialises its model, then, when asked,
overwrites part of those variables before the train state is made:

- `config.init.backbone_weights = PATH`: a `.pth`, `.npz` or `.safetensors` file in
  torchvision's ResNet / VGG-16 layout fills the backbone (`params['backbone']` and
  `batch_stats['backbone']`, the same in every model, DSRL included) through
  `lapseg.backbones.load_torch_weights`; everything else keeps its initialiser. A file
  that does not fit the backbone raises a ValueError listing the missing, unexpected and
  mis-shaped keys, before step 0.
- `config.init.backbone_weights = 'hf://ORG/REPO'` (or `'hf://ORG/REPO/FILE'`, FILE
  defaulting to `model.safetensors`): the same from a file of a Hugging Face hub repo, read
  through `huggingface_hub.hf_hub_download` (`lapseg.backbones.hub`), so `HF_HOME` says
  where the cache is and `HF_HUB_OFFLINE=1` reads only the cache. timm's torchvision weights:
  `hf://timm/resnet18.tv_in1k` ... `hf://timm/resnet152.tv_in1k` (torchvision's key
  names), `hf://timm/vgg16.tv_in1k` (timm's classifier names, mapped back to
  torchvision's); docs/weights.md lists them. A file that is not cached while offline, or a
  repo or file that does not exist, is an `InitError` of one line naming the repo and the
  command that pre-downloads it (`hf download ORG/REPO FILE`), before step 0.
- `config.init.checkpoint = DIR`: another lapseg run (its work dir, its `checkpoints/`
  dir or one step dir of it): every variable (`params`, `batch_stats`, `constants`) whose
  path and shape match is copied, e.g. an ICNet from a trained PSPNet (the backbone), or
  the same model with another class count (the classifiers are refused by shape).

Both are pure functions on variable pytrees returning `(variables, Report)`; `apply`
runs what `config.init` asks for (the weights first, then the checkpoint) and logs each
report. Replaced leaves come back as numpy arrays of the variable's dtype. The training
loop calls `apply` in its fresh-start branch only (`lapseg.train.loop`), between the
model's init and attaching the label-fitted constants (`lapseg.bases.attach`, which
therefore wins over constants copied from a checkpoint); a resumed run restores its own
checkpoint and never re-applies `config.init`. Every process reads the files itself.
"""

import contextlib
import dataclasses
import fnmatch
import logging
import os

import flax
import jax
import numpy as np

from lapseg import backbones
from lapseg.backbones import hub as hub_lib
from lapseg.backbones import weights as weights_lib
from lapseg.ops import tree as tree_lib
from lapseg.train import checkpoint as checkpoint_lib

log = logging.getLogger(__name__)

BACKBONE = "backbone"  # the backbone's module name in every model's variables
_WEIGHT_COLLECTIONS = ("params", "batch_stats")  # what `load_torch_weights` fills
_MAX_LISTED = 12  # paths (or groups) listed per category in the logged summary


WEIGHTS_HINT = ("convert torchvision's weights with `lapseg convert-weights` (docs/training.md: "
                "Starting from ImageNet weights) and put them there, or name a Hugging Face copy "
                "(e.g. hf://timm/resnet50.tv_in1k, docs/weights.md), or pass "
                "--config.init.backbone_weights='' to train from scratch")


class InitError(ValueError):
    """`config.init` names a file or run that is missing or does not fit the model."""


@dataclasses.dataclass(frozen=True)
class Report:
    """What an initialisation did, by variable path (`'params/backbone/conv1/conv/kernel'`).

    Attributes:
      source: what was read (a file, a checkpoint step dir).
      loaded: variables given the source's values.
      left: variables the source has nothing for: left at their initialisers.
      refused: `(path, source shape, model shape)` of variables the source has under the
        same path with another shape: also left at their initialisers.
      unused: what the source holds that no variable took (checkpoint paths, or state-dict
        keys besides `num_batches_tracked`, e.g. torchvision's `fc.*` classifier).
    """

    source: str
    loaded: tuple = ()
    left: tuple = ()
    refused: tuple = ()
    unused: tuple = ()

    def summary(self, limit: int = _MAX_LISTED) -> str:
        """Counts, then the paths of each category grouped by collection/module, truncated."""
        lines = [f"init from {self.source}: {len(self.loaded)} arrays loaded, "
                 f"{len(self.left)} left at init, {len(self.refused)} refused (shape mismatch), "
                 f"{len(self.unused)} in the source unused"]
        for title, paths in (("loaded", self.loaded), ("left at init", self.left)):
            if paths:
                lines.append(f"  {title}: {_grouped(paths, limit)}")
        if self.refused:
            shown = [f"{path} ({_shape(src)} in source, {_shape(dst)} in model)"
                     for path, src, dst in self.refused[:limit]]
            lines.append(f"  refused: {', '.join(shown)}{_more(len(self.refused), limit)}")
        if self.unused:
            lines.append(f"  unused: {_grouped(self.unused, limit)}")
        return "\n".join(lines)


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def _more(count: int, limit: int) -> str:
    return f", ... ({count - limit} more)" if count > limit else ""


def _grouped(paths, limit: int) -> str:
    """`'params/backbone (62), batch_stats/backbone (40)'`: paths counted by their first two
    components (collection and top-level module, or the first two parts of a key)."""
    counts, whole = {}, set(paths)
    for path in paths:
        sep = "/" if "/" in path else "."  # a variable path or a state-dict key
        parts = path.split(sep)
        group = sep.join(parts[:2]) if len(parts) > 2 else path
        counts[group] = counts.get(group, 0) + 1
    items = [group if count == 1 and group in whole else f"{group} ({count})"
             for group, count in counts.items()]
    return ", ".join(items[:limit]) + _more(len(items), limit)


def _flatten(variables) -> dict:
    """`{'params/a/kernel': leaf}` of a variables dict (or FrozenDict)."""
    return dict(tree_lib.flatten_with_names(variables))


def _ordered(paths) -> tuple:
    """Sorted, 'params' first (what a reader looks for)."""
    return tuple(sorted(paths, key=lambda p: (not p.startswith("params/"), p)))


def _host(array, dtype) -> np.ndarray:
    return np.asarray(jax.device_get(array)).astype(dtype, copy=False)


def requested(config) -> bool:
    """Whether `config.init` asks for any initialisation from weights."""
    init = config.get("init")
    return bool(init and (init.get("backbone_weights") or init.get("checkpoint")))


def backbone_arch(model) -> str | None:
    """The `load_torch_weights` arch of `model.backbone` ('resnet18', ..., 'vgg16'), or None
    when the model has no lapseg backbone."""
    module = getattr(model, BACKBONE, None)
    if isinstance(module, backbones.ResNet):
        return f"resnet{module.depth}"
    if isinstance(module, backbones.VGG16):
        return "vgg16"
    return None


def from_state_dict(variables, state_dict, arch: str, *, source: str = "state dict",
                    ignore=None):
    """`variables` with the backbone filled from a torchvision-layout `state_dict`.

    Args:
      variables: a model's variables (`model.init`); the backbone's sit under
        `'backbone'` in 'params' and 'batch_stats'.
      state_dict: `{torchvision key: array}` (`lapseg.backbones.read_state_dict`).
      arch: 'resnet18' ... 'resnet152' or 'vgg16'.
      source: names the state dict in the report.
      ignore: state-dict key patterns to drop (default: the ImageNet classifier's).

    Returns:
      `(variables, Report)`.

    Raises:
      ValueError: the model has no backbone variables, or (from `load_torch_weights`)
        listing the state dict's missing, unexpected and mis-shaped keys.
    """
    variables = flax.core.unfreeze(variables)
    part = {c: variables[c][BACKBONE] for c in _WEIGHT_COLLECTIONS
            if BACKBONE in variables.get(c, {})}
    if "params" not in part:
        raise ValueError(f"cannot load backbone weights ({source}): the model has no "
                         f"params['{BACKBONE}'] (top-level params: "
                         f"{', '.join(sorted(variables.get('params', {})))})")
    loaded = weights_lib.load_torch_weights(part, state_dict, arch, ignore=ignore)
    new, used = {}, set()
    for name, leaf in tree_lib.flatten_with_names(loaded):
        collection, *rest = name.split("/")
        new[f"{collection}/{BACKBONE}/" + "/".join(rest)] = leaf
        used.add(weights_lib.torch_key(arch, tuple(rest)))
    flat = _flatten(variables)
    for path, leaf in new.items():
        flat[path] = _host(leaf, flat[path].dtype)
    unused = sorted(k for k in set(state_dict) - used
                    if not any(fnmatch.fnmatchcase(k, p) for p in weights_lib.ALWAYS_IGNORED))
    report = Report(source=source, loaded=_ordered(new), left=_ordered(set(flat) - set(new)),
                    unused=tuple(unused))
    return tree_lib.unflatten_names(flat), report


def from_backbone_weights(variables, path, arch: str, *, ignore=None):
    """`variables` with the backbone read from a torchvision-layout weights file.

    Args:
      variables: a model's variables (see `from_state_dict`).
      path: a `.pth` / `.pt` / `.bin` (needs PyTorch), `.npz` or `.safetensors` file, or a
        Hugging Face name `hf://ORG/REPO[/FILE]` (`lapseg.backbones.hub`).
      arch: 'resnet18' ... 'resnet152' or 'vgg16' (e.g. `config.model_kwargs.backbone`).
      ignore: state-dict key patterns to drop (default: the ImageNet classifier's).

    Returns:
      `(variables, Report)`.

    Raises:
      InitError: a local file that does not exist, or an `hf://` name that cannot be read
        (one line naming the repo and, offline, the command that pre-downloads it).
    """
    if hub_lib.is_hub_name(path):
        try:
            state_dict, local = hub_lib.read_state_dict(path)
        except hub_lib.HubError as err:
            raise InitError(f"config.init.backbone_weights: {err}") from err
        return from_state_dict(variables, state_dict, arch,
                               source=f"backbone weights {path} ({local}) ({arch})",
                               ignore=ignore)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InitError(f"config.init.backbone_weights: {path} does not exist; {WEIGHTS_HINT}")
    state_dict = backbones.read_state_dict(path)
    return from_state_dict(variables, state_dict, arch, source=f"backbone weights {path} ({arch})",
                           ignore=ignore)


def _locate(directory):
    """`(checkpoints dir, step or None)` of a work dir, a checkpoints dir or a step dir."""
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        raise checkpoint_lib.CheckpointError(
            f"config.init.checkpoint: {directory} does not exist (give a lapseg work dir, its "
            "checkpoints/ dir or a step dir)")
    if os.path.isdir(os.path.join(directory, "checkpoints")):  # a work dir
        return os.path.join(directory, "checkpoints"), None
    name = os.path.basename(directory)
    if os.path.isdir(os.path.join(directory, "state")) and name.isdigit():  # a step dir
        return os.path.dirname(directory), int(name)
    return directory, None


def read_checkpoint(directory, step=None):
    """The variables saved in a lapseg checkpoint, as numpy arrays, without a target
    (`lapseg.train.checkpoint.read_variables`).

    Args:
      directory: a work dir, its `checkpoints/` (or `best/`) dir, or a step dir.
      step: the step to read (default: the step dir's, else the latest).

    Returns:
      `(variables, where)`: `{'params': ..., 'batch_stats': ..., ...}` (the saved state's
      `params` and `model_state`; the optimiser state is not read) and the step dir read.
    """
    root, found = _locate(directory)
    variables, step = checkpoint_lib.read_variables(
        root, step=found if step is None else step, newest_readable=False,
        what="config.init.checkpoint")
    return variables, f"{root}/{step}"


def from_checkpoint(variables, directory, *, step=None):
    """`variables` with every variable of a lapseg checkpoint whose path and shape match.

    Args:
      variables: a model's variables (`model.init`).
      directory: another run's work dir, its `checkpoints/` dir or a step dir of it.
      step: the step to read (default: the step dir's, else the latest).

    Returns:
      `(variables, Report)`: variables absent from the checkpoint are `left`, those
      saved with another shape `refused` (both keep their initial values).
    """
    saved, where = read_checkpoint(directory, step)
    saved = _flatten(saved)
    flat = _flatten(variables)
    loaded, left, refused = [], [], []
    for path, leaf in flat.items():
        if path not in saved:
            left.append(path)
        elif tuple(saved[path].shape) != tuple(leaf.shape):
            refused.append((path, tuple(saved[path].shape), tuple(leaf.shape)))
        else:
            flat[path] = _host(saved[path], leaf.dtype)
            loaded.append(path)
    report = Report(source=f"checkpoint {where}", loaded=_ordered(loaded), left=_ordered(left),
                    refused=tuple(sorted(refused, key=lambda r: (not r[0].startswith("params/"),
                                                                 r[0]))),
                    unused=_ordered(set(saved) - set(flat)))
    return tree_lib.unflatten_names(flat), report


def _log(report: Report) -> None:
    log.info("%s", report.summary())
    log.debug("init from %s, every path:\n  loaded: %s\n  left at init: %s\n  refused: %s\n"
              "  unused: %s", report.source, ", ".join(report.loaded), ", ".join(report.left),
              ", ".join(f"{p} {s} -> {t}" for p, s, t in report.refused),
              ", ".join(report.unused))


def apply(config, variables, *, arch: str | None = None):
    """`variables` initialised as `config.init` asks (unchanged when it asks nothing).

    `config.init.backbone_weights` is applied first, then `config.init.checkpoint` (which
    overwrites what both hold). Each step's `Report` is logged (INFO: counts and grouped
    paths; DEBUG: every path).

    Args:
      config: a training config (`config.init`, `config.model_kwargs.backbone`).
      variables: the model's freshly initialised variables.
      arch: the backbone's arch (`backbone_arch(model)`); default
        `config.model_kwargs.backbone`.

    Raises:
      InitError: a file or run that is missing, unreadable or does not fit the model (the
        message names it and, for the weights, the keys).
    """
    if not requested(config):
        return variables
    init = config.init
    if init.get("backbone_weights"):
        arch = arch or config.model_kwargs.get("backbone")
        if not isinstance(arch, str):
            raise InitError("config.init.backbone_weights needs the backbone's arch: set "
                            "config.model_kwargs.backbone (e.g. 'resnet50')")
        with _as_init_error("config.init.backbone_weights"):
            variables, report = from_backbone_weights(variables, init.backbone_weights, arch)
        _log(report)
    if init.get("checkpoint"):
        with _as_init_error("config.init.checkpoint"):
            variables, report = from_checkpoint(variables, init.checkpoint)
        _log(report)
    return variables


@contextlib.contextmanager
def _as_init_error(field: str):
    """Re-raises what reading and fitting a user's file raises (OSError, ValueError) as an
    `InitError` naming `field`; an `InitError` passes through."""
    try:
        yield
    except InitError:
        raise
    except (OSError, ValueError) as err:
        raise InitError(f"{field}: {err}") from err
