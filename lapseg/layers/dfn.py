"""DFN's two blocks (Yu et al., "Learning a Discriminative Feature Network", CVPR 2018, Sec. 3.1-3.2).

As the authors' code defines them, ycszen/TorchSeg `furnace/seg_opr/seg_oprs.py`:

- `RefinementResidual` (RRB, the paper's Fig. 2(b); `RefineResidual`):
  `x = conv1x1(x)`, `t = conv_k(relu(bn(conv_k(x))))`, out `relu(x + t)` (or `x + t` with
  `activation=False`, as the heads' RRBs). Every conv is bias-free (`has_bias=False` in every
  DFN call). Submodules: `conv_1x1` (`Conv`), `cbr` (`ConvBN`: `conv`, `bn`), `conv_refine`
  (`Conv`), the reference's names.
- `ChannelAttention` (CAB, Fig. 2(c); `ChannelAttention` over `SELayer`): the low (finer)
  and high (coarser, upsampled) maps are concatenated, average-pooled to one vector,
  `a = sigmoid(fc2(relu(fc1(v))))`, and the output is `low * a + high`. `fc1`: 2C -> C /
  `reduction`, `fc2`: -> C, both with biases (`nn.Linear`); DFN uses `reduction=1`.

Initialisation, from TorchSeg `model/dfn/*/train.py`: `init_weight(..., kaiming_normal_,
mode='fan_in', nonlinearity='relu')` on every conv of the decoder (`KAIMING_FAN_IN`), BN
scale 1 and offset 0 (`furnace/utils/init_func.py`); the FC layers are not touched there, so
they keep PyTorch's `nn.Linear` default, `kaiming_uniform_(a=sqrt(5))` = `TORCH_LINEAR`
(deviation: their biases start at 0 here, uniform(+-1/sqrt(fan_in)) in PyTorch; a bias
initialisation has no lasting effect once trained).
"""

import flax.linen as nn
import jax.numpy as jnp

from lapseg.layers.conv import Conv, ConvBN

KAIMING_FAN_IN = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
TORCH_LINEAR = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class RefinementResidual(nn.Module):
    """RRB: `[N, H, W, C_in] -> [N, H, W, features]`.

    Attributes:
      features: output channels (also the width of the residual branch).
      kernel_size: k of the two convs of the residual branch (3 in DFN).
      activation: the final ReLU (off in DFN's heads: `has_relu=False`).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    features: int
    kernel_size: int = 3
    activation: bool = True
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """`x`: `[N, H, W, C_in]`; `train`: batch-statistics BN (mutable 'batch_stats')."""
        k, kw = self.kernel_size, dict(dtype=self.dtype, param_dtype=self.param_dtype)
        pad = ((k // 2, k // 2),) * 2
        x = Conv(self.features, (1, 1), use_bias=False, kernel_init=KAIMING_FAN_IN,
                 name="conv_1x1", **kw)(x)
        t = ConvBN(self.features, k, kernel_init=KAIMING_FAN_IN, name="cbr", **kw)(x, train)
        t = Conv(self.features, (k, k), padding=pad, use_bias=False, kernel_init=KAIMING_FAN_IN,
                 name="conv_refine", **kw)(t)
        return nn.relu(x + t) if self.activation else x + t


class ChannelAttention(nn.Module):
    """CAB: `low` `[N, H, W, C]`, `high` `[N, H, W, C]` -> `low * a + high`, `a` `[N, 1, 1, C]`.

    Attributes:
      reduction: `fc1` has `C // reduction` units (1 in DFN).
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    reduction: int = 1
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, low: jnp.ndarray, high: jnp.ndarray) -> jnp.ndarray:
        if low.shape != high.shape:
            raise ValueError(f"ChannelAttention needs low and high of one shape, got "
                             f"{low.shape} and {high.shape}")
        channels, kw = low.shape[-1], dict(dtype=self.dtype, param_dtype=self.param_dtype)
        v = jnp.concatenate([low, high], axis=-1).mean(axis=(1, 2), keepdims=True)
        v = nn.relu(nn.Dense(channels // self.reduction, kernel_init=TORCH_LINEAR, name="fc1",
                             **kw)(v))
        a = nn.sigmoid(nn.Dense(channels, kernel_init=TORCH_LINEAR, name="fc2", **kw)(v))
        return low * a + high
