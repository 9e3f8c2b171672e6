"""Jitted, data-parallel train and eval steps (global-view SPMD; docs/architecture.md, "Training step").

A mesh spans every device with axes `('data', 'spatial')`; the state is replicated
(`P()`), the batch is sharded on its leading axis over `'data'` and, with
`config.mesh.spatial = S > 1`, along the image height over `'spatial'` (`S` devices
share each image). `jax.jit` with these shardings turns the single-device program into a
partitioned one: gradients and BatchNorm statistics are reduced across devices, and
convolutions over a height-split image exchange their halos, all inserted by XLA, so no
pmean / psum appears here and the same code runs on 1 CPU, 8 GPUs, a TPU pod or several
processes (`lapseg.train.distributed`).

The height of a training batch must be a multiple of `S` (`spatial_error`): XLA:CPU
(jax 0.10) partitions an unevenly split image's forward pass correctly but not its
gradients (a dilated ResNet's were off by percents), so uneven splits are never made. An
evaluation batch whose height `S` does not divide is split over `'data'` only. Sizes
inside the network need no such care (a 100-row image has 50-, 25- then 13-row feature
maps). The result equals the unsplit step's up to float summation order; how much XLA
actually splits (and so the memory saved) depends on the model and the sizes, e.g. a
98-row PSPNet input comes out replicated, a 100-row one split (`compiled.memory_analysis()`;
`benchmarks/spatial_memory.py`).

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
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lapseg import metrics as metrics_lib
from lapseg.train import config as config_lib

# What a step with a non-finite loss or gradient norm does (`config.nonfinite`): 'stop'
# (the loop raises `DivergenceError` before anything is written) or 'skip' (the update is
# dropped, only the step counter advances; the loop counts such steps).
NONFINITE_MODES = config_lib.NONFINITE_MODES


AXES = ("data", "spatial")


class MeshError(ValueError):
    """`config.mesh` does not fit the devices (or the batch size)."""


def make_mesh(num_devices=None, *, spatial=1):
    """The mesh `('data', 'spatial')` over the first `num_devices` devices (default: all).

    Args:
      num_devices: how many devices (default: every device of every process).
      spatial: devices sharing each image (`config.mesh.spatial`); the `'data'` axis has
        `num_devices / spatial`. Neighbouring devices of one process share an image, so a
        height split never crosses processes when `spatial` divides the local device count.

    Devices are ordered by process, then id: process `p` holds a contiguous block of the
    `'data'` axis, which is where `jax.make_array_from_process_local_data` puts its rows.
    """
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    devices = devices[: num_devices or len(devices)]
    spatial = int(spatial)
    if spatial < 1 or len(devices) % spatial:
        raise MeshError(f"config.mesh.spatial = {spatial} must be >= 1 and divide the number "
                         f"of devices ({len(devices)})")
    if jax.process_count() > 1 and jax.local_device_count() % spatial:
        raise MeshError(f"config.mesh.spatial = {spatial} must divide the devices of each "
                         f"process ({jax.local_device_count()}): an image is not split across "
                         f"processes")
    # Auto axes: the step is written for one device and XLA partitions it; Explicit
    # axes (the make_mesh default) would demand sharding annotations inside the model.
    return jax.sharding.Mesh(np.asarray(devices).reshape(len(devices) // spatial, spatial),
                             AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2)


def spatial_size(mesh) -> int:
    """Devices per image (the `'spatial'` axis; 1 on a mesh without one)."""
    return dict(mesh.shape).get("spatial", 1)


def data_size(mesh) -> int:
    """Devices the batch is split over (the `'data'` axis)."""
    return dict(mesh.shape)["data"]


def replicated(mesh):
    return NamedSharding(mesh, P())


def _spec(mesh, shape):
    """`P('data', 'spatial')` for an image-like array `[N, H, ...]` on a spatial mesh when
    `spatial` divides H, else `P('data')`."""
    spatial = spatial_size(mesh)
    if spatial > 1 and len(shape) >= 3 and shape[1] % spatial == 0:
        return P("data", "spatial")
    return P("data")


def batch_sharding(mesh, shape):
    """Where an input array of `shape` (`[N, H, W, ...]`) goes: see `_spec`."""
    return NamedSharding(mesh, _spec(mesh, shape))


def spatial_error(mesh, height):
    """Why a training batch of `height` rows cannot be split over `mesh` (None: it can)."""
    spatial = spatial_size(mesh)
    if spatial > 1 and height % spatial:
        return (f"config.mesh.spatial = {spatial} must divide the height of the training "
                f"images ({height}): change the crop size or config.mesh.spatial")
    return None


def shard_batch(batch, mesh):
    """Process-local numpy batch -> global jax arrays: rows over `'data'`, height over
    `'spatial'` (where it divides).

    On one host this is a device_put; on several, each host passes its own rows
    (`jax.make_array_from_process_local_data`), the global batch being the processes'
    rows in process order.
    """
    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.shape), x)
    return jax.tree.map(put, batch)


def constrain_batch(batch, mesh):
    """Inside a jitted step: the batch split as `shard_batch` splits it (whatever the
    inputs' shardings). The identity without a mesh or with `spatial == 1`."""
    if mesh is None or spatial_size(mesh) == 1:
        return batch
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(
        x, NamedSharding(mesh, _spec(mesh, x.shape))), batch)


