"""The `.npz` file of label-fitted decoder constants written by `lapseg basis`.

One file may hold LRR bases (`lrr_bases` `[patch, patch, K, C]`) and a DUpsampling
matrix (`dupsampling_w` `[L, r*r*C]`, `dupsampling_mean` `[r*r*C]`), plus `num_classes`
and, for DUpsampling, `ratio`. Models load them at init; a missing file or key is an
error that says how to make it.
"""

import os

import numpy as np


def save(path, *, num_classes: int, **arrays) -> None:
    """Writes `arrays` and `num_classes` to `path` atomically (temp file + rename)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, num_classes=np.int64(num_classes), **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)


def load(path, key: str, *, num_classes: int) -> np.ndarray:
    """Array `key` of the bases file at `path`, checked against the model's class count.

    Raises:
      FileNotFoundError: no file; the message says to run `lapseg basis`.
      ValueError: the file is unreadable, lacks `key`, or was fitted for another number
        of classes.
    """
    path = os.fspath(path) if path else ""
    if not path or not os.path.exists(path):
        raise FileNotFoundError(
            f"bases file {path!r} not found: fit it from the training labels with "
            f"`lapseg basis --config <config> --workdir <workdir>` (writes <workdir>/basis.npz) "
            f"and pass its path as the model's basis_path")
    try:
        with np.load(path) as data:
            contents = {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"bases file {path} is corrupt or not an .npz: {err}") from err
    if key not in contents:
        raise ValueError(f"bases file {path} has no {key!r} (it has {sorted(contents)}); "
                         f"re-run `lapseg basis` with this model's config")
    if int(contents.get("num_classes", -1)) != num_classes:
        raise ValueError(f"bases file {path} was fitted for {int(contents.get('num_classes', -1))} "
                         f"classes, the model has {num_classes}")
    return contents[key]
