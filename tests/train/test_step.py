"""The sharded train step: device-count invariance, checkpoints across meshes, the
update and the gradient norm (float32 for bf16 params)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from lapseg import losses
from lapseg.train import checkpoint as checkpoint_lib
from lapseg.train import optim
from lapseg.train import state as state_lib
from lapseg.train import step as step_lib

from tests.train.toy import ToySegmenter

IGNORE = 255


def _optimizer_config():
    return ml_collections.ConfigDict({
        "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 1e-3, "warmup_steps": 2,
        "lr_power": 0.9, "lr_multipliers": (("backbone/*", 1.0), ("*", 10.0))})


def _batch(seed=0, n=8, size=8):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, (n, size, size)).astype(np.int32)
    labels[:, 0, :] = IGNORE
    return {"image": rng.normal(size=(n, size, size, 3)).astype(np.float32), "label": labels}


def _run_steps(num_devices, num_steps=2):
    model = ToySegmenter()
    tx = optim.make_optimizer(_optimizer_config(), total_steps=10)
    loss_fn = losses.for_model("toy", ml_collections.ConfigDict({"weights": {"logits": 1.0}}),
                               ignore_label=IGNORE)
    mesh = step_lib.make_mesh(num_devices)
    state = state_lib.create_train_state(
        state_lib.init_variables(model, jax.random.key(0), (1, 8, 8, 3)), tx)
    state = jax.device_put(state, step_lib.replicated(mesh))
    train_step = step_lib.jit_train_step(mesh, model=model, tx=tx, loss_fn=loss_fn,
                                         ignore_label=IGNORE)
    for i in range(num_steps):
        state, metrics = train_step(state, step_lib.shard_batch(_batch(i), mesh),
                                    jax.random.key(1))
    return state, metrics


def test_eight_devices_equal_one_device():
    """Same global batch on a 1-device and an 8-device mesh: same params and BN stats.

    BatchNorm statistics are global under jit, so the only differences are float
    summation order."""
    assert jax.device_count() >= 8, "tests/conftest.py should force 8 CPU devices"
    one, metrics_one = _run_steps(1)
    eight, metrics_eight = _run_steps(8)
    for a, b in zip(jax.tree.leaves(one.variables), jax.tree.leaves(eight.variables)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    np.testing.assert_allclose(metrics_one["loss"], metrics_eight["loss"], rtol=1e-6)
    # The step really trained something: params moved from their initial values.
    init = state_lib.init_variables(ToySegmenter(), jax.random.key(0), (1, 8, 8, 3))
    moved = np.abs(np.asarray(eight.params["head"]["kernel"])
                   - np.asarray(init["params"]["head"]["kernel"])).max()
    assert moved > 1e-3


def test_checkpoint_written_on_8_devices_restores_on_2(tmp_path):
    state, _ = _run_steps(8, num_steps=1)
    meta = {"model": "toy", "num_classes": 3}
    checkpointer = checkpoint_lib.Checkpointer(tmp_path / "ckpt", async_save=False)
    checkpointer.save(1, state, meta=meta)
    checkpointer.close()

    mesh2 = step_lib.make_mesh(2)
    tx = optim.make_optimizer(_optimizer_config(), total_steps=10)
    abstract = state_lib.abstract_train_state(ToySegmenter(), tx, (1, 8, 8, 3))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=step_lib.replicated(mesh2)), abstract)
    restored = checkpoint_lib.Checkpointer(tmp_path / "ckpt").restore(abstract, meta=meta)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    leaf = jax.tree.leaves(restored.params)[0]
    assert len(leaf.sharding.device_set) == 2


def test_checkpoint_of_another_model_is_refused(tmp_path):
    state, _ = _run_steps(1, num_steps=1)
    checkpointer = checkpoint_lib.Checkpointer(tmp_path / "ckpt", async_save=False)
    checkpointer.save(1, state, meta={"model": "toy", "num_classes": 3})
    checkpointer.close()
    tx = optim.make_optimizer(_optimizer_config(), total_steps=10)
    other = state_lib.abstract_train_state(ToySegmenter(num_classes=5), tx, (1, 8, 8, 3))
    with pytest.raises(checkpoint_lib.CheckpointError, match="num_classes=3"):
        checkpoint_lib.Checkpointer(tmp_path / "ckpt").restore(
            other, meta={"model": "toy", "num_classes": 5})
    # Same identity but different shapes (a run whose config changed the head width).
    with pytest.raises(checkpoint_lib.CheckpointError, match="shape"):
        checkpoint_lib.Checkpointer(tmp_path / "ckpt").restore(
            other, meta={"model": "toy", "num_classes": 3})


def _one_sgd_step(param_dtype):
    """One plain-SGD step (rate 1, no momentum, no decay) of the toy from params cast to
    `param_dtype`: `(params before, params after, metrics)`."""
    model = ToySegmenter()
    tx = optax.sgd(1.0)
    loss_fn = losses.for_model("toy", ml_collections.ConfigDict({"weights": {"logits": 1.0}}),
                               ignore_label=IGNORE)
    variables = state_lib.init_variables(model, jax.random.key(0), (1, 8, 8, 3))
    variables = {**variables,
                 "params": jax.tree.map(lambda p: p.astype(param_dtype), variables["params"])}
    state = state_lib.create_train_state(variables, tx)
    before = jax.tree.map(np.asarray, state.params)
    mesh = step_lib.make_mesh(1)
    train_step = step_lib.jit_train_step(mesh, model=model, tx=tx, loss_fn=loss_fn,
                                         ignore_label=IGNORE)
    state, metrics = train_step(jax.device_put(state, step_lib.replicated(mesh)),
                                step_lib.shard_batch(_batch(), mesh), jax.random.key(1))
    return before, state.params, metrics


def test_the_update_and_the_gradient_norm():
    """`params + updates` and the global norm of the gradients: with SGD at rate 1 the
    params move by minus the gradient, whose norm the step reports."""
    before, after, metrics = _one_sgd_step(jnp.float32)
    moved = [np.asarray(b, np.float64) - np.asarray(a, np.float64)
             for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(after))]
    norm = np.sqrt(sum(np.sum(m ** 2) for m in moved))
    assert metrics["grad_norm"].dtype == jnp.float32
    np.testing.assert_allclose(metrics["grad_norm"], norm, rtol=1e-4)


def test_bf16_params_keep_their_dtype_and_a_float32_gradient_norm():
    _, after, metrics = _one_sgd_step(jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree.leaves(after)} == {jnp.dtype(jnp.bfloat16)}
    assert metrics["grad_norm"].dtype == jnp.float32
    _, _, reference = _one_sgd_step(jnp.float32)
    np.testing.assert_allclose(metrics["grad_norm"], reference["grad_norm"], rtol=2e-2)
