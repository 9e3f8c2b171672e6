"""Helpers shared by the decoder tests."""

import contextlib
import importlib.util
import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lapseg import models
from lapseg.backbones import FeatureInfo
from lapseg.layers import ConvBN

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"
# A quarter-width ResNet-18 (16..128 channels): small enough to train for 20 steps in seconds.
TINY = {"backbone": "resnet18", "backbone_kwargs": {"width": 0.25}}
FEATURES = ("stem", "res2", "res3", "res4", "res5")


def load_config(name: str):
    """`configs/<name>.py`'s `get_config()`."""
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def param_count(model, size: int = 64) -> int:
    """Number of trainable parameters (`'params'` only), from `jax.eval_shape` of `init`."""
    zeros = jnp.zeros((1, size, size, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), zeros, train=False))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


def filled_variables(model, shape, seed=0):
    """Random variables of `model.init`'s structure via numpy (random BN statistics, so
    that a skipped or mixed-up BN shows); no compiled init (jitting `init` compiles a random
    kernel per parameter shape: tens of seconds on a loaded 2-core CPU)."""
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        if path[-1].key == "kernel":
            return jnp.asarray(rng.standard_normal(leaf.shape) / math.sqrt(math.prod(leaf.shape[:-1])), leaf.dtype)
        if path[-1].key in ("scale", "var"):
            return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
        return jnp.asarray(0.1 * rng.standard_normal(leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def _outputs(model, shape):
    zeros = jnp.zeros(shape)
    return jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), zeros, train=False)[0])


def output_shapes(model, shape):
    """`{key: shape}` of `model`'s outputs on zeros of `shape`, without running it."""
    return {k: v.shape for k, v in _outputs(model, shape).items()}


def output_shapes_at_stride(name: str, output_stride: int, shape=(1, 45, 61, 3)):
    """`output_shapes` of decoder `name` (3 classes) on a quarter-width ResNet-18 whose
    output stride is `output_stride`."""
    model = models.create_model(name, num_classes=3, backbone="resnet18",
                                backbone_kwargs={"width": 0.25, "output_stride": output_stride})
    return output_shapes(model, shape)


def output_dtypes(model, shape):
    """`{key: dtype}` of `model`'s outputs on zeros of `shape`, without running it."""
    return {k: v.dtype for k, v in _outputs(model, shape).items()}


@contextlib.contextmanager
def rbg_prng():
    """Default PRNG 'rbg' inside the block (restored after).

    On this CPU, eager `model.init` (as `tests.training.loss_curve` runs it) compiles a
    threefry kernel per parameter shape, seconds each; with 'rbg' initialising a small
    decoder is about 3x faster. Only the random draws change.
    """
    previous = jax.config.jax_default_prng_impl
    jax.config.update("jax_default_prng_impl", "rbg")
    try:
        yield
    finally:
        jax.config.update("jax_default_prng_impl", previous)


def blocky_batch(num_classes: int = 4, size: int = 64, block: int = 8, seed: int = 0) -> dict:
    """8 random images whose labels are constant on `block x block` tiles, with image
    colours that depend on the label (learnable) plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, (8, size // block, size // block))
    labels = np.repeat(np.repeat(labels, block, 1), block, 2).astype(np.int32)
    colours = rng.standard_normal((num_classes, 3))
    images = colours[labels] + 0.5 * rng.standard_normal((8, size, size, 3))
    return {"image": images.astype(np.float32), "label": labels}


class TinyBackbone(nn.Module):
    """A five-conv stand-in for a ResNet with the same feature names and strides.

    'stem' (stride 2) and 'res2'..'res5' (4, 8, 16, 32), each one 3x3 ConvBN + ReLU of
    `widths` channels; at `output_stride` 16 or 8 the last stages keep the resolution
    (stride 1), as a dilated ResNet does. It compiles in a fraction of a ResNet-18's time,
    which keeps the 20-step training tests short, and shows that the decoders only rely on
    the feature dict and `feature_info()`.
    """

    output_stride: int = 32
    widths: tuple = (8, 8, 16, 16, 32)

    def _strides(self):
        strides, stride = [], 1
        for _ in FEATURES:
            stride = min(stride * 2, self.output_stride)
            strides.append(stride)
        return strides

    def feature_info(self):
        return {name: FeatureInfo(stride, width)
                for name, stride, width in zip(FEATURES, self._strides(), self.widths)}

    @nn.compact
    def __call__(self, x, train):
        features, stride = {}, 1
        for name, target, width in zip(FEATURES, self._strides(), self.widths):
            x = ConvBN(width, 3, strides=target // stride, name=name)(x, train)
            features[name], stride = x, target
        return features
