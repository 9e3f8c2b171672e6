"""Your own backbone (`lapseg.backbones.custom`, docs/backbones.md): a plain flax CNN trains
through `lapseg.create_model`; a backbone that breaks the contract is a one-line error naming
it; `from_callable` wraps a function; `decoder_only` runs a decoder on precomputed features
and gives the full model's outputs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import lapseg
from lapseg import backbones
from lapseg.backbones import FeatureInfo
from lapseg.train import state as state_lib
from lapseg.train import step as step_lib


class PlainCNN(nn.Module):
    """A third-party-style backbone: strided convs, features 'c2'..'c5' at strides 4..32."""

    width: int = 8

    def feature_info(self):
        return {f"c{i}": FeatureInfo(2**i, self.width * i) for i in (2, 3, 4, 5)}

    @nn.compact
    def __call__(self, images, train=False):
        x = nn.relu(nn.Conv(self.width * 2, (4, 4), strides=4)(images))
        features = {"c2": x}
        for i in (3, 4, 5):
            x = nn.relu(nn.Conv(self.width * i, (3, 3), strides=2)(x))
            features[f"c{i}"] = x
        return features


FEATURES = {"lrr": ("c5", "c4", "c3", "c2"), "fcn8s": ("c5", "c4", "c3")}


@pytest.mark.parametrize("name", ["lrr", "fcn8s"])
def test_a_plain_flax_backbone_trains_two_steps(name):
    model = lapseg.create_model(name, backbone=PlainCNN(), num_classes=3, features=FEATURES[name])
    assert type(model.backbone).__name__ == "PlainCNN" and isinstance(model.backbone, PlainCNN)
    loss_fn = lapseg.losses.for_model(name, ml_collections.ConfigDict(), ignore_label=255)
    tx = optax.sgd(0.01, momentum=0.9)
    state = state_lib.create_train_state(
        state_lib.init_variables(model, jax.random.key(0), (8, 64, 64, 3)), tx)
    assert "Conv_0" in state.params["backbone"]  # the CNN's own variable names, under backbone
    mesh = step_lib.make_mesh()
    train_step = step_lib.jit_train_step(mesh, model=model, tx=tx, loss_fn=loss_fn,
                                         ignore_label=255)
    rng = np.random.default_rng(0)
    batch = step_lib.shard_batch({"image": rng.normal(size=(8, 64, 64, 3)).astype(np.float32),
                                  "label": rng.integers(0, 3, (8, 64, 64)).astype(np.int32)}, mesh)
    before = jax.tree.map(np.asarray, state.params["backbone"])
    for step in range(2):
        state, metrics = train_step(state, batch, jax.random.key(step))
        assert np.isfinite(float(metrics["loss"]))
    moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - b).max(), state.params["backbone"],
                         before)
    assert max(jax.tree.leaves(moved)) > 0  # the backbone trains too


class NoInfo(nn.Module):
    @nn.compact
    def __call__(self, images, train=False):
        return {"c5": nn.Conv(4, (1, 1), strides=32)(images)}


class ReturnsTuple(PlainCNN):
    def __call__(self, images, train=False):
        return tuple(super().__call__(images, train).values())


class BadInfo(PlainCNN):
    def feature_info(self):
        return [("c5", 32)]


def _one_line(error, *patterns):
    message = str(error.value)
    assert "\n" not in message and "docs/backbones.md" in message, message
    for pattern in patterns:
        assert pattern in message, message


def test_a_backbone_without_feature_info_is_one_line():
    with pytest.raises(ValueError) as error:
        lapseg.create_model("fcn32s", backbone=NoInfo(), num_classes=3, features=("c5",))
    _one_line(error, "backbone NoInfo has no feature_info()", "from_callable")
    with pytest.raises(ValueError) as error:
        lapseg.create_model("fcn32s", backbone=BadInfo(), num_classes=3, features=("c5",))
    _one_line(error, "backbone BadInfo: feature_info() must return a non-empty dict")


def test_a_backbone_returning_no_dict_is_one_line():
    model = lapseg.create_model("lrr", backbone=ReturnsTuple(), num_classes=3,
                                features=FEATURES["lrr"])
    with pytest.raises(ValueError) as error:
        model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
    _one_line(error, "backbone ReturnsTuple returned a tuple, not a dict of named features")


def _pooled(images, train):
    """A parameter-free 'backbone': average pools of the image at strides 8, 16, 32."""
    del train
    return [nn.avg_pool(images, (s, s), (s, s)) for s in (8, 16, 32)]


def test_from_callable_wraps_a_function():
    net = backbones.from_callable(_pooled, {"p3": FeatureInfo(8, 3), "p4": (16, 3),
                                            "p5": FeatureInfo(32, 3)})
    model = lapseg.create_model("fcn8s", backbone=net, num_classes=4, features=("p5", "p4", "p3"))
    images = jax.random.normal(jax.random.key(1), (2, 64, 96, 3))
    variables = model.init(jax.random.key(0), images, train=False)
    assert "backbone" not in variables["params"]  # a function has no parameters
    assert model.apply(variables, images, train=False)["logits"].shape == (2, 64, 96, 4)
    with pytest.raises(ValueError, match=r"feature_info\(\)\['p4'\] must be FeatureInfo"):
        backbones.from_callable(_pooled, {"p4": (16, 0)})


@pytest.mark.parametrize("name", ["lrr", "fcn8s"])
def test_decoder_only_gives_the_full_models_outputs(name):
    model = lapseg.create_model(name, backbone="resnet18", num_classes=3,
                                backbone_kwargs={"width": 0.125})
    images = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    variables = model.init(jax.random.key(0), images, train=False)
    variables = jax.tree.map(lambda x: x + 0.01, variables)  # non-zero score layers
    want = model.apply(variables, images, train=False)
    features = model.apply(variables, images, False, method=lambda m, x, t: m.backbone(x, t))

    head, placeholder = backbones.decoder_only(model, features, (64, 64))
    assert placeholder.shape == (2, 64, 64, 3)
    got = head.apply(variables, placeholder, train=False)  # the full model's variables
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)
    # The decoder's variables alone: init on the features.
    decoder_variables = head.init(jax.random.key(0), placeholder, train=False)
    assert "backbone" not in decoder_variables["params"]
    assert set(decoder_variables["params"]) == set(variables["params"]) - {"backbone"}


def test_decoder_only_rejects_bad_features():
    model = lapseg.create_model("fcn8s", backbone="resnet18", num_classes=3,
                                backbone_kwargs={"width": 0.125})
    with pytest.raises(ValueError, match="features must be a non-empty dict"):
        backbones.decoder_only(model, [jnp.zeros((1, 2, 2, 8))], (64, 64))
    with pytest.raises(ValueError, match="of one batch size"):
        backbones.decoder_only(model, {"res5": jnp.zeros((1, 2, 2, 8)),
                                       "res4": jnp.zeros((2, 4, 4, 8))}, (64, 64))
