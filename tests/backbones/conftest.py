"""Fixtures for backbone tests."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util


def _random_variables(model, shape, seed=0):
    """He-normal (fan-in) kernels, zero biases, BN (1, 0) with statistics (0, 1), via numpy.

    `model.init` compiles a threefry kernel per parameter shape (seconds per backbone
    on a loaded 2-core CPU); filling `jax.eval_shape(model.init, ...)` with numpy is
    instant and gives the same structure and dtypes.
    """
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False)
    )
    rng = np.random.default_rng(seed)
    filled = {}
    for path, leaf in traverse_util.flatten_dict(abstract).items():
        if path[-1] == "kernel":
            std = math.sqrt(2.0 / math.prod(leaf.shape[:-1]))
            value = rng.standard_normal(leaf.shape) * std
        elif path[-1] in ("scale", "var"):
            value = np.ones(leaf.shape)
        else:  # bias, mean
            value = np.zeros(leaf.shape)
        filled[path] = jnp.asarray(value, leaf.dtype)
    return traverse_util.unflatten_dict(filled)


@pytest.fixture
def random_variables():
    """`random_variables(model, input_shape, seed=0)` -> variables like `model.init`'s."""
    return _random_variables
