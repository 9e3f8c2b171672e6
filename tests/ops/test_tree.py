"""`lapseg.ops.tree`: one naming of pytree paths, for dicts, FrozenDicts, the train state
(dataclass fields, optax tuples) and configs ('.' and values that are tuples or None)."""

import flax
import jax.numpy as jnp
import numpy as np
import optax

from lapseg.ops import tree as tree_lib
from lapseg.train import state as state_lib

VARIABLES = {"params": {"head": {"kernel": np.ones((1, 1, 2, 3)), "bias": np.zeros(3)},
                        "log_temperature": np.zeros(())},
             "batch_stats": {"bn": {"mean": np.zeros(2)}}}


def test_names_in_jax_order_and_back():
    named = tree_lib.flatten_with_names(VARIABLES)
    assert [name for name, _ in named] == [
        "batch_stats/bn/mean", "params/head/bias", "params/head/kernel", "params/log_temperature"]
    assert named[2][1] is VARIABLES["params"]["head"]["kernel"]
    assert tree_lib.unflatten_names(dict(named)) == VARIABLES
    assert tree_lib.unflatten_names(named) == VARIABLES
    frozen = flax.core.freeze(VARIABLES)
    assert tree_lib.flatten_with_names(frozen) == named


def test_the_train_state_is_named_by_field_and_index():
    tx = optax.sgd(0.1, momentum=0.9)
    params = {"head": {"kernel": jnp.ones((2, 3))}}
    state = state_lib.create_train_state({"params": params}, tx)
    names = [name for name, _ in tree_lib.flatten_with_names(state)]
    assert names == ["step", "params/head/kernel", "opt_state/0/trace/head/kernel"]


def test_map_with_names_keeps_the_structure():
    frozen = flax.core.freeze(VARIABLES)
    labels = tree_lib.map_with_names(lambda name, leaf: f"{name}:{np.ndim(leaf)}", frozen)
    assert isinstance(labels, flax.core.FrozenDict)
    assert labels["params"]["head"]["kernel"] == "params/head/kernel:4"
    sums = tree_lib.map_with_names(lambda name, a, b: a + b, VARIABLES, VARIABLES)
    np.testing.assert_array_equal(sums["params"]["head"]["kernel"], 2.0)


def test_config_values_with_another_separator():
    config = {"backbone": "resnet18", "backbone_kwargs": {"width": 0.25, "strides": (1, 2)},
              "extra": None, "empty": {}}
    named = tree_lib.flatten_with_names(config, sep=".", is_leaf=lambda x: not isinstance(x, dict))
    assert named == [("backbone", "resnet18"), ("backbone_kwargs.strides", (1, 2)),
                     ("backbone_kwargs.width", 0.25), ("extra", None)]
    assert tree_lib.flatten_with_names(5, is_leaf=lambda x: True) == [("", 5)]
