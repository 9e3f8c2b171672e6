"""RefineNet's building blocks (Lin et al., CVPR 2017, Sec. 3.2, Fig. 3): RCU, MRF, CRP.

Follows the structure of DrSleep/refinenet-pytorch `utils/layer_factory.py` (a port of
the released MatConvNet models of guosheng/refinenet) and the original
`main/gen_network_pool_block.m` / `gen_network_refine_group.m`:

- `ResidualConvUnit` (RCU): `x + conv2(relu(conv1(relu(x))))`, 3x3 convs, no BN; conv1
  has a bias, conv2 none (`RCUBlock`: `bias=(j == 0)`).
- `MultiResolutionFusion` (MRF): a 3x3 conv (no bias) per input to the smallest input
  width, bilinear (align-corners) upsampling to the largest input, sum. One input passes
  through unchanged (the first RefineNet block has no fusion).
- `ChainedResidualPooling` (CRP): ReLU, then `stages` chained {5x5 stride-1 max-pool,
  3x3 conv (no bias)} whose outputs are summed into a running residual:
  `x = relu(x); t = x; for each stage: t = conv(pool(t)); x = x + t`.
  `order='pool_conv'` is the paper's Fig. 3 and DrSleep's `CRPBlock`; `order='conv_pool'`
  the "improved version" of the original code (`do_gen_block_convbeforepool`). The
  paper's figure draws 2 stages, the released models use 4.

Convolutions are initialised as PyTorch initialises `nn.Conv2d` by default
(kaiming-uniform with a = sqrt(5), i.e. variance 1/(3 fan_in)), which is what the
reference port trains with; biases start at zero.
"""

from typing import Literal

import flax.linen as nn
import jax.numpy as jnp

from lapseg.layers.conv import Conv
from lapseg.ops import resize

# torch.nn.Conv2d's default kernel init, kaiming_uniform_(a=sqrt(5)): U(+-1/sqrt(fan_in)).
TORCH_CONV_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def conv3x3(features: int, *, use_bias: bool, dtype, param_dtype, name: str) -> Conv:
    """3x3 stride-1 conv, padding 1 (PyTorch `padding=1`), PyTorch default init."""
    return Conv(features, (3, 3), padding=((1, 1), (1, 1)), use_bias=use_bias,
                kernel_init=TORCH_CONV_INIT, dtype=dtype, param_dtype=param_dtype, name=name)


class ResidualConvUnit(nn.Module):
    """RCU: `[N, H, W, C] -> [N, H, W, C]`, `x + conv2(relu(conv1(relu(x))))`, C = input width."""

    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        features = x.shape[-1]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = conv3x3(features, use_bias=True, name="conv1", **kw)(nn.relu(x))
        y = conv3x3(features, use_bias=False, name="conv2", **kw)(nn.relu(y))
        return x + y


class MultiResolutionFusion(nn.Module):
    """MRF: inputs `[N, H_i, W_i, C_i]` -> `[N, H_max, W_max, min_i C_i]`.

    `sum_i upsample(conv_i(x_i))` with `conv_i` a 3x3 conv named `conv{i}` and
    align-corners bilinear upsampling to the largest input; a single input is returned
    as is (no parameters).
    """

    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, inputs) -> jnp.ndarray:
        if len(inputs) == 1:
            return inputs[0]
        features = min(x.shape[-1] for x in inputs)
        size = max((x.shape[1:3] for x in inputs), key=lambda hw: hw[0] * hw[1])
        total = None
        for i, x in enumerate(inputs):
            y = conv3x3(features, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                        name=f"conv{i}")(x)
            if y.shape[1:3] != size:
                y = resize.resize_bilinear(y, size, align_corners=True)
            total = y if total is None else total + y
        return total


class ChainedResidualPooling(nn.Module):
    """CRP: `[N, H, W, C] -> [N, H, W, C]` (see the module docstring).

    Attributes:
      stages: number of chained pool + conv stages (4 in the released models).
      order: 'pool_conv' (paper, DrSleep) or 'conv_pool' (original code's improved version).
      pool_size: max-pool window (stride 1, padding `pool_size // 2`).
    """

    stages: int = 4
    order: Literal["pool_conv", "conv_pool"] = "pool_conv"
    pool_size: int = 5
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        if self.order not in ("pool_conv", "conv_pool"):
            raise ValueError("ChainedResidualPooling order must be 'pool_conv' or 'conv_pool', "
                             f"got {self.order!r}")
        if self.stages < 1:
            raise ValueError(f"ChainedResidualPooling needs at least one stage, got {self.stages}")
        if self.pool_size < 1 or self.pool_size % 2 == 0:
            raise ValueError(f"ChainedResidualPooling pool_size must be odd, got {self.pool_size}")
        super().__post_init__()

    def _pool(self, x):
        pad = self.pool_size // 2
        return nn.max_pool(x, (self.pool_size,) * 2, strides=(1, 1),
                           padding=((pad, pad), (pad, pad)))

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = nn.relu(x)
        top = x
        for i in range(self.stages):
            conv = conv3x3(x.shape[-1], use_bias=False, dtype=self.dtype,
                           param_dtype=self.param_dtype, name=f"conv{i}")
            if self.order == "pool_conv":
                top = conv(self._pool(top))
            else:
                top = self._pool(conv(top))
            x = x + top
        return x
