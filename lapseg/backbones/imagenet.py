"""ImageNet input normalisation in the two conventions that pretrained weights expect.

- 'torch' (torchvision, semseg, most PyTorch ports): RGB scaled to [0, 1], then
  `(x - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)`.
- 'caffe' (Caffe models: FCN's VGG-16, the original PSPNet/ICNet/ResNet releases):
  channels reversed to BGR, kept in [0, 255], minus `(103.939, 116.779, 123.68)`
  (BGR order), no division.
"""

import jax.numpy as jnp

TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
CONVENTIONS = ("torch", "caffe")


def normalize(images, convention: str = "torch", dtype=jnp.float32) -> jnp.ndarray:
    """`[..., H, W, 3]` RGB in [0, 255] (uint8 or float) -> normalised `dtype` array, same shape.

    With 'caffe' the channel order of the result is BGR.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"normalize: convention must be one of {CONVENTIONS}, got {convention!r}")
    images = jnp.asarray(images)
    if images.ndim < 3 or images.shape[-1] != 3:
        raise ValueError(f"normalize: expects RGB images [..., H, W, 3], got shape {images.shape}")
    x = images.astype(jnp.float32)
    if convention == "torch":
        x = (x / 255.0 - jnp.asarray(TORCH_MEAN_RGB)) / jnp.asarray(TORCH_STD_RGB)
    else:
        x = x[..., ::-1] - jnp.asarray(CAFFE_MEAN_BGR)
    return x.astype(dtype)
