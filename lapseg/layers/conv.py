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
With `fold_bn` (inference only, `lapseg.layers.fold`) the BatchNorm is folded into `conv`,
which then has a `bias`, and there is no `bn`.

`conv` is a `Conv`: flax's `nn.Conv` (same fields, parameters and initialisers) whose
convolution is `conv_general_dilated`. Every convolution of lapseg's layers, backbones and
decoders, transposed ones aside, is a `Conv` (`tests/layers/test_conv_fast_paths.py` checks
that no other module of lapseg uses `nn.Conv`).

Where the computation runs on a CPU, `conv_general_dilated` computes some convolutions that
XLA's CPU convolution handles poorly by other formulations of the same products, summed in
another order (results agree to float32 rounding). What each gains is measured in
`docs/throughput.md` (`python -m benchmarks.vs_torch --ablate`):

- 'pointwise': a 1x1 convolution without padding (any stride) is a dot over channels of
  the input subsampled by the stride, `x[:, ::s, ::s] @ kernel[0, 0]` (`pointwise_conv`),
  written on the flattened pixels so that its gradients are 2-D dots too (`_pixels_dot`);
  XLA's CPU convolution op is slower than its dot for these shapes, forward and backward;
- 'tap_grad', 'tap_grad_undilated': a stride-1 kxk convolution, dilated or not, keeps
  XLA's forward and input gradient, but its kernel gradient is one dot per kernel tap
  (`tap_grad_conv`, `tap_conv`), which XLA's CPU kernel-gradient convolution is slower
  than for the stride-1 3x3 convs of a dilated ResNet;
