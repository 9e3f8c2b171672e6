"""The grain loader: batch format, determinism, checkpointed state, sharding, eval padding,
the decoded cache and the prefetch to the devices."""

import json

import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from lapseg import data
from lapseg.data import pipeline
from lapseg.ops.normalize import normalize


def _config(**overrides):
    config = data.default_config()
    config.batch_size = 8
    config.update(overrides)
    return config


def _loader(data_dir, split="train", *, seed=0, train=True, process_index=0, process_count=1, **kw):
    """`create_loader` with `default_config()` and batch size 8, changed by `kw`."""
    return data.create_loader(
        _config(**kw),
        split,
        data_dir=data_dir,
        seed=seed,
        train=train,
        process_index=process_index,
        process_count=process_count,
    )


def _take(iterator, count):
    return [next(iterator) for _ in range(count)]


def _assert_same(batches, others):
    assert len(batches) == len(others)
    for batch, other in zip(batches, others):
        np.testing.assert_array_equal(batch["image"], other["image"])
        np.testing.assert_array_equal(batch["label"], other["label"])


def test_train_batch_format(shapes_dir):
    batch = next(iter(_loader(shapes_dir, crop_size=(64, 80))))
    assert batch["image"].shape == (8, 64, 80, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (8, 64, 80) and batch["label"].dtype == np.int32
    assert set(np.unique(batch["label"])) <= {0, 1, 2, 3, 4, 255}
    assert -2.2 < batch["image"].min() and batch["image"].max() < 2.7  # ImageNet-normalised


def test_missing_fields_take_defaults(shapes_dir):
    """A training config holds other fields too, and may leave the data fields out."""
    config = ml_collections.ConfigDict({"batch_size": 4, "model": "lrr"})
    loader = data.create_loader(config, "train", data_dir=shapes_dir, seed=0, train=True)
    assert next(iter(loader))["image"].shape == (4, 96, 96, 3)  # crop: the image size


def test_same_seed_same_batches(shapes_dir):
    first = _take(iter(_loader(shapes_dir, seed=3)), 3)
    _assert_same(first, _take(iter(_loader(shapes_dir, seed=3)), 3))
    other = _take(iter(_loader(shapes_dir, seed=4)), 3)
    assert not any(np.array_equal(a["label"], b["label"]) for a, b in zip(first, other))


def test_restored_iterator_replays_batches(shapes_dir):
    iterator = iter(_loader(shapes_dir))
    _take(iterator, 3)
    state = iterator.get_state()
    expected = _take(iterator, 2)
    fresh = iter(_loader(shapes_dir))
    fresh.set_state(state)
    _assert_same(expected, _take(fresh, 2))


def test_orbax_checkpoint_round_trip(shapes_dir, tmp_path):
    iterator = iter(_loader(shapes_dir))
    _take(iterator, 3)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(3, args=ocp.args.Composite(data=data.checkpoint_args(iterator)))
        manager.wait_until_finished()
        expected = _take(iterator, 2)
        fresh = iter(_loader(shapes_dir))
        manager.restore(3, args=ocp.args.Composite(data=data.checkpoint_args(fresh, restore=True)))
    _assert_same(expected, _take(fresh, 2))


def _real_examples(batches):
    """(image, label) pairs of the batches, leaving out eval padding (labels all ignore)."""
    return [
        (image, label)
        for batch in batches
        for image, label in zip(batch["image"], batch["label"])
        if (label != 255).any()
    ]


def _example_keys(batches):
    return [(image.tobytes(), label.tobytes()) for image, label in _real_examples(batches)]


def test_processes_get_disjoint_shards(shapes_dir):
    """Two processes, one epoch, augmentation off: together they see each example once."""
    identity = dict(scale_range=(1.0, 1.0), flip=False, num_epochs=1)
    shards = [
        _example_keys(_loader(shapes_dir, "validation", process_index=i, process_count=2, **identity))
        for i in range(2)
    ]
    assert [len(s) for s in shards] == [100, 100]  # 4 per process and batch, 25 batches each
    assert not set(shards[0]) & set(shards[1])
    everything = _example_keys(_loader(shapes_dir, "validation", train=False, batch_size=8))
    assert set(shards[0]) | set(shards[1]) == set(everything)


@pytest.mark.parametrize("count", [1, 2])
def test_eval_covers_every_example_once(shapes_dir, count):
    source = data.load_source("shapes", "validation", data_dir=shapes_dir)
    loaders = [
        list(_loader(shapes_dir, "validation", train=False, batch_size=16, process_index=i, process_count=count))
        for i in range(count)
    ]
    assert len({len(batches) for batches in loaders}) == 1  # same number of steps everywhere
    assert sum(len(batches) for batches in loaders) == 13 * count  # ceil(200 / 16)
    assert sum(len(_real_examples(batches)) for batches in loaders) == 200
    for i in (0, 1, 199):
        process, local = i % count, i // count
        expected = normalize(source[i]["image"], "torch")
        np.testing.assert_array_equal(_real_examples(loaders[process])[local][0], expected)
    last = loaders[0][-1]
    blanks = (last["label"] == 255).all(axis=(1, 2))
    assert blanks.sum() == 16 // count * 13 - 200 // count
    assert (last["image"][blanks] == 0).all()


def test_eval_size_pads(shapes_dir):
    batch = next(iter(_loader(shapes_dir, "validation", train=False, eval_size=(100, 128))))
    assert batch["image"].shape == (8, 100, 128, 3)
    assert (batch["label"][:, 96:] == 255).all() and (batch["label"][:, :, 96:] == 255).all()


def test_worker_processes_give_the_same_batches(shapes_dir):
    threads = _take(iter(_loader(shapes_dir)), 2)
    iterator = iter(_loader(shapes_dir, worker_count=1))
    try:
        _assert_same(threads, _take(iterator, 2))
    finally:
        iterator.close()


def test_bad_settings(shapes_dir):
    with pytest.raises(ValueError, match="batch_size 8 is not divisible by process_count 3"):
        _loader(shapes_dir, process_count=3)
    with pytest.raises(ValueError, match="unknown normalize 'imagenet'"):
        _loader(shapes_dir, normalize="imagenet")


def test_default_config_fields():
    config = data.default_config()
    assert set(config) == {
        "dataset", "data_dir", "source_dir", "sbd_dir", "train_split", "crop_size", "scale_range",
        "min_short_edge", "flip", "batch_size", "normalize",
        "num_epochs", "eval_size", "worker_count", "num_threads", "prefetch", "cache_mb",
        "device_prefetch",
    }  # fmt: skip
    assert config.dataset == "shapes" and tuple(config.scale_range) == (0.5, 2.0)
    # The training config's data section is this, not a copy with other defaults.
    from lapseg.train import config as config_lib  # pylint: disable=import-outside-toplevel

    assert config_lib.base_config().data == config


def test_stream_is_endless_by_default(shapes_dir):
    batches = _take(iter(_loader(shapes_dir, "validation", batch_size=64)), 7)
    assert all(b["image"].shape[0] == 64 for b in batches)  # 3 full batches per epoch


def _reference_train_batches(data_dir, seed, config):
    """The training stream built as before the speed-ups: `TrainAugment` per example on the
    uncached source (normalised example by example), then batched."""
    import grain  # pylint: disable=import-outside-toplevel

    from lapseg.data import augment  # pylint: disable=import-outside-toplevel

    source = data.load_source("shapes", "train", data_dir=data_dir)
    stream_seed = int(np.random.SeedSequence((seed, 0)).generate_state(1)[0])
    transform = augment.TrainAugment(
        crop_size=tuple(config.crop_size), scale_range=tuple(config.scale_range), flip=config.flip,
        normalization=config.normalize, ignore_label=255)
    dataset = (source.seed(stream_seed).shuffle().repeat().random_map(transform)
               .batch(config.batch_size, drop_remainder=True))
    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=0)))


