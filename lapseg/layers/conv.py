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

`conv` is a `Conv`: flax's `nn.Conv` (same fields, parameters and initialisers) whose
convolution is `conv_general_dilated`. On the CPU backend it computes some convolutions
that XLA's CPU convolution handles poorly by other means (the same products, summed in
another order: results agree to float32 rounding). Measured on a shared 2-core CPU, f32,
batch 2 (`python -m benchmarks.vs_torch --ablate`, docs/throughput.md):

- 'pointwise': a 1x1 convolution without padding (any stride) is a dot over channels of
  the input subsampled by the stride, `x[:, ::s, ::s] @ kernel[0, 0]` (`pointwise_conv`),
  written on the flattened pixels so that its gradients are 2-D dots too (`_pixels_dot`).
  XLA's convolution op is 2.5-4x slower forward and backward for these shapes;
- 'tap_grad', 'tap_grad_undilated': a stride-1 kxk convolution, dilated or not, keeps
  XLA's forward and input gradient, but its kernel gradient is one dot per kernel tap
  (`tap_grad_conv`, `tap_conv`): for the stride-1 3x3 convs of a dilated ResNet, XLA's
  kernel-gradient convolution takes up to 2.7x the taps' time (rate 4, 512 channels),
  never less (64 channels at 128 x 128: the same);
- 'shift': a stride-1 kxk convolution whose input has `SHIFT_MIN_RATIO` (4) times the
  output's channels or more (PSPNet's 3x3 4096 -> 512 head) is one dot into every tap's
  output followed by a sum of shifted slices (`shift_conv`): forward 1.4x, forward +
  backward 2.1x faster than XLA's convolution for that head.

All are differentiable in either mode (`tap_grad_conv` is a `jax.custom_jvp`), so
forward-over-reverse Hessian-vector products still work. `FAST_PATHS` (the environment
variable `LAPSEG_CONV_FAST_PATHS`, or `fast_paths(...)` while tracing) switches them off.
On GPU and TPU every convolution is XLA's. A model exported for several platforms
(`lapseg.export`) is traced once, with the fast paths of the exporting host's backend:
the same maths on every platform, XLA's own convolutions only where it was not a CPU.
"""

import contextlib
import functools
import os
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

_CHANNELS_LAST = ("NHWC", "HWIO", "NHWC")

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


def _channels_last(dimension_numbers, rank: int) -> bool:
    """Whether `dimension_numbers` are flax's `N...C` / `...IO` ones for a rank-`rank` input."""
    spatial = tuple(range(1, rank - 1))
    lhs_spec = (0, rank - 1) + spatial
    expected = lax.ConvDimensionNumbers(
        lhs_spec, (rank - 1, rank - 2) + tuple(range(rank - 2)), lhs_spec)
    return lax.conv_dimension_numbers((1,) * rank, (1,) * rank, dimension_numbers) == expected


def _subsample(x, window_strides):
    if all(s == 1 for s in window_strides):
        return x
    return x[(slice(None),) + tuple(slice(None, None, s) for s in window_strides) + (slice(None),)]


def _pixels_dot(x, kernel, precision):
    """`[..., I] @ [I, O] -> [..., O]` as a 2-D dot on the flattened pixels `[P, I]`.

    Its autodiff transposes are 2-D dots too; the kernel gradient contracts the pixels, the
    leading axis of both operands, which XLA's CPU dot takes as it is. Written as a dot over
    the unflattened `[N, H, W]` axes, XLA instead transposes an operand for a YNNPACK dot and
    fuses that transpose into the elementwise ops that produce it (BatchNorm, ReLU, the
    residual sums), recomputing them in a cache-hostile order: the kernel gradient of a
    1x1 conv is then 5x slower, and a ResNet-50 train step 1.2-1.3x slower.
    """
    y = lax.dot_general(x.reshape(-1, x.shape[-1]), kernel, (((1,), (0,)), ((), ())),
                        precision=precision)
    return y.reshape(x.shape[:-1] + kernel.shape[-1:])


