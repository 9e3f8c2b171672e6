"""`lapseg basis --config configs/X.py --workdir DIR`: fit label-patch bases before training.

Models whose decoder constants come from the training labels need them fitted once, before
training: LRR's per-class reconstruction bases (`ops.pca.lrr_bases`, key 'lrr_bases'
`[32, 32, K, C]`) and DUpsampling's matrix (`ops.pca.dupsampling_matrix`, keys
'dupsampling_w' `[L, r*r*C]`, 'dupsampling_mean' `[r*r*C]`, 'ratio'). They are written to
`config.basis.path`, or `<workdir>/basis.npz` when that is empty (`lapseg.bases_file`),
with a picture of the LRR bases beside it (`basis.png`: one row per class, one column per
basis, blue negative / white zero / red positive, each tile scaled to its own maximum; the
paper's Fig. 4). The training loop calls `ensure_bases(config, workdir)` for the models of
`needs_bases`, so `lapseg train` works without running this first.

Labels: the config's training split (`lapseg.data.load_source`), shuffled with
`config.seed`, in batches of `BATCH_SIZE` label maps of equal size (maps are grouped by
size; DUpsampling crops each to a multiple of its ratio), at most `config.basis.num_batches`
batches (0 or None: all).
"""

import logging
import os
import time

import numpy as np
from PIL import Image, ImageDraw

from lapseg import bases_file

log = logging.getLogger(__name__)

BATCH_SIZE = 8
LRR_PATCH = 32
DEFAULT_NUM_BASES = 10
_TILE_SCALE = 2  # basis pixels -> picture pixels
_GAP = 4
_NAME_WIDTH = 110


def needs_bases(config) -> bool:
    """Whether `config.model` loads fitted constants (LRR with basis 'pca', DUpsampling)."""
    if config.model == "lrr":
        return config.model_kwargs.get("basis", "pca") == "pca"
    return config.model == "dupsampling"


def bases_path(config, workdir) -> str:
    """`config.basis.path` if set, else `<workdir>/basis.npz`."""
    return config.basis.path or os.path.join(os.fspath(workdir), "basis.npz")


def label_batches(config, *, multiple: int = 1):
    """Training label maps of `config.data.dataset`: int32 `[N, H, W]` batches of one size.

    Maps are read in a `config.seed` shuffle, cropped at the bottom/right to a multiple of
    `multiple`, grouped by size into batches of `BATCH_SIZE` (the last of each size may be
    smaller); stops after `config.basis.num_batches` batches (0 or None: all).
    """
    from lapseg import data  # pylint: disable=import-outside-toplevel  (tfds, grain)

    source = data.load_source(config.data.dataset, "train", data_dir=config.data.data_dir,
                              source_dir=config.data.source_dir).shuffle(seed=config.seed)
    limit = config.basis.get("num_batches", None) or None
    buckets, produced = {}, 0
    for index in range(len(source)):
        label = np.asarray(source[index]["label"])
        height, width = (s - s % multiple for s in label.shape)
        bucket = buckets.setdefault((height, width), [])
        bucket.append(label[:height, :width].astype(np.int32))
        if len(bucket) == BATCH_SIZE:
            yield np.stack(buckets.pop((height, width)))
            produced += 1
            if limit is not None and produced >= limit:
                return
    for bucket in buckets.values():
        yield np.stack(bucket)
        produced += 1
        if limit is not None and produced >= limit:
            return


def _expected_shapes(config, num_classes: int) -> dict:
    """Key -> array shape that `config.model` needs from the bases file."""
    kwargs = config.model_kwargs
    if config.model == "lrr":
        k = kwargs.get("num_bases", DEFAULT_NUM_BASES)
        return {"lrr_bases": (LRR_PATCH, LRR_PATCH, k, num_classes)}
    ratio, dim = kwargs["ratio"], kwargs["dim"]
    return {"dupsampling_w": (dim, ratio * ratio * num_classes),
            "dupsampling_mean": (ratio * ratio * num_classes,)}


