"""ImageNet normalisation (lapseg.ops.normalize, re-exported as lapseg.backbones.normalize) in the torchvision and Caffe conventions; numpy in gives numpy out."""

import numpy as np
import pytest

from lapseg import backbones


def test_torch_convention():
    images = np.array([[[[0, 128, 255]]]], np.uint8)
    got = backbones.normalize(images, "torch")
    want = (np.array([0, 128, 255]) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(got[0, 0, 0], want, rtol=1e-6)


def test_caffe_convention_is_bgr_minus_mean():
    images = np.array([[[[10.0, 20.0, 30.0]]]])
    got = backbones.normalize(images, "caffe")
    np.testing.assert_allclose(got[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)


def test_uint8_and_float_agree():
    images = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    for convention in ("torch", "caffe"):
        np.testing.assert_array_equal(
            backbones.normalize(images, convention),
            backbones.normalize(images.astype(np.float32), convention),
        )


@pytest.mark.parametrize("images, convention, match", [
    (np.zeros((4, 4, 3)), "tf", "convention"),
    (np.zeros((4, 4, 4)), "torch", r"\[\.\.\., H, W, 3\]"),
])  # fmt: skip
def test_bad_input_raises(images, convention, match):
    with pytest.raises(ValueError, match=match):
        backbones.normalize(images, convention)


def test_numpy_stays_numpy_and_jax_stays_jax():
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    images = np.random.default_rng(1).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    host = backbones.normalize(images, "torch")
    device = backbones.normalize(jnp.asarray(images), "torch")
    assert isinstance(host, np.ndarray) and not isinstance(device, np.ndarray)
    np.testing.assert_allclose(host, np.asarray(device), atol=1e-5)
