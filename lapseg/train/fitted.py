"""A run's label-fitted constants (LRR bases, the DUpsampling matrix), fitted before step 0.

`ensure(config, workdir)` makes sure the bases file of a run exists: `config.basis.path`, or
`<workdir>/basis.npz` when that is empty. A missing file is fitted from the config's
training labels (`lapseg.bases.fit`, settings read off the model's variable shapes) and
written, with a picture of LRR bases beside it (`basis.png`); an existing one is checked
against the model and reused. The training loop attaches its arrays to the freshly
initialised variables (`lapseg.bases.attach`); `lapseg basis` runs the same function.

Labels: the training split (`lapseg.data.load_source`), shuffled with `config.seed`, in
batches of `BATCH_SIZE` maps of one size, at most `config.basis.num_batches` batches
(0 or None: all).
"""

import logging
import os
import time

import jax
import numpy as np

from lapseg import bases
from lapseg import data as data_lib
from lapseg import models
from lapseg.train import state as state_lib

log = logging.getLogger(__name__)

BATCH_SIZE = 8
_INIT_SIZE = (64, 64)  # input size for the abstract init that reads constant shapes


def bases_path(config, workdir) -> str:
    """`config.basis.path` if set, else `<workdir>/basis.npz`."""
    return config.basis.path or os.path.join(os.fspath(workdir), "basis.npz")


def label_maps(config):
    """Training label maps of `config.data.dataset`: int32 `[N, H, W]` batches of one size.

    Maps are read in a `config.seed` shuffle and grouped by size into batches of
    `BATCH_SIZE` (the last of each size may be smaller); stops after
    `config.basis.num_batches` batches (0 or None: all).
    """
    source = data_lib.load_source(config.data.dataset, config.data.get("train_split", "train"),
                                  **data_lib.location(config.data)).shuffle(seed=config.seed)
    limit = config.basis.get("num_batches", None) or None
    buckets, produced = {}, 0

    def done():
        return limit is not None and produced >= limit

    for index in range(len(source)):
        label = np.asarray(source[index]["label"], np.int32)
        bucket = buckets.setdefault(label.shape, [])
        bucket.append(label)
        if len(bucket) == BATCH_SIZE:
            yield np.stack(buckets.pop(label.shape))
            produced += 1
            if done():
                return
    for bucket in buckets.values():
        if done():
            return
        yield np.stack(bucket)
        produced += 1


def required(config, num_classes: int) -> dict:
    """The fitted constants the config's model holds (`lapseg.bases.required`), computed
    abstractly (nothing is allocated)."""
    model = models.from_config(config, num_classes)
    abstract = jax.eval_shape(lambda rng: state_lib.init_variables(
        model, rng, (1, *_INIT_SIZE, 3)), jax.random.key(0))
    return bases.required(abstract)


def _check(path, fitted: dict, need: dict) -> None:
    missing = sorted(set(need) - set(fitted))
    if missing:
        raise ValueError(f"bases file {path} has no {', '.join(missing)} (it has {sorted(fitted)}): "
                         f"delete it to refit, or set --config.basis.path to another file")
    for name, shape in need.items():
        got = fitted[name].shape
        # LRR bases are fitted at 32x32 and resized to the model's tile: K and C must agree.
        same = got[2:] == shape[2:] if name == bases.LRR_BASES else got == shape
        if not same:
            raise ValueError(f"bases file {path} holds {name} of shape {got}, the model needs "
                             f"{shape}: delete it to refit, or set --config.basis.path")


def ensure(config, workdir) -> str | None:
    """Path of the run's bases file, fitted and written first if missing; None when the
    config's model holds no label-fitted constants.

    Raises:
      ValueError: an existing file does not fit the model (the message says to delete it).
    """
    info = data_lib.dataset_info(config.data.dataset, config.data.source_dir)
    need = required(config, info.num_classes)
    if not need:
        return None
    path = bases_path(config, workdir)
    if os.path.exists(path):
        _check(path, bases.load(path, num_classes=info.num_classes), need)
        return path
    start = time.perf_counter()
    fitted = bases.fit_required(need, lambda: label_maps(config),
                       num_classes=info.num_classes, ignore_label=info.ignore_label,
                       seed=config.seed, lrr_scale=config.basis.get("lrr_scale", "flat_field"))
    bases.save(path, fitted, num_classes=info.num_classes)
    if bases.LRR_BASES in fitted:
        picture = os.path.splitext(path)[0] + ".png"
        bases.bases_picture(fitted[bases.LRR_BASES], info.class_names).save(picture)
    log.info("fitted %s from %s labels in %.1f s -> %s",
             ", ".join(f"{k} {list(np.shape(v))}" for k, v in fitted.items()),
             config.data.dataset, time.perf_counter() - start, path)
    return path

