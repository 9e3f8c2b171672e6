"""Per-parameter-group learning rates (`config.optimizer.lr_multipliers`), warm-up + poly
schedule, weight decay on kernels only: checked against the SGD update written out by hand."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lapseg.ops import tree as tree_lib
from lapseg.train import optim

PARAMS = {
    "backbone": {"conv": {"kernel": jnp.ones((3, 3, 2, 2)), "bias": jnp.ones((2,))}},
    "coefficients_res5": {"conv": {"kernel": jnp.ones((5, 5, 2, 4)), "bias": jnp.ones((4,))}},
    "coefficients_res4": {"conv": {"kernel": jnp.ones((5, 5, 2, 4)), "bias": jnp.ones((4,))}},
    "log_temperature": jnp.zeros(()),
}
RULES = (("backbone/*", 1.0), ("coefficients_res5/*/bias", 0.2), ("coefficients_res5/*", 0.1),
         ("*/bias", 2.0), ("*", 0.05))


def test_first_matching_rule_wins():
    assert optim.resolve_multipliers(PARAMS, RULES) == {
        "backbone/conv/kernel": 1.0, "backbone/conv/bias": 1.0,
        "coefficients_res5/conv/kernel": 0.1, "coefficients_res5/conv/bias": 0.2,
        "coefficients_res4/conv/kernel": 0.05, "coefficients_res4/conv/bias": 2.0,
        "log_temperature": 0.05,
    }
    assert set(optim.resolve_multipliers(PARAMS, ()).values()) == {1.0}


def test_one_step_scales_each_group():
    # Plain SGD (no momentum, no decay, constant rate): update = -lr * multiplier * gradient.
    config = ml_collections.ConfigDict({
        "learning_rate": 0.5, "momentum": 0.0, "weight_decay": 0.0, "warmup_steps": 0,
        "lr_power": 0.0, "lr_multipliers": RULES})
    tx = optim.make_optimizer(config, total_steps=10)
    rng = np.random.default_rng(0)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), PARAMS)
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    flat_updates, flat_grads = (dict(tree_lib.flatten_with_names(tree))
                                for tree in (updates, grads))
    for path, multiplier in optim.resolve_multipliers(PARAMS, RULES).items():
        np.testing.assert_allclose(flat_updates[path], -0.5 * multiplier * flat_grads[path],
                                   rtol=1e-6, err_msg=path)


def test_weight_decay_on_kernels_only():
    config = ml_collections.ConfigDict({
        "learning_rate": 1.0, "momentum": 0.0, "weight_decay": 0.1, "warmup_steps": 0,
        "lr_power": 0.0, "lr_multipliers": ()})
    tx = optim.make_optimizer(config, total_steps=10)
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["backbone"]["conv"]["kernel"], -0.1)
    np.testing.assert_allclose(updates["backbone"]["conv"]["bias"], 0.0)


def test_describe_groups_lists_every_multiplier_and_unused_patterns():
    text = optim.describe_groups(PARAMS, RULES + (("decoder/*", 3.0),))
    for multiplier in ("x2:", "x1:", "x0.2:", "x0.1:", "x0.05:"):
        assert f"lr {multiplier}" in text
    assert "lr x0.1: 1 arrays, 200 values (coefficients_res5/conv/kernel)" in text
    assert "matching no parameter: decoder/*" in text


@pytest.mark.parametrize("rules", [(("backbone/*",),), ((1.0, "backbone/*"),),
                                   (("*", -1.0),)])
def test_bad_rules_name_the_entry(rules):
    with pytest.raises(ValueError, match=r"lr_multipliers\[0\]"):
        optim.resolve_multipliers(PARAMS, rules)


@pytest.mark.parametrize("mode", ["kernels", "all"])
def test_two_sgd_steps_equal_the_hand_computed_update(mode):
    # torch.optim.SGD (the references' optimiser, e.g. hszhao/semseg tool/train.py) with
    # per-group lr = base_lr * multiplier, momentum m and weight decay wd, written out in numpy:
    #   d_t = g_t + wd * p_{t-1} (only where decayed);  b_t = m * b_{t-1} + d_t (b_0 = 0);
    #   p_t = p_{t-1} - lr * multiplier * b_t.
    # 'kernels' decays the 4-D kernels only; 'all' every array, biases and the scalar too.
    lr, momentum, wd = 0.3, 0.9, 0.05
    config = ml_collections.ConfigDict({
        "learning_rate": lr, "momentum": momentum, "weight_decay": wd, "warmup_steps": 0,
        "lr_power": 0.0, "lr_multipliers": RULES, "weight_decay_mask": mode})
    tx = optim.make_optimizer(config, total_steps=10)
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), PARAMS)
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), PARAMS)
             for _ in range(2)]
    state, current = tx.init(params), params
    for g in grads:
        updates, state = tx.update(g, state, current)
        current = jax.tree.map(lambda p, u: p + u, current, updates)

    flat = lambda tree: {path: np.asarray(v, np.float64)
                         for path, v in tree_lib.flatten_with_names(tree)}
    got, p0, g1, g2 = flat(current), flat(params), flat(grads[0]), flat(grads[1])
    decayed = set()
    for path, multiplier in optim.resolve_multipliers(PARAMS, RULES).items():
        decay = wd if (mode == "all" or p0[path].ndim > 1) else 0.0
        decayed |= {path} if decay else set()
        b1 = g1[path] + decay * p0[path]
        p1 = p0[path] - lr * multiplier * b1
        b2 = momentum * b1 + g2[path] + decay * p1
        p2 = p1 - lr * multiplier * b2
        np.testing.assert_allclose(got[path], p2, rtol=1e-5, atol=1e-6, err_msg=path)
    kernels = {"backbone/conv/kernel", "coefficients_res5/conv/kernel",
               "coefficients_res4/conv/kernel"}
    assert decayed == (set(p0) if mode == "all" else kernels)


def test_weight_decay_mask_modes_and_bad_mode():
    assert jax.tree.leaves(optim.weight_decay_mask(PARAMS, "all")) == [True] * 7
    assert jax.tree.leaves(optim.weight_decay_mask(PARAMS)) == jax.tree.leaves(
        jax.tree.map(lambda p: p.ndim > 1, PARAMS))
    config = ml_collections.ConfigDict({
        "learning_rate": 1.0, "momentum": 0.0, "weight_decay": 0.1, "warmup_steps": 0,
        "lr_power": 0.0, "lr_multipliers": (), "weight_decay_mask": "bn"})
    with pytest.raises(ValueError, match="weight_decay_mask = 'bn'"):
        optim.make_optimizer(config, total_steps=10)


def test_a_plain_dict_with_defaults_equals_the_full_config():
    """Library use: a dict with just a rate (and LRR's multipliers) gives the optimiser the
    training config builds from every field at the documented defaults."""

    rules = optim.lrr_multipliers((0.1,) * 4)
    short = optim.make_optimizer({"learning_rate": 0.2, "lr_multipliers": rules}, 10)
    full = optim.make_optimizer(ml_collections.ConfigDict(
        {**optim.OPTIMIZER_DEFAULTS, "learning_rate": 0.2, "lr_multipliers": rules}), 10)
    params = {"coefficients_res5": PARAMS["coefficients_res5"], "backbone": PARAMS["backbone"]}
    grads = jax.tree.map(jnp.ones_like, params)
    got, _ = short.update(grads, short.init(params), params)
    want, _ = full.update(grads, full.init(params), params)
    jax.tree.map(np.testing.assert_array_equal, got, want)
    # The coefficient convs at 0.1x, their biases at 0.2x (lrr_multipliers' bias rule).
    ratio = got["coefficients_res5"]["conv"]["kernel"] / got["backbone"]["conv"]["kernel"].mean()
    np.testing.assert_allclose(ratio, 0.1, rtol=1e-6)
    with pytest.raises(ValueError, match="no learning_rate"):
        optim.make_optimizer({"momentum": 0.9}, 10)
