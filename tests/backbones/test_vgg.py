"""VGG-16: parity with a torchvision-layout PyTorch reference (FCN pooling), sizes, counts."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lapseg import backbones
from lapseg.backbones.vgg import max_pool_ceil

from backbone_utils import assert_feature_shapes, assert_features_match  # tests/backbones/

TORCHVISION_VGG16_PARAMS = 138_357_544  # classifier.6 (4096 -> 1000) included
NAMES = ["relu1_2", "relu2_2", "relu3_3", "pool3", "relu4_3", "pool4", "relu5_3", "pool5", "fc7"]


def abstract_variables(model, shape=(1, 32, 32, 3)):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


def test_param_count_equals_torchvision():
    params = abstract_variables(backbones.create("vgg16"))["params"]
    total = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)) + 4096 * 1000 + 1000
    print(f"vgg16: {total:,} parameters with classifier.6 (torchvision: 138,357,544)")
    assert total == TORCHVISION_VGG16_PARAMS


@pytest.mark.parametrize("pad100", [False, True])
@pytest.mark.parametrize("width", [1.0, 0.25])
def test_feature_info_describes_outputs(pad100, width):
    model = backbones.create("vgg16", pad100=pad100, width=width)
    height, wide = 361, 481
    out = jax.eval_shape(
        lambda v: model.apply(v, jnp.zeros((1, height, wide, 3)), train=False),
        abstract_variables(model),
    )
    info = model.feature_info()
    assert list(info) == NAMES
    padded = (height + 198, wide + 198) if pad100 else (height, wide)  # module docstring formula
    for name, (stride, channels) in info.items():
        h, w = (math.ceil(size / stride) for size in padded)
        if name == "fc7" and pad100:
            h, w = h - 6, w - 6
        assert out[name].shape == (1, h, w, channels), name


def test_max_pool_ceil_keeps_the_last_odd_row_and_column():
    x = jnp.arange(15.0).reshape(1, 3, 5, 1)
    np.testing.assert_array_equal(max_pool_ceil(x)[0, :, :, 0], [[6, 8, 9], [11, 13, 14]])


def test_dropout_only_in_training(random_variables):
    model = backbones.create("vgg16", width=1 / 8)
    images = jax.random.normal(jax.random.key(2), (1, 32, 32, 3))
    variables = random_variables(model, images.shape)
    evaluated = [model.apply(variables, images, train=False) for _ in range(2)]
    np.testing.assert_array_equal(evaluated[0]["fc7"], evaluated[1]["fc7"])
    trained = model.apply(variables, images, train=True, rngs={"dropout": jax.random.key(1)})
    assert jnp.any(trained["fc7"] != evaluated[0]["fc7"])
    np.testing.assert_array_equal(trained["pool5"], evaluated[0]["pool5"])


@pytest.fixture(scope="module")
def torch_vgg16():
    """One random reference VGG-16 and its converted variables (shared by both paddings)."""
    pytest.importorskip("torch")
    from torch_backbones import VGG16, randomize_, state_dict_numpy

    reference = randomize_(VGG16())
    abstract = abstract_variables(backbones.create("vgg16"))  # shapes independent of padding
    return reference, backbones.load_torch_weights(abstract, state_dict_numpy(reference), "vgg16")


# Odd sizes (ceil-mode pooling at several levels). Without pad100 pool5 is kept at 1 x 2:
# XLA:CPU runs the padded 7x7x512x4096 fc6 conv in seconds once pool5 reaches 3 x 4.
@pytest.mark.parametrize("pad100, size", [(True, (33, 47)), (False, (31, 47))])
def test_matches_torch_reference(torch_vgg16, pad100, size):
    """Random weights in torchvision's layout, classifier Linear layers as fc6/fc7 convs."""
    import torch

    reference, variables = torch_vgg16
    reference.pad100 = pad100
    reference.features[0].padding = (100, 100) if pad100 else (1, 1)
    images = np.random.RandomState(0).randn(1, *size, 3).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(images).permute(0, 3, 1, 2))

    model = backbones.create("vgg16", pad100=pad100)
    got = model.apply(variables, jnp.asarray(images), train=False)
    assert list(got) == list(expected) == NAMES
    assert_features_match(got, expected, f"vgg16 pad100={pad100}")


@pytest.mark.parametrize("pad100", [False, True])
def test_odd_input_sizes_match_torch(pad100):
    torch = pytest.importorskip("torch")
    from torch_backbones import VGG16

    with torch.device("meta"):
        expected = VGG16(pad100=pad100)(torch.empty(1, 3, 361, 481))
    model = backbones.create("vgg16", pad100=pad100)
    assert_feature_shapes(model, abstract_variables(model), expected, (361, 481))