def pointwise_conv(lhs, rhs, window_strides: Sequence[int], precision=None):
    """1x1 convolution without padding as a dot: `lhs[:, ::s, ::s] @ rhs[0, 0]`, channels last.

    `lhs` `[N, *spatial, I]`, `rhs` `[1, ..., 1, I, O]` -> `[N, *ceil(spatial / s), O]`.
    """
    return _pixels_dot(_subsample(lhs, window_strides), rhs.reshape(rhs.shape[-2:]), precision)


def _xla_conv(lhs, rhs, window_strides, padding, rhs_dilation, precision):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, rhs_dilation=rhs_dilation,
                                    dimension_numbers=_CHANNELS_LAST, precision=precision)


def tap_conv(lhs, rhs, window_strides, padding, rhs_dilation, precision=None):
    """A 2-D convolution as a sum of one `_pixels_dot` per kernel tap, channels last.

    `Y[n, p, q] = sum_{i, j} X_pad[n, s p + d i, s q + d j, :] @ W[i, j]`. Slower than XLA's
    convolution forward; its transpose with respect to the kernel (one dot of a strided
    slice of the padded input with the cotangent per tap) is the fast kernel gradient of a
    conv, see `tap_grad_conv`. `padding`: `((top, bottom), (left, right))`.

    The taps are a `lax.scan` over a rematerialised body, so that a gradient holds one
    slice of the input at a time: unrolled, XLA keeps all kh * kw slices alive (+28% of a
    ResNet-50 OS 8 train step's temporary memory, against +4.5% for the scan).
    """
    (kh, kw), (sh, sw), (dh, dw) = rhs.shape[:2], window_strides, rhs_dilation
    (top, bottom), (left, right) = padding
    x = lax.pad(lhs, jnp.zeros((), lhs.dtype),
                ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))  # negative: a crop
    out_h = (x.shape[1] - dh * (kh - 1) - 1) // sh + 1
    out_w = (x.shape[2] - dw * (kw - 1) - 1) // sw + 1

    window = (x.shape[0], sh * (out_h - 1) + 1, sw * (out_w - 1) + 1, x.shape[3])
    offsets = jnp.asarray([(dh * i, dw * j) for i in range(kh) for j in range(kw)], jnp.int32)

    @jax.checkpoint
    def tap(total, offset_and_kernel):
        (row, col), kernel = offset_and_kernel
        start = (jnp.zeros((), jnp.int32), row, col, jnp.zeros((), jnp.int32))
        patch = lax.dynamic_slice(x, start, window)[:, ::sh, ::sw]
        return total + _pixels_dot(patch, kernel, precision), None

    zero = jnp.zeros((x.shape[0], out_h, out_w, rhs.shape[-1]), jnp.result_type(x, rhs))
    total, _ = lax.scan(tap, zero, (offsets, rhs.reshape((kh * kw,) + rhs.shape[2:])))
    return total


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def tap_grad_conv(lhs, rhs, window_strides, padding, rhs_dilation, precision=None):
    """XLA's 2-D convolution (channels last) with `tap_conv`'s derivative in the kernel.

    The forward and the input derivative (and so the input gradient) are XLA's
    convolutions; the kernel derivative is `tap_conv`, whose transpose makes the kernel
    gradient one dot per tap. Forward + kernel gradient, XLA's convolutions against this
    (2 cores, f32, batch 2): rate 4 at 512 channels and 32 x 32 2.3x the time; undilated
    64 -> 128 channels at 128 x 128 1.6x, 128 channels at 64 x 64 1.5x; 64 channels at
    128 x 128 the same.
    `padding`: `((top, bottom), (left, right))`.
    """
    return _xla_conv(lhs, rhs, window_strides, padding, rhs_dilation, precision)


