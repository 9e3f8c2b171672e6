"""Training state: one pytree holding everything a step reads and writes."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """`step` int32 scalar; `params` trainable; `model_state` every other variable
    collection of the model (`batch_stats`, frozen `constants` such as LRR bases);
    `opt_state` the optax state."""

    step: jnp.ndarray
    params: Any
    model_state: Any
    opt_state: Any

    @property
    def variables(self):
        return {"params": self.params, **self.model_state}


def init_variables(model, rng, image_shape):
    """`model.init` on zeros of `image_shape` `[N, H, W, 3]` (eval mode, no dropout).

    Jitted: one compiled program instead of one small kernel per parameter shape, which
    on CPU is several times faster for a ResNet.
    """
    images = jnp.zeros(image_shape, jnp.float32)
    init = jax.jit(lambda key, x: model.init({"params": key, "dropout": key}, x, train=False))
    return init(rng, images)


def create_train_state(variables, tx: optax.GradientTransformation) -> TrainState:
    """Splits `variables` into params and the rest, and initialises the optimiser."""
    variables = dict(variables)
    params = variables.pop("params")
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
        opt_state=tx.init(params))


def abstract_train_state(model, tx, image_shape):
    """Shapes and dtypes of the state, without allocating it (for checkpoint restore)."""
    return jax.eval_shape(
        lambda rng: create_train_state(init_variables(model, rng, image_shape), tx),
        jax.random.key(0))