def fit(config, info) -> dict:
    """The arrays `config.model` needs, fitted from the training labels (see the module docstring)."""
    from lapseg.ops import pca  # pylint: disable=import-outside-toplevel  (JAX)

    kwargs = config.model_kwargs
    if config.model == "lrr":
        bases = pca.lrr_bases(label_batches(config), info.num_classes, patch=LRR_PATCH,
                              num_bases=kwargs.get("num_bases", DEFAULT_NUM_BASES),
                              ignore_label=info.ignore_label, seed=config.seed)
        return {"lrr_bases": np.asarray(bases)}
    ratio = kwargs["ratio"]
    w, mean = pca.dupsampling_matrix(label_batches(config, multiple=ratio), info.num_classes,
                                     ratio=ratio, dim=kwargs["dim"], ignore_label=info.ignore_label)
    return {"dupsampling_w": np.asarray(w), "dupsampling_mean": np.asarray(mean), "ratio": np.int64(ratio)}


def _basis_colors(tile: np.ndarray) -> np.ndarray:
    """`[h, w]` -> uint8 `[h, w, 3]`: blue (negative), white (0), red (positive), scaled to max |tile|."""
    v = tile / max(float(np.abs(tile).max()), 1e-12)
    fade = 1.0 - np.abs(v)
    rgb = np.stack([np.where(v < 0, fade, 1.0), fade, np.where(v > 0, fade, 1.0)], -1)
    return np.round(255 * rgb).astype(np.uint8)


def save_bases_picture(path, bases: np.ndarray, class_names) -> None:
    """PNG of `bases` `[P, P, K, C]`: one row per class (named), one column per basis."""
    size, _, num_bases, num_classes = bases.shape
    tile = size * _TILE_SCALE
    height, width = _GAP + num_classes * (tile + _GAP), _NAME_WIDTH + num_bases * (tile + _GAP)
    picture = np.full((height, width, 3), 255, np.uint8)
    for c in range(num_classes):
        top = _GAP + c * (tile + _GAP)
        for k in range(num_bases):
            left = _NAME_WIDTH + k * (tile + _GAP)
            image = np.kron(bases[:, :, k, c], np.ones((_TILE_SCALE, _TILE_SCALE)))
            picture[top : top + tile, left : left + tile] = _basis_colors(image)
    image = Image.fromarray(picture)
    draw = ImageDraw.Draw(image)
    for c, name in enumerate(class_names):
        draw.text((_GAP, _GAP + c * (tile + _GAP) + tile // 2 - 5), str(name)[:18], fill=(0, 0, 0))
    image.save(path)


def _check_existing(path, config, num_classes) -> None:
    for key, shape in _expected_shapes(config, num_classes).items():
        array = bases_file.load(path, key, num_classes=num_classes)
        if array.shape != shape:
            raise ValueError(
                f"bases file {path} holds {key} of shape {array.shape}, the config needs {shape}: "
                f"delete it to refit, or set --config.basis.path to another file")


def ensure_bases(config, workdir) -> str:
    """Path of the bases file of `config` (see `bases_path`), fitted and written first if missing.

    An existing file is checked against the config (keys, class count, K or (L, r)) and
    reused; a mismatch is a ValueError (delete the file to refit).
    """
    if not needs_bases(config):
        raise ValueError(f"model {config.model!r} with these model_kwargs needs no fitted bases")
    from lapseg import data  # pylint: disable=import-outside-toplevel

    info = data.dataset_info(config.data.dataset)
    path = bases_path(config, workdir)
    if os.path.exists(path):
        _check_existing(path, config, info.num_classes)
        return path
    start = time.perf_counter()
    arrays = fit(config, info)
    bases_file.save(path, num_classes=info.num_classes, **arrays)
    if "lrr_bases" in arrays:
        save_bases_picture(os.path.splitext(path)[0] + ".png", arrays["lrr_bases"], info.class_names)
    log.info("fitted %s from %s labels in %.1f s -> %s",
             ", ".join(f"{k} {list(np.shape(v))}" for k, v in arrays.items()),
             config.data.dataset, time.perf_counter() - start, path)
    return path


def main(argv) -> int:
    from lapseg.train.cli import parse_config_flags, quiet_logging  # pylint: disable=import-outside-toplevel

    config, workdir = parse_config_flags(argv, default_workdir="workdir/default")
    quiet_logging()
    if not needs_bases(config):
        print(f"{argv[0]}: model {config.model!r} needs no fitted bases; nothing to do")
        return 0
    start = time.perf_counter()
    existed = os.path.exists(bases_path(config, workdir))
    path = ensure_bases(config, workdir)
    verb = "exists (delete it to refit)" if existed else f"written in {time.perf_counter() - start:.1f} s"
    print(f"bases {path} {verb}")
    picture = os.path.splitext(path)[0] + ".png"
    if os.path.exists(picture):
        print(f"picture of the bases: {picture}")
    return 0
