"""Folding eval-mode BatchNorm into the conv before it (`lapseg.layers.fold`,
`lapseg.ops.fold`): the folded model's outputs equal the unfolded one's for every
registered model (its `tiny` arguments, as tests/test_models.py) and every backbone family.

Freshly initialised BatchNorm is the identity, and FCN's classifiers start at zero, which
would let a wrong fold pass: the variables are first given random running statistics,
scales and offsets, and zero parameters random values. Some channels get variances far
below 1 (as dead channels of a trained net) with scales that keep the activations near
1, so that the BatchNorm's epsilon matters: `test_the_parity_test_can_fail` drops it.
"""

import copy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from lapseg import backbones, models
from lapseg.layers import fold
from lapseg.layers.conv import ConvBN
from lapseg.ops import fold as fold_ops

SIZE = (2, 65, 97, 3)  # odd sizes
NUM_CLASSES = 5
TOLERANCE = 1e-4  # of the largest |output| (at least 1): f32 rounding through ~50 layers
EPSILON = 1e-5


def perturbed(variables, seed=0):
    """`variables` with random BatchNorm statistics, scales and offsets, and zero params
    made random: every fold term matters (see the module docstring)."""
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(variables)
    variances = {}
    out = {}
    for path, value in flat.items():
        value = np.asarray(value)
        if path[0] == "batch_stats" and path[-1] == "var":
            value = 10.0 ** rng.uniform(-5.5, 0.5, value.shape)  # down to a third of eps
            variances[path[1:-1]] = value
        elif path[0] == "batch_stats" and path[-1] == "mean":
            value = rng.normal(0.0, 0.3, value.shape)
        elif path[0] == "params" and not value.any():
            value = rng.normal(0.0, 0.05, value.shape)
        out[path] = value
    for module, var in variances.items():  # scale ~ sqrt(var + eps): activations near 1
        if ("params", *module, "scale") in out:
            out[("params", *module, "scale")] = rng.uniform(0.5, 1.5, var.shape) * np.sqrt(
                var + EPSILON)
        if ("params", *module, "bias") in out:
            out[("params", *module, "bias")] = rng.normal(0.0, 0.2, var.shape)
    return traverse_util.unflatten_dict(
        {path: jnp.asarray(value, jnp.float32) for path, value in out.items()})


def _outputs(model, variables, images):
    out = model.apply(variables, images, train=False)
    return {k: np.asarray(v) for k, v in (out.items() if isinstance(out, dict) else [("", out)])}


def _max_error(model, images, variables=None):
    """`(max |folded - unfolded| / max(1, max |unfolded|) over the outputs, folded
    variables)` for `model` with perturbed variables."""
    if variables is None:
        variables = perturbed(model.init(jax.random.key(0), images, train=False))
    folded_model, folded = fold.fold_batch_norm(model, variables, image_shape=images.shape)
    want, got = _outputs(model, variables, images), _outputs(folded_model, folded, images)
    assert set(got) == set(want)
    error = max(np.abs(got[k] - want[k]).max() / max(1.0, np.abs(want[k]).max()) for k in want)
    return error, folded


def _images():
    return jax.random.normal(jax.random.key(1), SIZE)


@pytest.mark.parametrize("name", models.names())
def test_every_registered_model_folds_to_the_same_outputs(name):
    model = models.create_model(name, num_classes=NUM_CLASSES,
                                **copy.deepcopy(models.describe(name).tiny))
    error, folded = _max_error(model, _images())
    assert error < TOLERANCE, (name, error)
    assert "batch_stats" not in folded  # every BatchNorm of every model folds
    assert not any(part.startswith("bn") for path in traverse_util.flatten_dict(folded["params"])
                   for part in path), name


BACKBONES = [
    ("resnet18", {"width": 0.125}),
    ("resnet50", {"width": 0.125}),
    ("resnet50", {"width": 0.125, "deep_stem": True, "output_stride": 8}),
    ("resnet101", {"width": 0.0625, "output_stride": 16, "multi_grid": (1, 2, 4)}),
    ("vgg16", {"width": 0.125}),
]


@pytest.mark.parametrize("name,kwargs", BACKBONES, ids=[f"{n}-{i}" for i, (n, _) in
                                                         enumerate(BACKBONES)])
