"""ImageNet input normalisation in the conventions that pretrained weights expect: the one
implementation, used by the input pipeline (numpy), inference and models' users (jnp).

- 'torch' (torchvision, semseg, most PyTorch ports): RGB scaled to [0, 1], then
  `(x - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)`.
- 'caffe' (Caffe models: FCN's VGG-16, the original PSPNet/ICNet/ResNet releases):
  channels reversed to BGR, kept in [0, 255], minus `(103.939, 116.779, 123.68)` (BGR
  order), no division.
- 'none': RGB scaled to [0, 1].
"""

import jax.numpy as jnp
import numpy as np

TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
CONVENTIONS = ("torch", "caffe", "none")


def check_images(images) -> None:
    """Raises unless `images` is what every model takes: normalised floating `[N, H, W, 3]`.

    Raw integer images (uint8 0-255) would run, silently wrong: the models' weights expect
    `normalize`'s output. Shapes and dtypes only: free under `jit`.
    """
    shape = np.shape(images)
    dtype = images.dtype if hasattr(images, "dtype") else np.asarray(images).dtype
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"models take images [N, H, W, 3], got shape {tuple(shape)}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"models take normalised floating images, got {dtype} ones: normalise "
                        "them first, e.g. lapseg.ops.normalize.normalize(images, 'torch') "
                        "(the convention of config.data.normalize)")


def normalize(images, convention: str = "torch", dtype=np.float32):
    """`[..., H, W, 3]` RGB in [0, 255] (uint8 or float) -> normalised `dtype` array, same shape.

    A numpy input gives a numpy output (the input pipeline stays on the host); anything else
    goes through jnp. With 'caffe' the channel order of the result is BGR.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown normalisation convention {convention!r}; choose from {', '.join(CONVENTIONS)}")
    xp = np if isinstance(images, np.ndarray) else jnp
    images = xp.asarray(images)
    if images.ndim < 1 or images.shape[-1] != 3:
        raise ValueError(f"normalize: expects RGB images [..., H, W, 3], got shape {images.shape}")
    x = images.astype(xp.float32)
    if convention == "torch":
        x = (x / 255.0 - xp.asarray(TORCH_MEAN_RGB, xp.float32)) / xp.asarray(TORCH_STD_RGB, xp.float32)
    elif convention == "caffe":
        x = x[..., ::-1] - xp.asarray(CAFFE_MEAN_BGR, xp.float32)
    else:
        x = x / 255.0
    return x.astype(dtype)
