"""Jitted, data-parallel train and eval steps (global-view SPMD; docs/architecture.md, "Training step").

A mesh spans every device with one axis `'data'`; the state is replicated (`P()`), the
batch is sharded on its leading axis (`P('data')`). `jax.jit` with these shardings
turns the single-device program into a data-parallel one: gradients and BatchNorm
statistics are reduced across devices by XLA, so no pmean / psum appears here and the
same code runs on 1 CPU, 8 GPUs or a TPU pod.

Non-finite steps (`config.nonfinite`): every step reports its `loss` and `grad_norm`, and
the loop reads them where it syncs anyway (`lapseg.train.loop`), so 'stop' costs the step
nothing. 'skip' folds one flag, `isfinite(loss) & isfinite(grad_norm)`, into the step and
keeps the old params, model state and optimiser state where it is false; the gradient norm
is already computed, and a non-finite gradient anywhere makes it non-finite, so this adds
two scalar tests and a select that fuses into the update.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lapseg import metrics as metrics_lib

# What a step with a non-finite loss or gradient norm does (`config.nonfinite`): 'stop'
# (the loop raises `DivergenceError` before anything is written) or 'skip' (the update is
# dropped, only the step counter advances; the loop counts such steps).
NONFINITE_MODES = ("stop", "skip")


def make_mesh(num_devices=None):
    """A 1-D mesh `('data',)` over the first `num_devices` devices (default: all)."""
    devices = jax.devices()[: num_devices or jax.device_count()]
    # Auto axes: the step is written for one device and XLA partitions it; Explicit
    # axes (the make_mesh default) would demand sharding annotations inside the model.
    return jax.sharding.Mesh(np.asarray(devices), ("data",),
                             axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh):
    return NamedSharding(mesh, P())


def batch_sharded(mesh):
    return NamedSharding(mesh, P("data"))


def shard_batch(batch, mesh):
    """Process-local numpy batch -> global jax arrays sharded over `'data'`.

    On one host this is a device_put; on several, each host passes its own slice
    (`jax.make_array_from_process_local_data`).
    """
    sharding = batch_sharded(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                        batch)


def train_step(state, batch, rng, *, model, tx, loss_fn, ignore_label, nonfinite="stop"):
    """One SGD step. Pure: `(state, batch, rng) -> (state, metrics)`.

    Args:
      state: `TrainState`.
      batch: `{'image': f32 [N, H, W, 3], 'label': int32 [N, H, W]}` (global batch).
      rng: base PRNG key; the step folds in `state.step`, so a resumed run draws the
        same dropout masks as an uninterrupted one.
      nonfinite: one of `NONFINITE_MODES`; with 'skip', a step whose loss or gradient
        norm is not finite returns `state` unchanged but for `step + 1`.
    """
    dropout_rng = jax.random.fold_in(rng, state.step)

    def compute_loss(params):
        outputs, updates = model.apply(
            {"params": params, **state.model_state}, batch["image"], train=True,
            rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
        loss, parts = loss_fn(outputs, batch["label"], batch)
        return loss, (parts, updates, outputs["logits"])

    (loss, (parts, updates, logits)), grads = jax.value_and_grad(compute_loss, has_aux=True)(
        state.params)
    opt_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(lambda p, u: p + u, state.params, opt_updates)
    model_state = {**state.model_state, **updates}
    grad_norm = jnp.sqrt(sum(jnp.sum(g.astype(jnp.float32) ** 2) for g in jax.tree.leaves(grads)))
    if nonfinite == "skip":
        # The forward pass of a bad batch also poisons the BatchNorm statistics, so the
        # model state is kept along with the params and the optimiser state.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        params, model_state, opt_state = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old), (params, model_state, opt_state),
            (state.params, state.model_state, state.opt_state))
    new_state = state.replace(step=state.step + 1, params=params, model_state=model_state,
                              opt_state=opt_state)
    metrics = {"loss": loss, **parts}
    metrics["pixel_accuracy"] = metrics_lib.pixel_accuracy(logits, batch["label"], ignore_label)
    metrics["grad_norm"] = grad_norm
    return new_state, metrics


@jax.jit
def all_finite(tree):
    """Whether every floating-point array of `tree` is finite: one scalar, on the device.

    The loop's last check before it writes a state: an update can overflow to inf while
    the loss and the gradient norm it came from are still finite.
    """
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def eval_step(state, batch, *, model, num_classes, ignore_label):
    """Confusion matrix `[C, C]` of one batch (eval mode, logits at input resolution)."""
    outputs = model.apply(state.variables, batch["image"], train=False)
    pred = jnp.argmax(outputs["logits"], -1)
    return metrics_lib.confusion_matrix(pred, batch["label"], num_classes, ignore_label)


def jit_train_step(mesh, *, model, tx, loss_fn, ignore_label, nonfinite="stop"):
    """`train_step` jitted with replicated state, sharded batch, donated state."""
    if nonfinite not in NONFINITE_MODES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_MODES}, got {nonfinite!r}")
    step = functools.partial(train_step, model=model, tx=tx, loss_fn=loss_fn,
                             ignore_label=ignore_label, nonfinite=nonfinite)
    return jax.jit(step, in_shardings=(replicated(mesh), batch_sharded(mesh), replicated(mesh)),
                   out_shardings=(replicated(mesh), replicated(mesh)), donate_argnums=0)


def jit_eval_step(mesh, *, model, num_classes, ignore_label):
    step = functools.partial(eval_step, model=model, num_classes=num_classes,
                             ignore_label=ignore_label)
    return jax.jit(step, in_shardings=(replicated(mesh), batch_sharded(mesh)),
                   out_shardings=replicated(mesh))