def test_every_backbone_family_folds_to_the_same_features(name, kwargs):
    model = backbones.build(name, kwargs)
    error, folded = _max_error(model, _images())
    assert error < TOLERANCE, (name, kwargs, error)
    assert "batch_stats" not in folded


def test_the_parity_test_can_fail(monkeypatch):
    """The same check with the epsilon dropped from the fold (or the statistics of a fresh
    init) fails: the perturbed variables make each term of the fold matter."""
    model = backbones.build("resnet18", {"width": 0.125})
    images = _images()
    fold_into_kernel = fold_ops.fold_into_kernel
    monkeypatch.setattr(fold_ops, "fold_into_kernel",
                        lambda *args, epsilon, **kwargs: fold_into_kernel(*args, epsilon=0.0,
                                                                          **kwargs))
    assert _max_error(model, images)[0] > 100 * TOLERANCE


def test_fold_into_kernel_is_the_formula():
    rng = np.random.default_rng(3)
    kernel, bias = rng.normal(size=(3, 3, 4, 6)), rng.normal(size=6)
    mean, var = rng.normal(size=6), rng.uniform(0.1, 2, 6)
    scale, offset = rng.normal(size=6), rng.normal(size=6)
    got_kernel, got_bias = fold_ops.fold_into_kernel(
        jnp.asarray(kernel, jnp.float32), jnp.asarray(bias, jnp.float32), mean=mean, var=var,
        epsilon=1e-3, scale=scale, offset=offset)
    factor = scale / np.sqrt(var + 1e-3)
    np.testing.assert_allclose(got_kernel, kernel * factor, rtol=1e-5)
    np.testing.assert_allclose(got_bias, (bias - mean) * factor + offset, rtol=1e-5, atol=1e-6)
    _, no_bias = fold_ops.fold_into_kernel(jnp.asarray(kernel, jnp.float32), None, mean=mean,
                                           var=var, epsilon=1e-3)
    np.testing.assert_allclose(no_bias, -mean / np.sqrt(var + 1e-3), rtol=1e-5)
    with pytest.raises(ValueError, match=r"mean must be \[6\]"):
        fold_ops.fold_into_kernel(jnp.zeros((1, 1, 4, 6)), None, mean=np.zeros(5), var=var,
                                  epsilon=1e-5)


def test_each_batch_norm_folds_with_its_own_epsilon():
    model = ConvBN(6, 3, bn_epsilon=0.5, use_bias=True)
    images = _images()[..., :3]
    error, folded = _max_error(model, images)
    assert error < TOLERANCE
    assert set(folded["params"]["conv"]) == {"kernel", "bias"} and set(folded) == {"params"}


class _LooseBatchNorm(nn.Module):
    """A BatchNorm after a ReLU, in no module that can fold it: left as it is."""

    @nn.compact
    def __call__(self, x, train):
        x = ConvBN(4, 3)(x, train)
        return nn.BatchNorm(use_running_average=not train, name="loose")(nn.relu(x))


def test_a_batch_norm_that_cannot_fold_is_kept():
    model = _LooseBatchNorm()
    error, folded = _max_error(model, _images())
    assert error < TOLERANCE
    assert set(folded["batch_stats"]) == {"loose"}
    assert set(folded["params"]) == {"ConvBN_0", "loose"}


def test_a_folded_model_does_not_train():
    model = models.create_model("fcn32s", num_classes=3, **models.describe("fcn32s").tiny)
    images = _images()
    folded_model, folded = fold.fold_batch_norm(
        model, model.init(jax.random.key(0), images, train=False), image_shape=images.shape)
    with pytest.raises(ValueError, match="for inference only"):
        folded_model.apply(folded, images, train=True, mutable=["batch_stats"])


def test_missing_statistics_and_bad_shapes_are_one_line_errors():
    model = backbones.build("resnet18", {"width": 0.125})
    images = _images()
    variables = model.init(jax.random.key(0), images, train=False)
    with pytest.raises(ValueError, match="image_shape must be"):
        fold.fold_batch_norm(model, variables, image_shape=(65, 97, 3))
    with pytest.raises(ValueError, match="lack batch_stats/conv1/bn/mean"):
        fold.fold_batch_norm(model, {"params": variables["params"]})
