"""Backbone weights by Hugging Face hub name: `hf://ORG/REPO` or `hf://ORG/REPO/FILE`.

Why: the torchvision ImageNet weights the paper configs start from sit on the Hugging Face
hub as safetensors (timm's `resnet50.tv_in1k` and friends), so a user can name them instead
of installing PyTorch, saving a state dict and converting it (`lapseg convert-weights`,
which stays for `.pth` files). `config.init.backbone_weights = 'hf://timm/resnet50.tv_in1k'`
reads them through this module (`lapseg.train.init`).

- `parse('hf://ORG/REPO')` -> `('ORG/REPO', 'model.safetensors')`; `hf://ORG/REPO/FILE`
  picks FILE (which may sit in a folder of the repo: `hf://ORG/REPO/sub/w.safetensors`).
  FILE is a `.safetensors`, `.npz` or (needs PyTorch) `.pth` / `.pt` / `.bin` file
  (`lapseg.backbones.read_state_dict`). Always the repo's `main` revision.
- `fetch(name)`: the local path of that file, from `huggingface_hub.hf_hub_download`. The
  hub's own settings apply: the cache under `HF_HOME` (`$HF_HOME/hub`, or `HF_HUB_CACHE`),
  `HF_TOKEN` for gated or private repos, `HF_ENDPOINT`. With `HF_HUB_OFFLINE=1` nothing is
  downloaded (`local_files_only`): the file must already be in the cache, e.g. from
  `hf download ORG/REPO FILE` run with the same `HF_HOME` on a machine with network (the
  cache directory can be copied). `huggingface_hub` is imported only here, on first use.
- `read_state_dict(name)`: the file's `{key: np.ndarray}` in torchvision's names. timm's
  ResNets use torchvision's names already (`conv1`, `bn1`, `layer1.0.conv1`, ...,
  `downsample.0`, `fc`); timm's VGG-16 (`timm/vgg16.tv_in1k`) keeps `features.N` but holds
  torchvision's classifier as convolutions, `pre_logits.fc1` (4096 x 512 x 7 x 7),
  `pre_logits.fc2` (4096 x 4096 x 1 x 1) and `head.fc`: these are renamed to
  `classifier.0`, `.3` and `.6`, and the convolution weights fill fc6 / fc7 as they are.

Every failure (offline with nothing cached, a repo or file that does not exist, no network)
is a `HubError` whose message is one line naming the repo and, where a download would fix
it, the command that pre-downloads the file.
"""


import numpy as np

from lapseg.backbones import weights as weights_lib

PREFIX = "hf://"
DEFAULT_FILE = "model.safetensors"
# Formats `read_state_dict` reads (`lapseg.backbones.weights.read_state_dict`).
_SUFFIXES = (".safetensors", ".npz", ".pth", ".pt", ".bin")
# timm's VGG names -> torchvision's (timm/models/vgg.py `_filter_fn`, in reverse).
_TIMM_VGG_NAMES = (("pre_logits.fc1.", "classifier.0."), ("pre_logits.fc2.", "classifier.3."),
                   ("head.fc.", "classifier.6."))


class HubError(ValueError):
    """An `hf://` name that is malformed or cannot be read; the message is one line."""


