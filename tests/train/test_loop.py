"""The training loop end to end on the embedded shapes data, with a toy model.

Covers resume-after-kill (bitwise equal to an uninterrupted run, data iterator
included) and the loop's outputs (metrics JSON lines, best/last checkpoints)."""

import json
import jax
import numpy as np
import pytest

from lapseg import models
from lapseg.train import loop
from lapseg.train import step as step_lib
from lapseg.train import checkpoint as checkpoint_lib
from tests.train import toy



@pytest.fixture(autouse=True)
def toy_model(monkeypatch):
    monkeypatch.setitem(models._MODELS, "toy", "tests.train.toy:toy")  # pylint: disable=protected-access


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _config(data_dir, steps=6):
    config = toy.tiny_config(data_dir, steps=steps)
    config.checkpoint_every_steps = 3
    config.optimizer.warmup_steps = 2
    return config


class _Killed(Exception):
    pass


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, data_dir, monkeypatch):
    config = _config(data_dir)
    loop.train_and_evaluate(config, str(tmp_path / "straight"))

    # Kill the second run inside step 5, after the checkpoint of step 3 was written.
    real_jit = step_lib.jit_train_step

    def killing_jit(*args, **kwargs):
        step_fn = real_jit(*args, **kwargs)
        calls = {"n": 0}

        def wrapped(state, batch, rng):
            calls["n"] += 1
            if calls["n"] == 5:
                raise _Killed()
            return step_fn(state, batch, rng)
        return wrapped

    monkeypatch.setattr(step_lib, "jit_train_step", killing_jit)
    with pytest.raises(_Killed):
        loop.train_and_evaluate(config, str(tmp_path / "resumed"))
    monkeypatch.setattr(step_lib, "jit_train_step", real_jit)
    result = loop.train_and_evaluate(config, str(tmp_path / "resumed"))
    assert result["step"] == 6

    def final_state(workdir):
        checkpointer = checkpoint_lib.Checkpointer(workdir / "checkpoints")
        return checkpointer.latest_step(), checkpointer.read()

    step_a, straight = final_state(tmp_path / "straight")
    step_b, resumed = final_state(tmp_path / "resumed")
    assert step_a == step_b == 6
    leaves_a, leaves_b = jax.tree.leaves(straight), jax.tree.leaves(resumed)
    assert len(leaves_a) == len(leaves_b) > 0
    for a, b in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # The resumed run logged steps 4..6 only after the restart (and 1..4 before it).
    lines = [json.loads(l) for l in open(tmp_path / "resumed" / "metrics.jsonl")]
    train_steps = [l["step"] for l in lines if l["split"] == "train"]
    assert train_steps == [1, 2, 3, 4, 4, 5, 6]