def constrain_outputs(outputs, mesh):
    """Inside a jitted step: the model's image-like outputs `[N, h, w, C]` whose height
    `spatial` divides, split like the input. Where a model resizes across the height (a
    final bilinear upsampling is a contraction over it), XLA's propagation alone may
    replicate the whole network; pinning both ends keeps it split. Other outputs are left
    to XLA."""
    if mesh is None or spatial_size(mesh) == 1:
        return outputs
    spatial = spatial_size(mesh)

    def constrain(x):
        if getattr(x, "ndim", 0) == 4 and x.shape[1] % spatial == 0:
            return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P("data", "spatial")))
        return x
    return jax.tree.map(constrain, outputs)


def train_step(state, batch, rng, *, model, tx, loss_fn, ignore_label, nonfinite="stop",
               mesh=None):
    """One SGD step. Pure: `(state, batch, rng) -> (state, metrics)`.

    Args:
      state: `TrainState`.
      batch: `{'image': f32 [N, H, W, 3], 'label': int32 [N, H, W]}` (global batch).
      rng: base PRNG key; the step folds in `state.step`, so a resumed run draws the
        same dropout masks as an uninterrupted one.
      nonfinite: one of `NONFINITE_MODES`; with 'skip', a step whose loss or gradient
        norm is not finite returns `state` unchanged but for `step + 1`.
      mesh: the step's mesh; with a `'spatial'` axis the batch is split along its height
        (`constrain_batch`), which it must divide. None: no constraint (XLA propagates the
        input shardings).
    """
    if mesh is not None and (error := spatial_error(mesh, batch["image"].shape[1])):
        raise ValueError(error)
    batch = constrain_batch(batch, mesh)
    dropout_rng = jax.random.fold_in(rng, state.step)

    def compute_loss(params):
        outputs, updates = model.apply(
            {"params": params, **state.model_state}, batch["image"], train=True,
            rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
        outputs = constrain_outputs(outputs, mesh)
        loss, parts = loss_fn(outputs, batch["label"], batch)
        return loss, (parts, updates, outputs["logits"])

    (loss, (parts, updates, logits)), grads = jax.value_and_grad(compute_loss, has_aux=True)(
        state.params)
    opt_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, opt_updates)
    model_state = {**state.model_state, **updates}
    # In float32 whatever the parameters' dtype (a bf16 sum of squares keeps 8 bits).
    # `optax.tree.norm` is `optax.global_norm` under its current (not deprecated) name.
    grad_norm = optax.tree.norm(jax.tree.map(lambda g: g.astype(jnp.float32), grads))
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
    # Label pixels neither a class id nor the ignore label: never trained on or scored
    # under jit, so the loop raises on them (`loop.FiniteGuard.check`).
    labels = batch["label"]
    metrics["label_errors"] = jnp.sum((labels != ignore_label)
                                      & ((labels < 0) | (labels >= logits.shape[-1])))
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


def eval_step(state, batch, *, model, num_classes, ignore_label, mesh=None):
    """Confusion matrix `[C, C]` of one batch (eval mode, logits at input resolution)."""
    batch = constrain_batch(batch, mesh)
    outputs = constrain_outputs(model.apply(state.variables, batch["image"], train=False), mesh)
    pred = jnp.argmax(outputs["logits"], -1)
    return metrics_lib.confusion_matrix(pred, batch["label"], num_classes, ignore_label)


def jit_train_step(mesh, *, model, tx, loss_fn, ignore_label, nonfinite="stop"):
    """`train_step` jitted on `mesh`: replicated state, donated; the batch where
    `shard_batch` put it (split over `'data'`, and over `'spatial'` along its height)."""
    if nonfinite not in NONFINITE_MODES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_MODES}, got {nonfinite!r}")
    step = functools.partial(train_step, model=model, tx=tx, loss_fn=loss_fn,
                             ignore_label=ignore_label, nonfinite=nonfinite, mesh=mesh)
    # The batch's in_sharding is left to its arrays (`shard_batch`): an evaluation height
    # that `spatial` does not divide is split over 'data' only.
    return jax.jit(step, in_shardings=(replicated(mesh), None, replicated(mesh)),
                   out_shardings=(replicated(mesh), replicated(mesh)), donate_argnums=0)


def jit_eval_step(mesh, *, model, num_classes, ignore_label):
    step = functools.partial(eval_step, model=model, num_classes=num_classes,
                             ignore_label=ignore_label, mesh=mesh)
    return jax.jit(step, in_shardings=(replicated(mesh), None),
                   out_shardings=replicated(mesh))