def is_hub_name(value) -> bool:
    """Whether `value` is an `hf://...` name (not a local path)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def parse(name: str) -> tuple[str, str]:
    """`(repo_id, filename)` of `hf://ORG/REPO[/FILE]`; FILE defaults to `model.safetensors`."""
    if not is_hub_name(name):
        raise HubError(f"{name!r} is not a Hugging Face name (hf://ORG/REPO[/FILE])")
    parts = name[len(PREFIX):].split("/")
    if len(parts) < 2 or not all(parts):
        raise HubError(f"{name}: expected hf://ORG/REPO or hf://ORG/REPO/FILE, e.g. "
                       f"hf://timm/resnet50.tv_in1k (FILE defaults to {DEFAULT_FILE})")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:]) or DEFAULT_FILE
    if not filename.lower().endswith(_SUFFIXES):
        raise HubError(f"{name}: {filename} is not a weights file lapseg reads "
                       f"({', '.join(_SUFFIXES)})")
    return repo_id, filename


def download_command(repo_id: str, filename: str) -> str:
    """The shell command that puts `filename` of `repo_id` into the hub cache (`hf`, the
    CLI of huggingface_hub >= 0.34)."""
    return f"hf download {repo_id} {filename}"


def _offline(constants) -> bool:
    """`HF_HUB_OFFLINE` as huggingface_hub read it (at its import): lapseg reads no
    environment variable of its own here."""
    return bool(constants.HF_HUB_OFFLINE)


def fetch(name: str) -> str:
    """The local path of `hf://ORG/REPO[/FILE]`, downloaded into (or found in) the hub cache.

    Raises:
      HubError: one line naming the repo: not cached while offline (with the command that
        pre-downloads it), no such repo, revision or file, no network, no huggingface_hub.
    """
    repo_id, filename = parse(name)
    try:
        import huggingface_hub  # pylint: disable=import-outside-toplevel
        from huggingface_hub import constants  # pylint: disable=import-outside-toplevel
        from huggingface_hub import errors  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise HubError(f"{name}: reading Hugging Face names needs huggingface_hub "
                       f"(pip install huggingface_hub)") from err
    offline = _offline(constants)
    command = download_command(repo_id, filename)
    where = f"the hub cache {constants.HF_HUB_CACHE}"
    try:
        return huggingface_hub.hf_hub_download(repo_id, filename, local_files_only=offline)
    except errors.LocalEntryNotFoundError as err:
        if offline:
            raise HubError(
                f"{name}: {filename} of Hugging Face repo {repo_id} is not in {where} and "
                f"HF_HUB_OFFLINE is set; pre-download it with `{command}` (with network and "
                f"the same HF_HOME), or unset HF_HUB_OFFLINE") from err
        raise HubError(f"{name}: cannot reach the Hugging Face hub and {filename} of repo "
                       f"{repo_id} is not in {where}; pre-download it with `{command}` where "
                       f"there is network (with the same HF_HOME)") from err
    except errors.GatedRepoError as err:
        raise HubError(f"{name}: Hugging Face repo {repo_id} is gated; accept its terms on "
                       f"the hub and log in (`hf auth login` or HF_TOKEN)") from err
    except errors.RepositoryNotFoundError as err:
        raise HubError(f"{name}: Hugging Face repo {repo_id} not found (a misspelt name, or a "
                       f"private repo: log in with `hf auth login` or set HF_TOKEN)") from err
    except errors.RevisionNotFoundError as err:
        raise HubError(f"{name}: Hugging Face repo {repo_id} has no revision 'main'") from err
    except errors.EntryNotFoundError as err:
        raise HubError(f"{name}: Hugging Face repo {repo_id} has no file {filename} (name "
                       f"another with hf://{repo_id}/FILE)") from err
    except (OSError, ValueError) as err:  # HTTP errors, invalid repo ids, a full disk
        detail = " ".join(str(err).split())
        raise HubError(f"{name}: cannot read {filename} of Hugging Face repo {repo_id} "
                       f"({type(err).__name__}: {detail})") from err


def timm_to_torchvision(state_dict: dict) -> dict:
    """`state_dict` with timm's VGG names (`pre_logits.fc1/fc2`, `head.fc`) renamed to
    torchvision's (`classifier.0/3/6`); other keys (timm's ResNets: already torchvision's
    names) unchanged. fc6 / fc7 weights stay 4-D (`load_torch_weights` takes OIHW)."""
    renamed = {}
    for key, array in state_dict.items():
        for timm_name, torchvision_name in _TIMM_VGG_NAMES:
            if key.startswith(timm_name):
                key = torchvision_name + key[len(timm_name):]
                break
        renamed[key] = array
    return renamed


def read_state_dict(name: str) -> tuple[dict[str, np.ndarray], str]:
    """`(state_dict, path)`: the weights `hf://ORG/REPO[/FILE]` names, in torchvision's key
    names (`timm_to_torchvision`), and the local file read (in the hub cache)."""
    path = fetch(name)
    state_dict = weights_lib.read_state_dict(path)
    return timm_to_torchvision(state_dict), path