def _tap_grad_conv_jvp(window_strides, padding, rhs_dilation, precision, primals, tangents):
    lhs, rhs = primals
    lhs_dot, rhs_dot = tangents
    out = _xla_conv(lhs, rhs, window_strides, padding, rhs_dilation, precision)
    out_dot = []
    if not isinstance(lhs_dot, SymbolicZero):
        out_dot.append(_xla_conv(lhs_dot, rhs, window_strides, padding, rhs_dilation, precision))
    if not isinstance(rhs_dot, SymbolicZero):
        out_dot.append(tap_conv(lhs, rhs_dot, window_strides, padding, rhs_dilation, precision))
    return out, sum(out_dot[1:], out_dot[0]) if out_dot else jnp.zeros_like(out)


tap_grad_conv.defjvp(_tap_grad_conv_jvp, symbolic_zeros=True)


def shift_conv(lhs, rhs, padding, rhs_dilation, precision=None):
    """A stride-1 2-D convolution as one dot then a sum of shifted slices, channels last.

    `Z = X @ [W_00 | W_01 | ... ]` (`[N, H, W, kh * kw * O]`, one `_pixels_dot` of the
    input with every tap's kernel side by side), then `Y[n, p, q] = sum_{i, j}
    Z_pad[n, p + d i, q + d j, (i, j)]`. The shifts move `kh * kw * O` channels instead of
    an im2col's `kh * kw * I`, so where the input is much wider than the output (the 3x3
    4096 -> 512 head of PSPNet) the convolution and both its gradients are a single large
    dot each (autodiff transposes the slices into pads) plus cheap elementwise work: for
    that head, 1.4x faster than XLA's CPU convolution forward and 2.1x forward + backward
    (2 cores, batch 2 at 32 x 32). Narrower inputs lose (0.5x at 64 -> 128 channels).
    `padding`: `((top, bottom), (left, right))`, negative entries crop.
    """
    kh, kw, cin, cout = rhs.shape
    dh, dw = rhs_dilation
    (top, bottom), (left, right) = padding
    kernel = jnp.transpose(rhs, (2, 0, 1, 3)).reshape(cin, kh * kw * cout)
    z = _pixels_dot(lhs, kernel, precision).reshape(lhs.shape[:3] + (kh, kw, cout))
    z = lax.pad(z, jnp.zeros((), z.dtype),
                ((0, 0, 0), (top, bottom, 0), (left, right, 0)) + ((0, 0, 0),) * 3)
    out_h, out_w = z.shape[1] - dh * (kh - 1), z.shape[2] - dw * (kw - 1)
    total = None
    for i in range(kh):
        for j in range(kw):
            tap = z[:, dh * i: dh * i + out_h, dw * j: dw * j + out_w, i, j]
            total = tap if total is None else total + tap
    return total


# The fast paths `conv_general_dilated` may take (all by default): 'pointwise' (1x1 convs
# as dots), 'shift' (`shift_conv` for wide-input stride-1 convs), 'tap_grad' (dilated
# stride-1 convs with `tap_grad_conv`), 'tap_grad_undilated' (undilated stride-1 kxk convs
# with it). The environment variable `LAPSEG_CONV_FAST_PATHS` (a comma-separated subset,
# or 'none') sets them at import; `fast_paths(...)` changes them while tracing.
PATHS = ("pointwise", "shift", "tap_grad", "tap_grad_undilated")
# `shift_conv` where the input has at least this many times the output's channels.
SHIFT_MIN_RATIO = 4


def _paths_from_env() -> frozenset:
    value = os.environ.get("LAPSEG_CONV_FAST_PATHS", "all").strip()
    if value == "all":
        return frozenset(PATHS)
    names = frozenset(v.strip() for v in value.split(",") if v.strip() not in ("", "none"))
    if unknown := names - set(PATHS):
        raise ValueError(f"LAPSEG_CONV_FAST_PATHS: unknown paths {sorted(unknown)}; "
                         f"choose from {PATHS}, 'all' or 'none'")
    return names


FAST_PATHS = _paths_from_env()


