"""Convolution + BatchNorm + ReLU, the unit every backbone and decoder is built from.

`ConvBN` follows PyTorch's conventions so that PyTorch weights and PyTorch output
sizes carry over exactly:

- padding is explicit and symmetric, `dilation * (k - 1) // 2` per side by default
  (PyTorch's `padding=` argument), never XLA's "SAME", which pads asymmetrically for
  stride 2 and so shifts the sampling grid by one pixel against PyTorch/Caffe. The
  output size is `floor((H + 2p - dilation * (k - 1) - 1) / stride) + 1`, i.e.
  `ceil(H / stride)` with the default padding;
- BatchNorm uses PyTorch's defaults, `eps = 1e-5` and `momentum = 0.1`, where
  PyTorch's momentum is the weight of the *new* batch statistic (flax's `momentum`
  is the weight of the old running value, so flax gets `1 - bn_momentum`). Flax
  updates the running variance with the biased batch variance; PyTorch uses the
  unbiased one (factor `n / (n - 1)`, negligible for the batch x pixel counts of
  segmentation). Batch statistics are reduced in float32 whatever the compute
  dtype (flax's `force_float32_reductions`, on by default).

Submodules are named `conv` (params `kernel` [kh, kw, in, out] (HWIO), `bias`) and
`bn` (params `scale`, `bias`; batch_stats `mean`, `var`); weight import relies on it.
"""

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

IntPair = int | tuple[int, int]

# torchvision's conv initialisation: kaiming_normal_(mode='fan_out', nonlinearity='relu').
KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(not isinstance(v, int) or v < 0 for v in pair):
        raise ValueError(f"{name} must be a non-negative int or a pair of them, got {value!r}")
    return pair


def torch_padding(
    kernel_size: IntPair, dilation: IntPair = 1, padding: IntPair | None = None
) -> tuple[tuple[int, int], tuple[int, int]]:
    """PyTorch-style symmetric padding as `((top, bottom), (left, right))` for `nn.Conv`.

    With `padding=None` it is `dilation * (k - 1) // 2` per side, which keeps the size
    of a stride-1 convolution with odd `k` (and gives `ceil(H / s)` at stride s).
    An explicit `padding` (an int or an (h, w) pair, as in `torch.nn.Conv2d`) is
    returned in the same format.
    """
    kh, kw = _pair(kernel_size, "kernel_size")
    dh, dw = _pair(dilation, "dilation")
    if padding is None:
        ph, pw = dh * (kh - 1) // 2, dw * (kw - 1) // 2
    else:
        ph, pw = _pair(padding, "padding")
    return ((ph, ph), (pw, pw))


class ConvBN(nn.Module):
    """Conv2d -> optional BatchNorm -> optional ReLU, NHWC, PyTorch semantics.

    `[N, H, W, C_in] -> [N, H', W', features]` with
    `H' = floor((H + 2 * pad - dilation * (kh - 1) - 1) / stride) + 1`.

    Attributes:
      features: output channels.
      kernel_size: k or (kh, kw).
      strides: s or (sh, sw).
      dilation: d or (dh, dw) (atrous rate).
      padding: symmetric padding per side as in `torch.nn.Conv2d`; `None` means
        `dilation * (k - 1) // 2`.
      use_bias: add a conv bias (off by default: BatchNorm's bias replaces it).
      use_bn: apply BatchNorm after the conv.
      activation: apply ReLU last.
      bn_momentum: PyTorch-convention momentum (weight of the new batch statistic).
      bn_epsilon: BatchNorm epsilon.
      kernel_init: conv kernel initialiser (torchvision's kaiming fan-out normal).
      dtype: compute dtype (inputs and kernel are cast to it; BN stats stay f32).
      param_dtype: dtype of the parameters.
    """

    features: int
    kernel_size: IntPair = 3
    strides: IntPair = 1
    dilation: IntPair = 1
    padding: IntPair | None = None
    use_bias: bool = False
    use_bn: bool = True
    activation: bool = True
    bn_momentum: float = 0.1
    bn_epsilon: float = 1e-5
    kernel_init: Callable = KAIMING_FAN_OUT
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """`x`: `[N, H, W, C_in]`; `train` uses batch statistics (mutable 'batch_stats')."""
        if x.ndim != 4:
            raise ValueError(f"ConvBN expects NHWC input of rank 4, got shape {x.shape}")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.Conv(
            self.features,
            _pair(self.kernel_size, "kernel_size"),
            strides=_pair(self.strides, "strides"),
            padding=torch_padding(self.kernel_size, self.dilation, self.padding),
            kernel_dilation=_pair(self.dilation, "dilation"),
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            name="conv",
            **dtypes,
        )(x)
        if self.use_bn:
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=1.0 - self.bn_momentum,
                epsilon=self.bn_epsilon,
                name="bn",
                **dtypes,
            )(x)
        if self.activation:
            x = nn.relu(x)
        return x
