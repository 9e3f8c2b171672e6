"""The divergence guard and the resume fallback (issue #17), on the toy model.

- A non-finite loss or gradient norm stops training (`loop.DivergenceError`; one line and a
  non-zero exit from `lapseg train`) before anything of it is written: the checkpoints and
  `best/` of the run are byte-identical afterwards, even when the divergence falls between
  two log steps, or only shows in the state.
- `config.nonfinite = 'skip'` drops such steps (params, BatchNorm statistics and optimiser
  state unchanged), counts them, and saves finite states.
- A resumed run whose latest checkpoint is unreadable restores the one before it, with a
  warning naming the bad step, and moves the bad one aside.

NaNs are injected by wrapping the jitted step (NaN images on chosen calls), as
tests/train/test_loop.py injects a kill; the acceptance run uses learning rate 1e6.
"""

import glob
import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lapseg.train import checkpoint as checkpoint_lib
from lapseg.train import loop
from lapseg.train import step as step_lib
from tests.cli import helpers
from tests.train import toy


@pytest.fixture(autouse=True)
def toy_model(monkeypatch):
    helpers.register_toy(monkeypatch)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _config(data_dir, steps=6, **fields):
    """The tiny toy run: checkpoints every 3 steps, the last 2 kept."""
    config = toy.tiny_config(data_dir, steps=steps)
    config.checkpoint_every_steps = 3
    config.keep_checkpoints = 2
    config.optimizer.warmup_steps = 2
    for key, value in fields.items():
        config[key] = value
    return config




def _steps(workdir):
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        return checkpointer.all_steps()
    finally:
        checkpointer.close()


def _patch_step(monkeypatch, nan_calls=(), after=None):
    """Wraps the jitted train step: NaN images on the `nan_calls`-th calls (1-based), and
    `after(call, old_state, new_state, metrics) -> new_state` on every call if given
    (`old_state` is a host copy: the step donates the device one)."""
    real_jit = step_lib.jit_train_step

    def patched_jit(*args, **kwargs):
        step_fn = real_jit(*args, **kwargs)
        calls = {"n": 0}

        def wrapped(state, batch, rng):
            calls["n"] += 1
            if calls["n"] in nan_calls:
                batch = {**batch, "image": batch["image"] * jnp.nan}
            old = jax.device_get(state) if after else None
            new, metrics = step_fn(state, batch, rng)
            return (after(calls["n"], old, new, metrics) if after else new), metrics
        return wrapped

    monkeypatch.setattr(step_lib, "jit_train_step", patched_jit)


def _all_finite(tree):
    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree)
               if np.issubdtype(np.asarray(x).dtype, np.inexact))


def test_lapseg_train_at_lr_1e6_stops_and_keeps_the_healthy_run(tmp_path, data_dir):
    """The issue's reproduction: resuming a healthy run at learning rate 1e6 used to go on
    to exit 0, replace best/ with a NaN model and let max_to_keep delete the good
    checkpoints."""
    (tmp_path / "toy.py").write_text(helpers.TOY_CONFIG)
    workdir = tmp_path / "w"
    argv = ["train", f"--config={tmp_path / 'toy.py'}", f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}", "--config.checkpoint_every_steps=10",
            "--config.keep_checkpoints=2", "--config.eval_every_steps=10"]
    assert helpers.run(*argv, "--config.num_train_steps=20") == 0
    assert _steps(workdir) == [10, 20] and (workdir / "best" / "best.json").is_file()
    before = {d: helpers.file_hashes(workdir / d) for d in ("checkpoints", "best")}
    shutil.copytree(workdir, tmp_path / "healthy")  # for the eye, when this test fails

    # The loss grows ~1e10-fold a step and is NaN some steps before the step-30 evaluation,
    # best/ and checkpoint (whose save would delete step 10's). No log step in between: the
    # check before the evaluation catches it, and names the first NaN step.
    message = helpers.run(*argv, "--config.num_train_steps=40", "--config.log_every_steps=100",
                          "--config.optimizer.learning_rate=1e6")
    assert isinstance(message, str) and "\n" not in message, message  # exit status 1
    assert message.startswith("lapseg train: training diverged at step "), message
    assert "lower --config.optimizer.learning_rate (now 1e+06)" in message, message
    assert "nonfinite=skip" in message, message
    diverged_at = int(message.split("at step ")[1].split()[0])
    assert 20 < diverged_at < 30
    assert {d: helpers.file_hashes(workdir / d) for d in ("checkpoints", "best")} == before
    assert before["checkpoints"] and before["best"]


def test_an_unknown_nonfinite_mode_is_one_line(tmp_path):
    message = helpers.run("train", f"--workdir={tmp_path / 'w'}", "--config.nonfinite=maybe")
    assert message == ("lapseg train: config.nonfinite = 'maybe': must be one of stop, skip "
                       "— set --config.nonfinite")
    assert not (tmp_path / "w").exists()