@pytest.mark.parametrize("cache_mb", [0, 1024])
def test_train_batches_equal_per_example_augmentation(shapes_dir, cache_mb):
    """The decoded cache and the per-batch normalisation change no value: past one epoch
    (2000 / 64 batches), with the cache full, the batches are the per-example reference's."""
    kw = dict(batch_size=64, crop_size=(64, 80), scale_range=(0.5, 2.0), normalize="caffe")
    reference = _reference_train_batches(shapes_dir, 5, _config(**kw))
    loader = _loader(shapes_dir, seed=5, cache_mb=cache_mb, **kw)
    _assert_same(_take(reference, 40), _take(iter(loader), 40))


def test_decoded_cache(shapes_dir):
    source = data.load_source("shapes", "validation", data_dir=shapes_dir)
    example_bytes = sum(v.nbytes for v in source[0].values())
    cache = pipeline.DecodedCache(source, max_bytes=3 * example_bytes)
    assert len(cache) == len(source)
    for i in (0, 1, 2, 3, 4, 1, len(source) + 2):  # 3 fit; a global index wraps
        got, expected = cache[i], source[i % len(source)]
        np.testing.assert_array_equal(got["image"], expected["image"])
        np.testing.assert_array_equal(got["label"], expected["label"])
    assert cache[1]["image"] is cache[1]["image"]  # kept: the same arrays
    assert cache[4]["image"] is not cache[4]["image"]  # past the budget: read again
    with pytest.raises(ValueError, match="read-only"):
        cache[0]["image"][0, 0, 0] = 1
    assert len(cache[2:10]) == 8