- 'shift': a stride-1 kxk convolution whose input has `SHIFT_MIN_RATIO` times the output's
  channels or more (PSPNet's 3x3 4096 -> 512 head) is one dot into every tap's output
  followed by a sum of shifted slices (`shift_conv`), so that it and both its gradients
  are single large dots.

All are differentiable in either mode (`tap_grad_conv` is a `jax.custom_jvp`), so
forward-over-reverse Hessian-vector products still work.

Which paths a `Conv` may take is its attribute `fast_paths` (`FastPathsSetting`): True for
every path of `PATHS`, False for none (XLA's convolution everywhere), or a tuple of path
names. The default, None, defers to the nearest enclosing module whose `fast_paths` is not
None, and means every path where there is none: `ConvBN` passes its own down, and
`WithFastPaths(model, fast_paths=...)` sets it for every convolution of a model without
changing its variables. Being a module attribute, the setting is part of the traced
program: a model with another setting traces, and jit compiles, another program.

The choice between the CPU formulation and XLA's convolution is not made in Python: each
convolution that has a fast path is `lax.platform_dependent(cpu=<fast path>,
default=<XLA's convolution>)`, resolved when the program is lowered for the platform it
runs on. A program lowered for the CPU holds only the fast path, one lowered for a GPU or
TPU (whose convolutions these formulations were not measured on) only XLA's convolution,
whatever `jax.default_backend()` is; a model exported for several platforms
(`lapseg.export`) carries both and picks when it is compiled.
"""

import dataclasses
import functools
from collections.abc import Callable, Iterable, Sequence

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
    residual sums), recomputing them in a cache-hostile order, which makes the kernel
    gradient and a ResNet train step markedly slower (docs/throughput.md).
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
    slice of the input at a time: unrolled, XLA keeps all kh * kw slices alive, which adds
    a sizeable fraction to a ResNet train step's temporary memory.
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
    gradient one dot per tap, which is faster on CPU than XLA's kernel-gradient convolution
    for stride-1 convolutions with many channels, dilated ones most (docs/throughput.md).
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
    dot each (autodiff transposes the slices into pads) plus cheap elementwise work, faster
    on CPU than XLA's convolution; narrower inputs lose (docs/throughput.md).
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


# The fast paths `conv_general_dilated` may take: 'pointwise' (1x1 convs as dots), 'shift'
# (`shift_conv` for wide-input stride-1 convs), 'tap_grad' (dilated stride-1 convs with
# `tap_grad_conv`), 'tap_grad_undilated' (undilated stride-1 kxk convs with it).
PATHS = ("pointwise", "shift", "tap_grad", "tap_grad_undilated")
# `shift_conv` where the input has at least this many times the output's channels.
SHIFT_MIN_RATIO = 4

# A fast-path setting: True (every path of `PATHS`), False (none), or the names of some.
# `Conv` and `ConvBN` also take None: their nearest enclosing module's setting.
FastPathsSetting = bool | tuple[str, ...] | None


def resolve_fast_paths(setting: bool | Iterable[str] | None) -> frozenset[str]:
    """The paths a setting allows: True or None every path of `PATHS`, False none, an
    iterable of names those (a ValueError names any that is not in `PATHS`)."""
    if setting is None or setting is True:
        return frozenset(PATHS)
    if setting is False:
        return frozenset()
    if isinstance(setting, str) or not isinstance(setting, Iterable):
        raise ValueError(f"fast_paths must be True, False or a tuple of names from {PATHS}, "
                         f"got {setting!r}")
    names = frozenset(setting)
    if unknown := names - set(PATHS):
        raise ValueError(f"unknown fast paths {sorted(unknown)}; choose from {PATHS}")
    return names


def _takes_fast_paths(lhs, dimension_numbers, lhs_dilation, feature_group_count,
                      batch_group_count, preferred_element_type) -> bool:
    """Whether a convolution is of the kind the fast paths compute: channels last (flax's
    dimension numbers), no groups, no input dilation, no preferred element type."""
    return (feature_group_count == 1 and batch_group_count == 1
            and preferred_element_type is None and all(d == 1 for d in lhs_dilation)
            and dimension_numbers is not None and _channels_last(dimension_numbers, lhs.ndim))


def _fast_path(lhs, rhs, strides, padding, rhs_dilation, precision, paths):
    """The CPU formulation of a channels-last convolution as a function of `(lhs, rhs)`, or
    None where no path of `paths` applies (see `conv_general_dilated`)."""
    spatial = lhs.ndim - 2
    kernel = rhs.shape[:spatial]
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:-1], tuple(
            (k - 1) * d + 1 for k, d in zip(kernel, rhs_dilation)), strides, padding)
    padding = tuple(tuple(p) for p in padding)
    # Symbolic sizes (jax.export) of a strided slice do not simplify to the conv's, and
    # both branches of `lax.platform_dependent` must have the same output shape.
    concrete = all(isinstance(size, int) for size in lhs.shape[1:-1])
    pointwise = all(k == 1 for k in kernel)
    if (pointwise and all(p == (0, 0) for p in padding) and "pointwise" in paths
            and (concrete or all(s == 1 for s in strides))):
        return lambda lhs, rhs: pointwise_conv(lhs, rhs, strides, precision)
    if spatial != 2 or not concrete or pointwise or any(s != 1 for s in strides):
        return None
    positive = all(size + lo + hi > d * (k - 1) for size, (lo, hi), d, k in zip(
        lhs.shape[1:3], padding, rhs_dilation, kernel))  # else XLA's convolution says why
    if "shift" in paths and rhs.shape[-2] >= SHIFT_MIN_RATIO * rhs.shape[-1] and positive:
        return lambda lhs, rhs: shift_conv(lhs, rhs, padding, rhs_dilation, precision)
    dilated = any(d > 1 for d in rhs_dilation)
    if ("tap_grad" if dilated else "tap_grad_undilated") in paths:
        return lambda lhs, rhs: tap_grad_conv(lhs, rhs, strides, padding, rhs_dilation,
                                              precision)
    return None


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None, *,
                         fast_paths: bool | Iterable[str] = True):
    """`lax.conv_general_dilated` (same arguments), computed on CPU by a fast path where one
    of `fast_paths` (`resolve_fast_paths`) applies:

    - 'pointwise': `pointwise_conv` for a 1x1 kernel without padding (any stride, any
      number of spatial axes);
    - 'shift': `shift_conv` for a stride-1 2-D kernel larger than 1x1 whose input has
      `SHIFT_MIN_RATIO` times the output's channels or more;
    - 'tap_grad' / 'tap_grad_undilated': `tap_grad_conv` for any other stride-1 2-D kernel
      larger than 1x1, dilated / undilated.

    Such a convolution is `lax.platform_dependent(lhs, rhs, cpu=<fast path>,
    default=<lax.conv_general_dilated>)`: the platform the program is lowered for decides,
    so the same traced program runs the fast path on CPU and XLA's convolution on GPU and
    TPU. Anything else (strided kxk convs, other dimension numbers than flax's channels-last
    ones, feature or batch groups, input dilation, a preferred element type, symbolic
    spatial sizes but for stride-1 1x1 convs) is `lax.conv_general_dilated` on every
    platform.
    """
    spatial = lhs.ndim - 2
    lhs_dilation = tuple(lhs_dilation or (1,) * spatial)
    rhs_dilation = tuple(rhs_dilation or (1,) * spatial)
    xla = functools.partial(
        lax.conv_general_dilated, window_strides=window_strides, padding=padding,
        lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
    paths = resolve_fast_paths(fast_paths)
    fast = None
    if paths and _takes_fast_paths(lhs, dimension_numbers, lhs_dilation, feature_group_count,
                                   batch_group_count, preferred_element_type):
        fast = _fast_path(lhs, rhs, tuple(window_strides), padding, rhs_dilation, precision,
                          paths)
    if fast is None:
        return xla(lhs, rhs)
    return lax.platform_dependent(lhs, rhs, cpu=fast, default=xla)


@dataclasses.dataclass(frozen=True)
class _Convolution:
    """`conv_general_dilated` with one set of fast paths: the convolution function a `Conv`
    hands to `nn.Conv` (a value, so that equal settings give equal modules)."""

    fast_paths: frozenset

    def __call__(self, *args, **kwargs):
        return conv_general_dilated(*args, fast_paths=self.fast_paths, **kwargs)


def enclosing_setting(module: nn.Module, name: str):
    """`module`'s attribute `name` if it has one that is not None, else the nearest
    enclosing module's (up the `parent` chain), else None: how `Conv.fast_paths` and
    `ConvBN.fold_bn` defer to a wrapper (`WithFastPaths`, `lapseg.layers.fold`)."""
    while isinstance(module, nn.Module):
        setting = getattr(module, name, None)
        if setting is not None:
            return setting
        module = module.parent
    return None


def enclosing_fast_paths(module: nn.Module) -> frozenset[str]:
    """The paths `module` may take: its own `fast_paths` if it has one that is not None,
    else the nearest enclosing module's, else every path."""
    return resolve_fast_paths(enclosing_setting(module, "fast_paths"))


class Conv(nn.Conv):
    """`flax.linen.Conv` (same fields, defaults, parameters and initialisers) computed by
    `conv_general_dilated`: on CPU, 1x1 convolutions as dots, stride-1 ones with tap kernel
    gradients or shifted dots (the module docstring says which and why).

    A drop-in replacement for `nn.Conv`: the same variables, initialised to the same values
    from the same key, so a checkpoint of one loads into the other.

    Attributes:
      fast_paths: the paths it may take (`FastPathsSetting`); None (the default): those of
        the nearest enclosing module with a `fast_paths` that is not None, or every path.
        Read when the module is built, it is part of the module's value and so of the
        traced program. (`conv_general_dilated` and `conv_general_dilated_cls` are set
        from it; passing either raises.)
    """

    fast_paths: FastPathsSetting = None

    def __post_init__(self):
        super().__post_init__()  # sets the parent that `enclosing_fast_paths` walks up
        if self.conv_general_dilated_cls is not None or not isinstance(
                self.conv_general_dilated, (type(None), _Convolution)):
            raise ValueError("Conv computes its convolution with lapseg.layers.conv."
                             "conv_general_dilated; for another function use flax's nn.Conv")
        object.__setattr__(self, "conv_general_dilated",
                           _Convolution(enclosing_fast_paths(self)))


class WithFastPaths(nn.Module):
    """`module` with the fast-path setting `fast_paths` for every `Conv` inside it that
    does not set its own: `__call__` is `module.__call__`, the variables are `module`'s
    (same names, same initial values), so checkpoints of one restore into the other.

    E.g. `WithFastPaths(model, fast_paths=False)` is `model` with XLA's convolution
    everywhere. Only `__call__` is forwarded.
    """

    module: nn.Module
    fast_paths: FastPathsSetting = True

    def setup(self):
        resolve_fast_paths(self.fast_paths)  # a ValueError now rather than at the first Conv
        nn.share_scope(self, self.module)

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)


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
      fast_paths: the conv's CPU fast paths (`Conv.fast_paths`); None: the enclosing
        modules' setting, or every path.
      fold_bn: True: inference with the BatchNorm folded into the conv
        (`lapseg.layers.fold.fold_batch_norm` makes the variables): the conv has a bias
        and there is no `bn` (`train=True` is then a ValueError); None (the default): the
        nearest enclosing module's `fold_bn` (`WithFoldedBatchNorm`), else False. Without
        `use_bn` there is nothing to fold and it changes nothing.
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
    fast_paths: FastPathsSetting = None
    fold_bn: bool | None = None

    def batch_norm_folds(self) -> dict:
        """`{BatchNorm name: (kernel path, bias path)}` of the params it folds into, paths
        relative to this module (`lapseg.layers.fold.fold_batch_norm` reads it)."""
        return {"bn": (("conv", "kernel"), ("conv", "bias"))}

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """`x`: `[N, H, W, C_in]`; `train` uses batch statistics (mutable 'batch_stats')."""
        if x.ndim != 4:
            raise ValueError(f"ConvBN expects NHWC input of rank 4, got shape {x.shape}")
        folded = self.use_bn and bool(enclosing_setting(self, "fold_bn"))
        if folded and train:
            raise ValueError("a ConvBN with its BatchNorm folded (fold_bn) is for inference "
                             "only; call it with train=False, or train the unfolded model")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = Conv(
            self.features,
            _pair(self.kernel_size, "kernel_size"),
            strides=_pair(self.strides, "strides"),
            padding=torch_padding(self.kernel_size, self.dilation, self.padding),
            kernel_dilation=_pair(self.dilation, "dilation"),
            use_bias=self.use_bias or folded,
            kernel_init=self.kernel_init,
            fast_paths=self.fast_paths,
            name="conv",
            **dtypes,
        )(x)
        if self.use_bn and not folded:
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
