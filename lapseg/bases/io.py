"""The `.npz` file of label-fitted constants (`lapseg basis`, or the training loop, writes it).

One file holds what a model needs: LRR bases (`lrr_bases` `[patch, patch, K, C]`) and/or a
DUpsampling matrix (`dupsampling_w` `[L, r*r*C]`, `dupsampling_mean` `[r*r*C]`), plus
`num_classes`. Models never read it: `lapseg.bases.attach` puts its arrays into variables.
"""

import os

import numpy as np

NUM_CLASSES_KEY = "num_classes"


def save(path, fitted: dict, *, num_classes: int) -> None:
    """Writes the arrays of `fitted` and `num_classes` to `path` atomically (temp file + rename)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **{NUM_CLASSES_KEY: np.int64(num_classes)},
             **{k: np.asarray(v) for k, v in fitted.items()})
    os.replace(tmp, path)


def load(path, *, num_classes: int | None = None) -> dict:
    """The fitted arrays in `path` (`{'lrr_bases': ..., ...}`), checked against `num_classes`.

    Raises:
      FileNotFoundError: no file; the message says how to make one.
      ValueError: the file is unreadable or was fitted for another number of classes.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"bases file {path!r} not found: fit it from the training labels with "
            f"`lapseg basis --config <config> --workdir <workdir>` (writes <workdir>/basis.npz)")
    try:
        with np.load(path) as data:
            contents = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"bases file {path} is corrupt or not an .npz ({err}): delete it to refit") from err
    saved_classes = int(contents.pop(NUM_CLASSES_KEY, -1))
    if num_classes is not None and saved_classes != num_classes:
        raise ValueError(f"bases file {path} was fitted for {saved_classes} classes, the model has "
                         f"{num_classes}: delete it to refit, or set --config.basis.path")
    return contents
