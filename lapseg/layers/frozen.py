"""Decoder constants that are frozen by default and trainable by a flag.

LRR's reconstruction bases, DUpsampling's PCA matrix and FCN's bilinear deconvolution
kernels are fitted or fixed before training. Frozen, they live in the `'constants'`
variable collection, which the optimiser never sees (no gradient, no weight decay, no
momentum buffers); trainable, the same array is a `'params'` leaf initialised from it.
"""

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

CONSTANTS = "constants"


def frozen_or_trainable(module: nn.Module, name: str, init_fn: Callable[[], jnp.ndarray],
                        *, trainable: bool, dtype=jnp.float32) -> jnp.ndarray:
    """Declares variable `name` of `module`, initialised by `init_fn()` (no rng needed).

    Args:
      module: the linen module that owns it (call from its `setup` or `@compact` body).
      name: variable name.
      init_fn: returns the initial array (numpy or jnp), e.g. bases loaded from `.npz`.
      trainable: True -> `'params'` (trained), False -> `'constants'` (frozen).
      dtype: storage dtype.

    Returns:
      The current value.
    """
    if trainable:
        return module.param(name, lambda _: jnp.asarray(init_fn(), dtype))
    return module.variable(CONSTANTS, name, lambda: jnp.asarray(init_fn(), dtype)).value
