"""Global Convolutional Network blocks (Peng et al., "Large Kernel Matters", CVPR 2017, Sec. 3).

- `GlobalConvolution` (the paper's GCN module, Fig. 2(b)): two separable large-kernel
  branches, `(k x 1 -> 1 x k)` and `(1 x k -> k x 1)`, summed; no BN and no ReLU inside,
  as the paper prescribes. Padding is the integer `(k - 1) // 2` on the long side of each
  conv (k odd), so the map keeps its size. (A popular PyTorch port computes the padding
  as `(k - 1) / 2`, a float, which newer PyTorch rejects and older silently truncated.)
- `BoundaryRefinement` (BR, Fig. 2(c)): `x + conv3x3(relu(conv3x3(x)))`.

Structure and weights as in the PyTorch ports (ZijunDeng/pytorch-semantic-segmentation
`models/gcn.py`, after ycszen/pytorch-ss `gcn.py`): every conv has a bias and is
initialised with Xavier-uniform, biases zero. Submodule names: `left1` (k x 1),
`left2` (1 x k), `right1` (1 x k), `right2` (k x 1); BR `conv1`, `conv2`.
"""

import flax.linen as nn
import jax.numpy as jnp

from lapseg.layers.conv import Conv

XAVIER = nn.initializers.xavier_uniform()


def _conv(features, kernel, *, dtype, param_dtype, name):
    padding = tuple(((k - 1) // 2,) * 2 for k in kernel)
    return Conv(features, kernel, padding=padding, kernel_init=XAVIER, dtype=dtype,
                param_dtype=param_dtype, name=name)


class GlobalConvolution(nn.Module):
    """GCN module: `[N, H, W, C_in] -> [N, H, W, features]`, `(k x 1)(1 x k) x + (1 x k)(k x 1) x`.

    Attributes:
      features: output channels (the number of classes in the paper).
      kernel_size: k, odd (15 in the paper's final model).
    """

    features: int
    kernel_size: int = 15
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        k = self.kernel_size
        if not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ValueError(f"GlobalConvolution kernel_size must be a positive odd int, got {k!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        k = self.kernel_size
        conv = lambda kernel, name: _conv(self.features, kernel, dtype=self.dtype,  # noqa: E731
                                          param_dtype=self.param_dtype, name=name)
        left = conv((1, k), "left2")(conv((k, 1), "left1")(x))
        right = conv((k, 1), "right2")(conv((1, k), "right1")(x))
        return left + right


class BoundaryRefinement(nn.Module):
    """BR: `[N, H, W, C] -> [N, H, W, C]`, `x + conv2(relu(conv1(x)))` with 3x3 convs."""

    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = _conv(x.shape[-1], (3, 3), name="conv1", **kw)(x)
        y = _conv(x.shape[-1], (3, 3), name="conv2", **kw)(nn.relu(y))
        return x + y