def _numbered(count=None):
    """A grain iterator of batches {'x': [i]} for i = 0, 1, ... (`count` of them)."""
    import grain  # pylint: disable=import-outside-toplevel

    dataset = grain.MapDataset.range(10**6 if count is None else count).map(
        lambda i: {"x": np.array([i])})
    return iter(dataset.to_iter_dataset())


def test_device_prefetch_yields_put_batches_in_order():
    for size in (0, 1, 3):
        iterator = pipeline.prefetch_to_device(_numbered(), lambda b: b["x"] * 10, size)
        assert [int(next(iterator)[0]) for _ in range(5)] == [0, 10, 20, 30, 40]
        iterator.close()
    ended = pipeline.prefetch_to_device(_numbered(2), lambda b: b, 2)
    assert len(list(ended)) == 2
    with pytest.raises(StopIteration):
        next(ended)


def test_device_prefetch_state_is_the_consumed_position():
    """Whatever the thread has prefetched, the state is after the batches handed out, and
    restoring it (into a fresh iterator, or this one mid-stream) replays from there."""
    iterator = pipeline.prefetch_to_device(_numbered(), lambda b: b, 4)
    _take(iterator, 3)
    import time  # pylint: disable=import-outside-toplevel

    time.sleep(0.2)  # let the thread run ahead
    state = iterator.get_state()
    assert isinstance(state, bytes)
    assert [int(b["x"][0]) for b in _take(iterator, 2)] == [3, 4]
    fresh = pipeline.prefetch_to_device(_numbered(), lambda b: b, 4)
    fresh.set_state(state)
    assert [int(b["x"][0]) for b in _take(fresh, 2)] == [3, 4]
    iterator.set_state(state)  # mid-stream: drops what was prefetched
    assert [int(b["x"][0]) for b in _take(iterator, 3)] == [3, 4, 5]
    iterator.set_state(fresh.get_state())
    assert int(next(iterator)["x"][0]) == 5
    for it in (iterator, fresh):
        it.close()


def test_device_prefetch_orbax_round_trip(shapes_dir, tmp_path):
    """Through grain's checkpoint handler (`checkpoint_args`), as training saves it."""
    iterator = pipeline.prefetch_to_device(iter(_loader(shapes_dir)), lambda b: b, 2)
    _take(iterator, 3)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(3, args=ocp.args.Composite(data=data.checkpoint_args(iterator)))
        manager.wait_until_finished()
        expected = _take(iterator, 2)
        fresh = pipeline.prefetch_to_device(iter(_loader(shapes_dir)), lambda b: b, 2)
        manager.restore(3, args=ocp.args.Composite(data=data.checkpoint_args(fresh, restore=True)))
    _assert_same(expected, _take(fresh, 2))
    # The file is grain's own JSON: a plain grain iterator restores it too.
    plain = iter(_loader(shapes_dir))
    saved = next((tmp_path / "ckpt" / "3" / "data").glob("process_0-of-*.json")).read_text()
    plain.set_state(json.loads(saved))
    _assert_same(expected, _take(plain, 2))
    for it in (iterator, fresh):
        it.close()


def test_device_prefetch_raises_the_pipeline_error():
    def put(batch):
        if int(batch["x"][0]) == 2:
            raise RuntimeError("bad batch 2")
        return batch

    iterator = pipeline.prefetch_to_device(_numbered(), put, 2)
    _take(iterator, 2)
    for _ in range(2):  # and again: the stream stays ended
        with pytest.raises(RuntimeError, match="bad batch 2"):
            next(iterator)
