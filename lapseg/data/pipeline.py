"""The grain input pipeline: sharding, shuffling, augmentation, batching, prefetch, checkpoints.

    loader = create_loader(config, 'train', data_dir=..., seed=0, train=True)
    iterator = iter(loader)          # grain DatasetIterator: get_state() / set_state()
    batch = next(iterator)           # {'image': f32 [B, h, w, 3], 'label': i32 [B, h, w]}

Every random choice (shuffle order, scale, crop, flip) is a function of (seed, position in
the stream), so a restored iterator state replays the same batches.

Several processes (`process_count > 1`): training batches are cut from one global stream,
the same in every process; global batch `i` is its examples `[i*B, (i+1)*B)` and process
`p` reads, augments and yields only its `B / process_count` of them, rows
`[p*B/P, (p+1)*B/P)`. So the processes read disjoint examples, and their batches, put side
by side in process order (`jax.make_array_from_process_local_data`), are exactly the
batch one process would yield: the step sees the same global batches whatever the process
count. An iterator's state is a position in that stream, the same in every process, so
a checkpoint restores on another process count (`lapseg.train.checkpoint`). Evaluation
reads a disjoint `source[p::P]` per process, padded to a common number of batches.
"""

import math

from absl import flags
import grain
import jax
import ml_collections
from ml_collections.config_dict import placeholder
import numpy as np

from lapseg.data import augment, sources
from lapseg.ops import normalize as normalization

EVAL_MULTIPLE = 32  # default eval size: the dataset's image size rounded up to this


def default_config() -> ml_collections.ConfigDict:
    """Input-pipeline settings with their defaults: the one source of data defaults (the
    training config's `config.data` is this). `create_loader` reads these fields.

    dataset: a name of `lapseg.data.names()` ('folder': your own data in source_dir).
    data_dir: tfds data directory (None: ~/tensorflow_datasets); datasets are built there.
    source_dir: camvid: local raw directory (None: download); folder: the directory of
      images/, masks/ and classes.json (required, see `lapseg.data.folder`).
    crop_size: (h, w) of training crops; None: the dataset's image size.
    scale_range: (low, high) of the uniform random scale factor (0.5-2, the papers' range).
    flip: random horizontal flips.
    batch_size: GLOBAL batch size; each process yields batch_size / process_count.
    normalize: 'torch' (ImageNet RGB mean/std, 0-1 scale), 'caffe' (BGR, 0-255, minus
      mean) or 'none' (x / 255).
    num_epochs: training epochs (None: repeat forever); evaluation is always one pass.
    eval_size: (h, w) evaluation images are padded to; None: the dataset's image size
      rounded up to a multiple of 32.
    worker_count: grain worker processes (0: none, work happens in threads of this one).
    num_threads: threads preparing batches in each process.
    prefetch: batches buffered ahead, per process (worker_count 0) or per worker.
    """
    return ml_collections.ConfigDict(
        {
            "dataset": "shapes",
            "data_dir": placeholder(str),
            "source_dir": placeholder(str),
            "crop_size": placeholder(tuple),
            "scale_range": (0.5, 2.0),
            "flip": True,
            "batch_size": 16,
            "normalize": "torch",
            "num_epochs": placeholder(int),
            "eval_size": placeholder(tuple),
            "worker_count": 0,
            "num_threads": 2,
            "prefetch": 2,
        }
    )


