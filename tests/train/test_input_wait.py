"""`input_wait_fraction`: the device's idle wait for input, per logging interval; and the
prefetch that puts batches onto the mesh."""

import json
import threading
import time

import jax
import numpy as np
import pytest

from lapseg import models
from lapseg.data import pipeline
from lapseg.train import reporting as log_lib
from lapseg.train import loop
from lapseg.train import step as step_lib
from tests.train import toy


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_input_wait_interval(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(log_lib.time, "perf_counter", clock)
    wait = log_lib.InputWait()
    clock.now += 10.0
    wait.add(0.5)
    wait.add(1.5)
    assert wait.interval() == pytest.approx(0.2)
    clock.now += 4.0  # a new interval: only its own waits
    wait.add(1.0)
    assert wait.interval() == pytest.approx(0.25)
    clock.now += 1.0
    assert wait.interval() == 0.0


class _Slow:
    """A grain-like iterator whose batches take `delay` seconds; it counts them."""

    def __init__(self, delay):
        self.delay, self.count = delay, 0

    def __next__(self):
        time.sleep(self.delay)
        self.count += 1
        return {"x": np.array([self.count])}

    def get_state(self):
        return {"count": self.count}


@pytest.mark.parametrize("size", [0, 2])
def test_wait_counts_only_while_the_device_is_idle(size):
    busy = threading.Event()
    iterator = pipeline.prefetch_to_device(_Slow(0.05), lambda b: b, size)
    busy.set()
    batch, waited = iterator.get(busy.is_set)
    assert int(batch["x"][0]) == 1 and waited == 0.0  # the device computed meanwhile
    busy.clear()
    _, waited = iterator.get(busy.is_set)
    assert waited > 0.0  # the device sat idle until the batch came
    _, waited = iterator.get()  # no device_busy: idle throughout
    assert waited > 0.0
    iterator.close()


def test_prefetched_batches_have_the_step_sharding():
    mesh = step_lib.make_mesh()
    assert jax.device_count() == 8  # tests/conftest.py
    iterator = pipeline.prefetch_to_device(
        iter([{"image": np.zeros((8, 16, 16, 3), np.float32),
               "label": np.zeros((8, 16, 16), np.int32)}]),
        lambda b: step_lib.shard_batch(b, mesh), 2)
    batch = next(iterator)
    for key, value in batch.items():
        assert isinstance(value, jax.Array)
        assert value.sharding == step_lib.batch_sharding(mesh, value.shape), key
    with pytest.raises(StopIteration):
        next(iterator)


@pytest.fixture
def toy_model(monkeypatch):
    monkeypatch.setitem(models._MODELS, "toy", "tests.train.toy:toy")  # pylint: disable=protected-access


def test_every_train_log_line_has_the_fraction(tmp_path, toy_model):  # pylint: disable=unused-argument,redefined-outer-name
    config = toy.tiny_config(str(tmp_path / "tfds"), steps=4)
    config.log_every_steps = 2
    loop.train_and_evaluate(config, str(tmp_path / "run"))
    lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    train = [line for line in lines if line["split"] == "train"]
    assert [line["step"] for line in train] == [2, 4]
    assert all(0.0 <= line["input_wait_fraction"] <= 1.0 for line in train)
    assert not [t for t in threading.enumerate() if t.name == "lapseg-device-prefetch"]
