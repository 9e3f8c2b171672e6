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

Speed (the default job must never wait for input, see `benchmarks/input_pipeline.py`):
training examples are decoded once and kept in memory (`cache_mb`), the per-example work
stays in uint8 and the normalisation runs on whole batches (`augment.TrainCrop`,
`augment.NormalizeBatch`), and `prefetch_to_device` puts the next batches onto the
devices in a background thread while the current step runs.
"""

import json
import math
import queue
import threading
import time

from absl import flags
import grain
import jax
import ml_collections
from ml_collections.config_dict import placeholder
import numpy as np

from lapseg.data import augment, sources
from lapseg.ops import normalize as normalization
from lapseg.ops.sizes import eval_padded_size



def default_config() -> ml_collections.ConfigDict:
    """Input-pipeline settings with their defaults: the one source of data defaults (the
    training config's `config.data` is this). `create_loader` reads these fields.

    dataset: a name of `lapseg.data.names()` ('folder': your own data in source_dir).
    data_dir: tfds data directory (None: ~/tensorflow_datasets); datasets are built there.
    source_dir: camvid: local raw directory (None: download); folder: the directory of
      images/, masks/ and classes.json (required, see `lapseg.data.folder`); cityscapes,
      voc, ade20k: the dataset's root folder as its authors ship it (required).
    sbd_dir: voc only: SBD's benchmark_RELEASE folder, which adds the split train_aug.
    train_split: the split training reads (VOC papers: 'train_aug').
    crop_size: (h, w) of training crops; None: the dataset's image size.
    scale_range: (low, high) of the uniform random scale factor (0.5-2, the papers' range).
    min_short_edge: None (default), or training images whose short edge is shorter are
      first enlarged to it, the random scale then applying to the enlarged size
      (`augment.TrainAugment`; RefineNet's `input_img_short_edge_min=450`).
    flip: random horizontal flips.
    batch_size: GLOBAL batch size; each process yields batch_size / process_count.
    normalize: 'torch' (ImageNet RGB mean/std, 0-1 scale), 'caffe' (BGR, 0-255, minus
      mean) or 'none' (x / 255).
    num_epochs: training epochs (None: repeat forever); evaluation is always one pass.
    eval_size: (h, w) every evaluation image is padded to; None (default): each image is
      scored at its own size, padded only to `eval_padded_size` (images of one padded
      size are batched together, one compilation per padded size).
    worker_count: grain worker processes (0: none, work happens in threads of this one).
    num_threads: threads preparing batches in each process.
    prefetch: batches buffered ahead, per process (worker_count 0) or per worker.
    cache_mb: decoded training examples kept in memory, up to this many MiB per process
      (and per worker); examples past it are decoded at every read. 0: no cache.
    device_prefetch: batches the training loop puts onto the devices ahead of the step, in
      a background thread (`prefetch_to_device`); 0: the loop puts each batch itself.
    """
    return ml_collections.ConfigDict(
        {
            "dataset": "shapes",
            "data_dir": placeholder(str),
            "source_dir": placeholder(str),
            "sbd_dir": placeholder(str),
            "train_split": "train",
            "crop_size": placeholder(tuple),
            "scale_range": (0.5, 2.0),
            "min_short_edge": placeholder(int),
            "flip": True,
            "batch_size": 16,
            "normalize": "torch",
            "num_epochs": placeholder(int),
            "eval_size": placeholder(tuple),
            "worker_count": 0,
            "num_threads": 2,
            "prefetch": 2,
            "cache_mb": 1024,
            "device_prefetch": 2,
        }
    )


def create_loader(
    config, split, *, data_dir, seed, train, process_index=None, process_count=None
) -> grain.IterDataset:
    """Batches of one split for this process.

    Args:
      config: a ConfigDict with (some of) the fields of `default_config()`; missing
        fields take their defaults, other fields are ignored.
      split: split name, e.g. 'train' or 'val' (`lapseg.data.splits`).
      data_dir: tfds data directory (datasets are built there on first use).
      seed: seeds shuffling and augmentation.
      train: True: shuffle, augment, repeat for `num_epochs`, drop the last partial batch.
        False: one pass, no augmentation; images of one padded size (`eval_size`, or
        each image's `eval_padded_size`) are batched together, the last batch of each
        size filled with blank examples (label all ignore), so that every pixel of the
        split is seen exactly once, at its image's own resolution, and every process
        yields the same sequence of batch shapes.
      process_index, process_count: this process's part (default: JAX's); see the module
        docstring.

    Returns:
      A `grain.IterDataset`; iterating yields dicts of numpy arrays
      `{'image': float32 [B, h, w, 3], 'label': int32 [B, h, w]}` with
      `B = batch_size / process_count`, `(h, w)` = crop_size (train) or the padded
      size of the batch's images (eval),
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
    location = {"data_dir": data_dir, "source_dir": settings["source_dir"],
                "sbd_dir": settings["sbd_dir"]}
    source = sources.load_source(settings["dataset"], split, **location)
    batch_size = settings["batch_size"] // process_count
    if train:
        # One stream for all processes (the seed of process 0 of old, so that a single
        # process yields what it always did); this process's rows of each global batch.
        stream_seed = int(np.random.SeedSequence((seed, 0)).generate_state(1)[0])
        if settings["cache_mb"]:
            source = DecodedCache(source, max_bytes=int(settings["cache_mb"] * 2**20))
        rows = _train_batches(source.seed(stream_seed), info, settings, batch_size)
        dataset = _process_rows(rows, process_index, process_count)
    else:
        if settings["eval_size"]:
            sizes = np.tile(settings["eval_size"], (len(source), 1))
        else:
            raw = sources.load_source(settings["dataset"], split, decode=False, **location)
            sizes = np.array([eval_padded_size(h, w) for h, w in sources.image_sizes(raw)])
        dataset = _eval_batches(source, sizes, info, settings, batch_size,
                                process_index, process_count)
    return _prefetch(dataset, settings)


def _train_batches(shard, info, settings, batch_size):
    crop_size = settings["crop_size"] or info.image_size
    if crop_size is None:
        raise ValueError(f"{info.name} has images of varying size: set config.crop_size")
    # `TrainAugment`, example by example, is `TrainCrop` then `NormalizeBatch` on the batch.
    transform = augment.TrainCrop(
        crop_size=tuple(crop_size),
        scale_range=tuple(settings["scale_range"]),
        flip=settings["flip"],
        normalization=settings["normalize"],
        ignore_label=info.ignore_label,
        min_short_edge=settings["min_short_edge"],
    )
    return (
        shard.shuffle()
        .repeat(settings["num_epochs"])
        .random_map(transform)
        .batch(batch_size, drop_remainder=True)
        .map(augment.NormalizeBatch(settings["normalize"]))
    )


class DecodedCache(grain.MapDataset):
    """`parent`'s examples, each kept after its first read while they fit in `max_bytes`.

    For a source that decodes (PNG in ArrayRecord: ~1 ms per 96x96 shapes example, the
    largest cost of a training batch): an epoch later every read is a dictionary lookup.
    The examples are the parent's, unchanged; the kept arrays are made read-only, so a
    transform that writes into its input fails instead of changing the cache. Threads may
    share it (the worst case is one example decoded twice).
    """

    def __init__(self, parent, *, max_bytes):
        super().__init__(parent)
        self._max_bytes = max_bytes
        self._bytes = 0
        self._kept = {}

    def __len__(self):
        return len(self._parent)

    def __str__(self):
        return f"DecodedCache(max_bytes={self._max_bytes})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        index %= len(self)
        element = self._kept.get(index)
        if element is not None:
            return element
        element = self._parent[index]
        size = sum(np.asarray(v).nbytes for v in jax.tree.leaves(element))
        if self._bytes + size <= self._max_bytes:
            element = jax.tree.map(_read_only, element)
            self._kept[index] = element
            self._bytes += size
        return element


def _read_only(x):
    x = np.asarray(x)
    x.flags.writeable = False
    return x


def _process_rows(rows, process_index, process_count):
    """Process `p`'s part of every global batch, from `rows`: the global stream in batches of
    `B / process_count` (global batch `i` is `rows[i*P : (i+1)*P]`). Lazy: a process reads
    only its own examples. A finite stream keeps whole global batches only."""
    if process_count == 1:
        return rows
    whole = len(rows) - len(rows) % process_count
    return rows[process_index:whole:process_count]


def _eval_batches(source, sizes, info, settings, batch_size, process_index, process_count):
    """Batches of `source` grouped by padded size (`sizes`: int `[N, 2]`, one per example).

    For each size, in sorted order, every process takes its examples `[p::P]` of that
    size, pads them to it (`augment.EvalPad`) and fills up to the same number of whole
    batches with blank examples (image 0, label all ignore).
    """
    parts = []
    empty = {"image": np.zeros((0, 0, 3), np.uint8), "label": np.zeros((0, 0), np.uint8)}
    for size in sorted({tuple(int(v) for v in s) for s in sizes}):
        indices = np.flatnonzero((sizes == size).all(axis=1))
        shard = indices[process_index::process_count]
        num_batches = math.ceil(math.ceil(len(indices) / process_count) / batch_size)
        transform = augment.EvalPad(size=size, normalization=settings["normalize"],
                                    ignore_label=info.ignore_label)
        blank = transform.map(empty)  # all padding: image 0, label ignore
        parts.append(grain.MapDataset.range(len(shard)).map(_Take(source, shard)).map(transform))
        parts.append(grain.MapDataset.source([blank] * (num_batches * batch_size - len(shard))))
    return grain.MapDataset.concatenate([p for p in parts if len(p)]).batch(batch_size)


class _Take:
    """`index -> source[indices[index]]` (picklable, for grain's worker processes)."""

    def __init__(self, source, indices):
        self._source, self._indices = source, indices

    def __call__(self, index):
        return self._source[int(self._indices[index])]


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
    _grain_flags_readable()
    return iterable.mp_prefetch(
        grain.MultiprocessingOptions(
            num_workers=settings["worker_count"], per_worker_buffer_size=settings["prefetch"]
        )
    )


def _grain_flags_readable() -> None:
    """Lets grain read its own absl flags in a program that never parses absl flags.

    When its worker processes start, grain reads the flag
    `--grain_enable_multiprocess_worker_profiling` through absl, which refuses to read a
    flag of an unparsed `FLAGS` (`UnparsedFlagAccessError`) unless the flag is marked
    present. So grain's own flags (`grain_*`) are marked present, at the values they hold
    (their defaults, or what the program set); the program's `FLAGS` stay unparsed and no
    other flag is touched. A program that parsed its flags is left alone.
    """
    if flags.FLAGS.is_parsed():
        return
    for name in list(flags.FLAGS):
        if name.startswith("grain_") and not flags.FLAGS[name].present:
            flags.FLAGS[name].present = 1


def prefetch_to_device(iterator, put, size=2):
    """`iterator`'s batches passed through `put` (e.g. onto the mesh: `shard_batch`) in a
    background thread, up to `size` ahead: a `DevicePrefetch`. `size` 0: no thread, `put`
    runs in `next`."""
    return DevicePrefetch(iterator, put, size)


_POLL_SECONDS = 0.001  # how often a waiting `get` looks whether the device is still busy


class _End:  # the producer's last item: the stream ended, or it raised `error`
    def __init__(self, error=None):
        self.error = error


class DevicePrefetch:
    """An iterator of `put(batch)` for each batch of a grain iterator, prepared ahead.

    A background thread takes the next batches from `iterator`, applies `put` (the copy
    to the devices, `lapseg.train.step.shard_batch`) and queues up to `size` of them with
    the iterator's state after each, so that the step never waits for the host-to-device
    copy nor for a batch the pipeline had ready.

    State: `get_state()` is the state after the last batch handed out (not after those
    prefetched), as JSON bytes in the format grain writes, so checkpoints (orbax, through
    `checkpoint_args` or `lapseg.train.checkpoint`) restore exactly where the loop was.
    `set_state` stops the thread, drops what it had prefetched and restores `iterator`;
    the thread restarts at the next `get`.

    `get(device_busy)` also returns how long the caller waited while the device was idle:
    while `device_busy()` is true the wait overlaps compute and does not count.
    """

    def __init__(self, iterator, put, size=2):
        self._iterator = iterator
        self._put = put
        self._size = int(size)
        self._queue = None
        self._thread = None
        self._stop = threading.Event()
        self._state = None  # the inner state after the last batch handed out

    def __iter__(self):
        return self

    def __next__(self):
        return self.get()[0]

    def get(self, device_busy=None):
        """The next batch, and the seconds waited for it while `device_busy()` was false
        (None: the device counts as idle throughout)."""
        start = time.perf_counter()
        if not self._size:
            batch = self._put(next(self._iterator))
            self._state = None
            idle = device_busy is None or not device_busy()
            return batch, (time.perf_counter() - start if idle else 0.0)
        self._start()
        idle_since = None
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            while True:
                if idle_since is None and (device_busy is None or not device_busy()):
                    idle_since = time.perf_counter()
                try:  # once the device is idle it stays idle: block
                    item = self._queue.get(timeout=None if idle_since else _POLL_SECONDS)
                    break
                except queue.Empty:
                    continue
        waited = time.perf_counter() - idle_since if idle_since is not None else 0.0
        if isinstance(item, _End):
            self._queue.put(item)  # every later `get` ends the same way
            if item.error is not None:
                raise item.error
            raise StopIteration
        batch, self._state = item
        return batch, waited

    def _inner_state(self):
        # Any iterator will do; only one with `get_state` (grain's) can be checkpointed.
        return self._iterator.get_state() if hasattr(self._iterator, "get_state") else None

    def get_state(self) -> bytes:
        state = self._iterator.get_state() if self._state is None else self._state
        return json.dumps(state, indent=4).encode() if isinstance(state, dict) else state

    def set_state(self, state):
        self._halt()
        if isinstance(state, (bytes, str)) and isinstance(self._iterator, grain.DatasetIterator):
            state = json.loads(state)
        self._iterator.set_state(state)
        self._state = None

    def start_prefetch(self):
        """Nothing: the thread starts at the first `get` (grain's checkpoint handler calls
        this after a restore; a thread started there would outlive a failed start-up)."""

    def close(self):
        """Stops the thread and closes `iterator` (if it can be closed)."""
        self._halt()
        if hasattr(self._iterator, "close"):
            self._iterator.close()

    def _start(self):
        if self._thread is not None:
            return
        if self._state is None:
            self._state = self._inner_state()
        self._stop.clear()
        self._queue = queue.Queue(maxsize=self._size)
        self._thread = threading.Thread(target=self._produce, name="lapseg-device-prefetch",
                                        daemon=True)
        self._thread.start()

    def _produce(self):
        try:
            while not self._stop.is_set():
                batch = next(self._iterator)
                state = self._inner_state()
                if not self._offer((self._put(batch), state)):
                    return
        except StopIteration:
            self._offer(_End())
        except BaseException as error:  # pylint: disable=broad-except  (re-raised by `get`)
            self._offer(_End(error))

    def _offer(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _halt(self):
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._queue = None
