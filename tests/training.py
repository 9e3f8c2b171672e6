"""Shared test helper: train a model for a few jitted steps on the 8-device CPU mesh."""

import jax
import ml_collections
import numpy as np

from lapseg import bases, losses
from lapseg.train import optim
from lapseg.train import state as state_lib
from lapseg.train import step as step_lib


def loss_curve(model, batch, *, model_name, loss_weights, ignore_label=255, steps=20,
               learning_rate=0.01, num_devices=8, loss_config=None, fitted=None):
    """Losses of `steps` SGD steps on one fixed batch, with the library's own sharded step.

    Args:
      model: a linen model returning an output dict with `'logits'`.
      batch: `{'image': f32 [N, H, W, 3], 'label': int [N, H, W]}`; N divisible by
        `num_devices`.
      model_name: selects the loss through `lapseg.losses.for_model`.
      loss_weights: output key -> weight (`config.loss.weights`).
      loss_config: extra loss config fields (merged with the weights).
      fitted: label-fitted constants to attach (`lapseg.bases.attach`) before training.

    Returns:
      numpy `[steps]` of the training loss before each update.
    """
    config = ml_collections.ConfigDict({
        "learning_rate": learning_rate, "momentum": 0.9, "weight_decay": 0.0,
        "warmup_steps": 0, "lr_power": 0.9, "lr_multipliers": ()})
    tx = optim.make_optimizer(config, total_steps=10 * steps)
    loss_cfg = ml_collections.ConfigDict({"weights": dict(loss_weights), **(loss_config or {})})
    loss_fn = losses.for_model(model_name, loss_cfg, ignore_label=ignore_label)
    mesh = step_lib.make_mesh(num_devices)
    variables = state_lib.init_variables(model, jax.random.key(0), batch["image"].shape)
    variables = bases.attach(variables, fitted or {})
    state = jax.device_put(state_lib.create_train_state(variables, tx),
                           step_lib.replicated(mesh))
    train_step = step_lib.jit_train_step(mesh, model=model, tx=tx, loss_fn=loss_fn,
                                         ignore_label=ignore_label)
    sharded = step_lib.shard_batch(batch, mesh)
    curve = []
    for _ in range(steps):
        state, metrics = train_step(state, sharded, jax.random.key(1))
        curve.append(float(metrics["loss"]))
    return np.asarray(curve)