def create_loader(
    config, split, *, data_dir, seed, train, process_index=None, process_count=None
) -> grain.IterDataset:
    """Batches of one split for this process.

    Args:
      config: a ConfigDict with (some of) the fields of `default_config()`; missing
        fields take their defaults, other fields are ignored.
      split: split name, e.g. 'train' or 'validation'.
      data_dir: tfds data directory (datasets are built there on first use).
      seed: seeds shuffling and augmentation.
      train: True: shuffle, augment, repeat for `num_epochs`, drop the last partial batch.
        False: one pass in order, no augmentation, images padded to `eval_size`, the
        last batch filled with blank examples (label all ignore) so that every pixel of
        the split is seen exactly once and every process yields the same number of batches.
      process_index, process_count: this process's part (default: JAX's); see the module
        docstring.

    Returns:
      A `grain.IterDataset`; iterating yields dicts of numpy arrays
      `{'image': float32 [B, h, w, 3], 'label': int32 [B, h, w]}` with
      `B = batch_size / process_count`, `(h, w)` = crop_size (train) or eval_size (eval),
      ignored pixels holding the dataset's ignore label. Its iterators have
      `get_state()` / `set_state()`; see `checkpoint_args` for orbax.
    """
    settings = {key: config.get(key, value) for key, value in default_config().items()}
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if settings["batch_size"] % process_count:
        raise ValueError(
            f"batch_size {settings['batch_size']} is not divisible by process_count {process_count}"
        )
    if settings["normalize"] not in normalization.CONVENTIONS:
        raise ValueError(
            f"unknown normalize {settings['normalize']!r}; "
            f"choose from {', '.join(normalization.CONVENTIONS)}"
        )
    info = sources.dataset_info(settings["dataset"], settings["source_dir"])
    source = sources.load_source(
        settings["dataset"], split, data_dir=data_dir, source_dir=settings["source_dir"]
    )
    batch_size = settings["batch_size"] // process_count
    if train:
        # One stream for all processes (the seed of process 0 of old, so that a single
        # process yields what it always did); this process's rows of each global batch.
        stream_seed = int(np.random.SeedSequence((seed, 0)).generate_state(1)[0])
        rows = _train_batches(source.seed(stream_seed), info, settings, batch_size)
        dataset = _process_rows(rows, process_index, process_count)
    else:
        # Every process pads its shard to the same number of batches.
        shard = source[process_index::process_count]
        num_batches = math.ceil(math.ceil(len(source) / process_count) / batch_size)
        dataset = _eval_batches(shard, info, settings, batch_size, num_batches)
    return _prefetch(dataset, settings)


def _train_batches(shard, info, settings, batch_size):
    crop_size = settings["crop_size"] or info.image_size
    if crop_size is None:
        raise ValueError(f"{info.name} has images of varying size: set config.crop_size")
    transform = augment.TrainAugment(
        crop_size=tuple(crop_size),
        scale_range=tuple(settings["scale_range"]),
        flip=settings["flip"],
        normalization=settings["normalize"],
        ignore_label=info.ignore_label,
    )
    return (
        shard.shuffle()
        .repeat(settings["num_epochs"])
        .random_map(transform)
        .batch(batch_size, drop_remainder=True)
    )


def _process_rows(rows, process_index, process_count):
    """Process `p`'s part of every global batch, from `rows`: the global stream in batches of
    `B / process_count` (global batch `i` is `rows[i*P : (i+1)*P]`). Lazy: a process reads
    only its own examples. A finite stream keeps whole global batches only."""
    if process_count == 1:
        return rows
    whole = len(rows) - len(rows) % process_count
    return rows[process_index:whole:process_count]


def _eval_batches(shard, info, settings, batch_size, num_batches):
    eval_size = settings["eval_size"]
    if not eval_size:
        if info.image_size is None:
            raise ValueError(f"{info.name} has images of varying size: set config.eval_size")
        eval_size = [EVAL_MULTIPLE * math.ceil(s / EVAL_MULTIPLE) for s in info.image_size]
    transform = augment.EvalPad(
        size=tuple(eval_size), normalization=settings["normalize"], ignore_label=info.ignore_label
    )
    empty = {"image": np.zeros((0, 0, 3), np.uint8), "label": np.zeros((0, 0), np.uint8)}
    blank = transform.map(empty)  # all padding: image 0, label ignore
    blanks = grain.MapDataset.source([blank] * (num_batches * batch_size - len(shard)))
    return grain.MapDataset.concatenate([shard.map(transform), blanks]).batch(batch_size)


def checkpoint_args(iterator, *, restore=False):
    """Orbax args that save (or, with `restore`, restore into) a loader's iterator.

    With a `CheckpointManager`, put them beside the train state, e.g.
    `ocp.args.Composite(state=ocp.args.StandardSave(state), data=checkpoint_args(it))`
    and `ocp.args.Composite(..., data=checkpoint_args(it, restore=True))`. Each process
    writes its own `process_<i>-of-<n>.json`, all holding the same state (a position in the
    global stream); `lapseg.train.checkpoint` restores it on another process count.
    """
    if restore:
        return grain.checkpoint.CheckpointRestore(iterator)
    return grain.checkpoint.CheckpointSave(iterator)


def _prefetch(dataset, settings):
    read_options = grain.ReadOptions(
        num_threads=settings["num_threads"], prefetch_buffer_size=settings["prefetch"]
    )
    iterable = dataset.to_iter_dataset(read_options)
    if not settings["worker_count"]:
        return iterable
    # grain's worker processes read absl flags, which a non-absl program never parses.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return iterable.mp_prefetch(
        grain.MultiprocessingOptions(
            num_workers=settings["worker_count"], per_worker_buffer_size=settings["prefetch"]
        )
    )
