"""Comparisons with the PyTorch references (`torch_backbones`) shared by the ResNet and
VGG-16 tests; the references' features are NCHW torch tensors, lapseg's NHWC arrays."""

import jax
import jax.numpy as jnp
import numpy as np


def assert_features_match(got, expected, label: str) -> None:
    """Every reference feature equals `got[name]` within a relative max error of 1e-4."""
    for name, want in expected.items():
        want = want.permute(0, 2, 3, 1).numpy()
        assert got[name].shape == want.shape, name
        error = np.abs(np.asarray(got[name]) - want).max() / np.abs(want).max()
        print(f"{label} {name}: relative max error {error:.1e}")
        assert error <= 1e-4, name


def assert_feature_shapes(model, abstract_variables, expected, size=(361, 481)) -> None:
    """`model`'s features on a `size` image have the shapes of the reference's `expected`
    (computed on 'meta' tensors), without running either."""
    got = jax.eval_shape(
        lambda v: model.apply(v, jnp.zeros((1, *size, 3)), train=False), abstract_variables
    )
    for name, want in expected.items():
        n, c, h, w = want.shape
        assert got[name].shape == (n, h, w, c), name