@contextlib.contextmanager
def fast_paths(*names):
    """Within the block, only the fast paths `names` are taken (none: XLA's convolution
    everywhere). They are read while tracing: jit (or re-jit) inside the block."""
    global FAST_PATHS  # pylint: disable=global-statement
    if unknown := set(names) - set(PATHS):
        raise ValueError(f"unknown fast paths {sorted(unknown)}; choose from {PATHS}")
    saved, FAST_PATHS = FAST_PATHS, frozenset(names)
    try:
        yield
    finally:
        FAST_PATHS = saved


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
    """`lax.conv_general_dilated`, with some channels-last convs computed faster on CPU.

    When the default backend is the CPU (and the path is in `FAST_PATHS`):

    - 'pointwise': `pointwise_conv` for a 1x1 kernel without padding (any stride, any
      number of spatial axes);
    - 'shift': `shift_conv` for a stride-1 2-D kernel larger than 1x1 whose input has
      `SHIFT_MIN_RATIO` times the output's channels or more;
    - 'tap_grad' / 'tap_grad_undilated': `tap_grad_conv` for any other stride-1 2-D kernel
      larger than 1x1, dilated / undilated.

    Anything else (strided kxk convs, other dimension numbers than flax's channels-last
    ones, feature or batch groups, input dilation, a preferred element type, symbolic
    spatial sizes but for stride-1 1x1 convs), and every convolution on GPU or TPU, whose
    convolutions these workarounds were not measured on, goes to `lax.conv_general_dilated`
    unchanged. Same signature.
    """
    rank = lhs.ndim
    spatial = rank - 2
    strides = tuple(window_strides)
    lhs_dilation = tuple(lhs_dilation or (1,) * spatial)
    rhs_dilation = tuple(rhs_dilation or (1,) * spatial)
    kernel = rhs.shape[:spatial]
    plain = (FAST_PATHS and jax.default_backend() == "cpu" and feature_group_count == 1
             and batch_group_count == 1 and preferred_element_type is None
             and all(d == 1 for d in lhs_dilation) and dimension_numbers is not None
             and _channels_last(dimension_numbers, rank))
    if plain:
        if isinstance(padding, str):
            padding = lax.padtype_to_pads(lhs.shape[1:-1], tuple(
                (k - 1) * d + 1 for k, d in zip(kernel, rhs_dilation)), strides, padding)
        padding = tuple(tuple(p) for p in padding)
        # Symbolic sizes (jax.export) of a strided slice do not simplify to the conv's.
        concrete = all(isinstance(size, int) for size in lhs.shape[1:-1])
        pointwise = all(k == 1 for k in kernel)
        if (pointwise and all(p == (0, 0) for p in padding) and "pointwise" in FAST_PATHS
                and (concrete or all(s == 1 for s in strides))):
            return pointwise_conv(lhs, rhs, strides, precision)
        if spatial == 2 and concrete and not pointwise and all(s == 1 for s in strides):
            positive = all(size + lo + hi > d * (k - 1) for size, (lo, hi), d, k in zip(
                lhs.shape[1:3], padding, rhs_dilation, kernel))  # else XLA says why
            if ("shift" in FAST_PATHS and rhs.shape[-2] >= SHIFT_MIN_RATIO * rhs.shape[-1]
                    and positive):
                return shift_conv(lhs, rhs, padding, rhs_dilation, precision)
            dilated = any(d > 1 for d in rhs_dilation)
            if ("tap_grad" if dilated else "tap_grad_undilated") in FAST_PATHS:
                return tap_grad_conv(lhs, rhs, strides, padding, rhs_dilation, precision)
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)


class _FastConvGeneral:
    """`nn.Conv` calls `conv_general_dilated_cls()` for its convolution function."""

    def __call__(self, *args, **kwargs):
        return conv_general_dilated(*args, **kwargs)


class Conv(nn.Conv):
    """`flax.linen.Conv` (same fields, defaults, parameters and initialisers) computed by
    `conv_general_dilated`: 1x1 convolutions as dots, dilated ones with tap kernel gradients.

    A drop-in replacement for `nn.Conv`: the same variables, initialised to the same values
    from the same key, so a checkpoint of one loads into the other.
    """

    conv_general_dilated_cls: Callable = _FastConvGeneral


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
        x = Conv(
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