def test_a_nan_between_log_steps_is_caught_before_the_next_save(tmp_path, data_dir,
                                                                monkeypatch):
    _patch_step(monkeypatch, nan_calls=(5,))
    config = _config(data_dir, steps=12, log_every_steps=100)
    with pytest.raises(loop.DivergenceError) as caught:
        loop.train_and_evaluate(config, str(tmp_path))
    # Found at the step-6 save, named as step 5; the save (which would have deleted
    # nothing yet, but written NaNs) did not happen, nor any evaluation or best/.
    assert caught.value.step == 5 and np.isnan(caught.value.loss)
    assert str(caught.value).startswith("training diverged at step 5 (loss nan, grad_norm nan")
    assert _steps(tmp_path) == [3]
    assert not (tmp_path / "best").exists()


def test_a_non_finite_state_from_finite_metrics_is_not_saved(tmp_path, data_dir, monkeypatch):
    """An update can overflow while the loss and gradient norm are finite: the state
    itself is checked before a write."""

    def overflow_on_call_6(call, old, new, metrics):  # the step of a save
        if call != 6:
            return new
        return new.replace(params=jax.tree.map(lambda p: p * jnp.inf, new.params))

    _patch_step(monkeypatch, after=overflow_on_call_6)
    with pytest.raises(loop.DivergenceError) as caught:
        loop.train_and_evaluate(_config(data_dir, steps=12, log_every_steps=100),
                                str(tmp_path))
    assert str(caught.value).startswith("training diverged by step 6 (non-finite train state;")
    assert _steps(tmp_path) == [3]


def test_skip_mode_drops_non_finite_steps_counts_them_and_saves_finite_states(
        tmp_path, data_dir, monkeypatch):
    kept = {}

    def record(call, old, new, metrics):
        if call == 2:  # a NaN step: everything but the step counter is the old state
            kept["old"], kept["new"] = old, jax.device_get(new)
        return new

    _patch_step(monkeypatch, nan_calls=(2, 5), after=record)
    config = _config(data_dir, eval_every_steps=3, nonfinite="skip")
    result = loop.train_and_evaluate(config, str(tmp_path))

    assert result["step"] == 6 and result["skipped_steps"] == 2
    old, new = kept["old"], kept["new"]
    assert int(new.step) == int(old.step) + 1
    for a, b in zip(jax.tree.leaves((old.params, old.model_state, old.opt_state)),
                    jax.tree.leaves((new.params, new.model_state, new.opt_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl", encoding="utf-8")]
    train = {l["step"]: l for l in lines if l["split"] == "train"}
    assert [train[s]["skipped_steps"] for s in range(1, 7)] == [0, 1, 1, 1, 2, 2]
    assert np.isnan(train[2]["loss"]) and np.isfinite(train[6]["loss"])
    assert _steps(tmp_path) == [3, 6]
    for directory in ("checkpoints", "best"):
        saved = checkpoint_lib.Checkpointer(tmp_path / directory).read()
        assert _all_finite(saved), directory


def _truncate_data_files(step_dir):
    """Cuts the data files of a checkpoint's state (OCDBT `d/` folders) to 40 bytes, as a
    copy cut short would."""
    for path in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True):
        with open(path, "r+b") as f:
            f.truncate(40)


def test_resume_restores_the_newest_readable_checkpoint(tmp_path, data_dir, caplog):
    config = _config(data_dir)
    loop.train_and_evaluate(config, str(tmp_path / "w"))
    shutil.copytree(tmp_path / "w", tmp_path / "straight")
    _truncate_data_files(tmp_path / "w" / "checkpoints" / "6")

    with caplog.at_level(logging.WARNING, logger="lapseg"):
        result = loop.train_and_evaluate(config, str(tmp_path / "w"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and "checkpoint step 6 in" in warnings[0], warnings
    assert "resuming from step 3" in warnings[0]

    # It trained steps 4..6 again and saved step 6 where the bad one was (moved aside).
    assert result["step"] == 6 and _steps(tmp_path / "w") == [3, 6]
    assert (tmp_path / "w" / "checkpoints.unreadable" / "6" / "state").is_dir()
    straight = checkpoint_lib.Checkpointer(tmp_path / "straight" / "checkpoints").read()
    resumed = checkpoint_lib.Checkpointer(tmp_path / "w" / "checkpoints").read()
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_no_readable_checkpoint_is_an_error_that_moves_nothing(tmp_path):
    state = {"w": jnp.arange(64.0).reshape(8, 8)}
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])), state)
    checkpointer = checkpoint_lib.Checkpointer(tmp_path / "ckpt", async_save=False)
    for step in (1, 2):
        checkpointer.save(step, jax.tree.map(lambda x, s=step: x + s, state), meta={"m": 1})
    checkpointer.close()
    for step in (1, 2):
        _truncate_data_files(tmp_path / "ckpt" / str(step))

    with pytest.raises(checkpoint_lib.CheckpointError, match="no readable checkpoint in .*"
                       "step 2: .*step 1: "):
        checkpoint_lib.Checkpointer(tmp_path / "ckpt").restore(abstract, meta={"m": 1})
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["1", "2"]
    assert not (tmp_path / "ckpt.unreadable").exists()
