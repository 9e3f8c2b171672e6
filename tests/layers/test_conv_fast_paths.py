"""lapseg.layers.conv's CPU fast paths equal `lax.conv_general_dilated` (values and
derivatives); `Conv` has exactly `nn.Conv`'s variables; the setting is a module attribute
that jit sees, and the platform the program is lowered for picks the fast path or XLA's
convolution; no module of lapseg but conv.py uses flax's `nn.Conv`."""

import ast
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lapseg.layers import conv as conv_lib
from lapseg.layers.cff import CascadeFeatureFusion
from lapseg.layers.conv import Conv, ConvBN, WithFastPaths

NHWC = ("NHWC", "HWIO", "NHWC")
LAPSEG = pathlib.Path(__file__).resolve().parents[2] / "lapseg"


def _lowered(fn, *args, platform="cpu"):
    """StableHLO of `jax.jit(fn)` lowered for `platform` (no device of it needed): what
    `lax.platform_dependent` resolves to there."""
    return jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()


def _normal(rng, *shape):
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def _assert_close(got, want, what, rtol=1e-5):
    """Relative to the largest magnitude of `want`: float32 sums in another order."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = max(np.abs(want).max(), 1e-6)
    assert np.abs(got - want).max() <= rtol * scale, (what, np.abs(got - want).max() / scale)


def _check_value_and_derivatives(fast, reference, x, kernel, bias, rng):
    """Output, VJP (input, kernel, bias) and JVP of `fast` against `reference`."""
    want, want_vjp = jax.vjp(reference, x, kernel, bias)
    got, got_vjp = jax.vjp(fast, x, kernel, bias)
    _assert_close(got, want, "output")
    cotangent = _normal(rng, *want.shape)
    for name, g, w in zip(("d input", "d kernel", "d bias"), got_vjp(cotangent),
                          want_vjp(cotangent)):
        _assert_close(g, w, name)
    tangents = (_normal(rng, *x.shape), _normal(rng, *kernel.shape), _normal(rng, *bias.shape))
    _assert_close(jax.jvp(fast, (x, kernel, bias), tangents)[1],
                  jax.jvp(reference, (x, kernel, bias), tangents)[1], "jvp")


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("size", [(9, 7), (8, 8)])
def test_pointwise_is_lax_conv(stride, use_bias, size):
    """The 1x1 fast path (a dot on `x[:, ::s, ::s]`) is the 1x1 convolution, forward and
    derivatives, at odd and even sizes, with and without a bias."""
    rng = np.random.default_rng(stride + 2 * use_bias)
    x, kernel, bias = _normal(rng, 2, *size, 6), _normal(rng, 1, 1, 6, 5), _normal(rng, 5)
    scale = 1.0 if use_bias else 0.0

    def reference(x, kernel, bias):
        y = lax.conv_general_dilated(x, kernel, (stride, stride), "VALID", dimension_numbers=NHWC)
        return y + scale * bias

    def fast(x, kernel, bias):
        return conv_lib.pointwise_conv(x, kernel, (stride, stride)) + scale * bias

    _check_value_and_derivatives(fast, reference, x, kernel, bias, rng)


@pytest.mark.parametrize("kernel_size, stride, dilation, padding, size", [
    ((3, 3), (1, 1), (2, 2), ((2, 2), (2, 2)), (9, 7)),
    ((3, 3), (1, 1), (4, 4), ((4, 4), (4, 4)), (13, 10)),
    ((3, 3), (1, 1), (12, 12), ((12, 12), (12, 12)), (9, 7)),  # rate beyond the input
    ((3, 3), (2, 2), (3, 3), ((1, 2), (0, 5)), (11, 6)),        # strided, asymmetric
    ((3, 3), (1, 1), (2, 2), ((-1, 2), (3, -2)), (12, 9)),      # negative padding
    ((3, 5), (2, 1), (2, 3), ((1, 1), (6, 6)), (10, 11)),
    ((3, 3), (1, 1), (1, 1), ((1, 1), (1, 1)), (9, 7)),        # undilated
    ((5, 3), (1, 1), (1, 1), ((0, 3), (1, 0)), (8, 9)),
])  # fmt: skip
def test_tap_grad_is_lax_conv(kernel_size, stride, dilation, padding, size):
    """`tap_grad_conv` (XLA forward, kernel derivative by taps) is the convolution."""
    rng = np.random.default_rng(sum(size))
    x, kernel = _normal(rng, 2, *size, 5), _normal(rng, *kernel_size, 5, 4)
    bias = _normal(rng, 4)

    def reference(x, kernel, bias):
        return lax.conv_general_dilated(x, kernel, stride, padding, rhs_dilation=dilation,
                                        dimension_numbers=NHWC) + bias

    def fast(x, kernel, bias):
        return conv_lib.tap_grad_conv(x, kernel, stride, padding, dilation) + bias

    _check_value_and_derivatives(fast, reference, x, kernel, bias, rng)
    taps = conv_lib.tap_conv(x, kernel, stride, padding, dilation)
    _assert_close(taps, reference(x, kernel, 0.0), "tap_conv")


@pytest.mark.parametrize("kernel_size, dilation, padding, size", [
    ((3, 3), (1, 1), ((1, 1), (1, 1)), (9, 7)),                 # PSPNet's head
    ((3, 3), (4, 4), ((4, 4), (4, 4)), (13, 10)),
    ((3, 3), (12, 12), ((12, 12), (12, 12)), (9, 7)),         # rate beyond the input
    ((3, 5), (2, 3), ((1, 2), (0, 5)), (11, 14)),             # asymmetric
    ((3, 3), (2, 2), ((-1, 2), (3, -2)), (12, 9)),            # negative padding
    ((1, 7), (1, 1), ((0, 0), (3, 3)), (6, 10)),
])  # fmt: skip
def test_shift_is_lax_conv(kernel_size, dilation, padding, size):
    """`shift_conv` (one dot, then shifted slices summed) is the stride-1 convolution,
    forward and derivatives."""
    rng = np.random.default_rng(sum(size) + 1)
    x, kernel = _normal(rng, 2, *size, 12), _normal(rng, *kernel_size, 12, 3)
    bias = _normal(rng, 3)

    def reference(x, kernel, bias):
        return lax.conv_general_dilated(x, kernel, (1, 1), padding, rhs_dilation=dilation,
                                        dimension_numbers=NHWC) + bias

    def fast(x, kernel, bias):
        return conv_lib.shift_conv(x, kernel, padding, dilation) + bias

    _check_value_and_derivatives(fast, reference, x, kernel, bias, rng)


CONV_CASES = [
    # features, kernel_size, strides, padding, kernel_dilation, use_bias
    (5, (1, 1), 1, "SAME", 1, True),                 # a decoder's classifier
    (5, (1, 1), 2, ((0, 0), (0, 0)), 1, False),      # a ResNet projection shortcut
    (5, (1, 1), 2, "SAME", 1, True),
    (5, (3, 3), 1, ((2, 2), (2, 2)), 2, False),      # a dilated ResNet 3x3
    (5, (3, 3), 1, "SAME", 4, True),
    (5, (3, 3), 2, ((1, 1), (1, 1)), 1, False),      # XLA's own convolution
    (5, (1, 1), 1, ((1, 1), (1, 1)), 1, True),       # padded 1x1: XLA's own convolution
    (5, (1, 7), 1, ((0, 0), (3, 3)), 1, True),
    (5, (3, 3), 1, ((1, 1), (1, 1)), 1, False),      # an undilated ResNet 3x3: tap gradient
    (2, (3, 3), 1, ((1, 1), (1, 1)), 1, True),       # wide input: shift_conv
    (2, (3, 3), 1, "SAME", 3, False),
    (2, (3, 3), 2, ((1, 1), (1, 1)), 1, False),      # strided: XLA's own convolution
]


@pytest.mark.parametrize("features, kernel_size, strides, padding, dilation, use_bias",
                         CONV_CASES)
def test_conv_is_flax_conv(features, kernel_size, strides, padding, dilation, use_bias):
    """`Conv` has `nn.Conv`'s variables (names, shapes, initial values from the same key),
    and the same output and gradients."""
    rng = np.random.default_rng(0)
    x = _normal(rng, 2, 9, 7, 8)
    fields = dict(features=features, kernel_size=kernel_size, strides=strides, padding=padding,
                  kernel_dilation=dilation, use_bias=use_bias)
    ours, flax_conv = Conv(**fields), nn.Conv(**fields)
    off = Conv(**fields, fast_paths=False)
    variables = ours.init(jax.random.key(1), x)
    flax_variables = flax_conv.init(jax.random.key(1), x)
    assert jax.tree.structure(variables) == jax.tree.structure(flax_variables)
    for got, want in zip(jax.tree.leaves(variables), jax.tree.leaves(flax_variables)):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    variables = jax.tree.map(lambda v: v + 0.1, variables)  # a non-zero bias

    def loss(module):
        return lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))

    _assert_close(ours.apply(variables, x), flax_conv.apply(variables, x), "output")
    got = jax.grad(loss(ours), argnums=(0, 1))(variables, x)
    want = jax.grad(loss(flax_conv), argnums=(0, 1))(variables, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        _assert_close(g, w, "gradient")
    # Fast paths off: flax's own convolution, the same program, so the same numbers.
    np.testing.assert_array_equal(off.apply(variables, x), flax_conv.apply(variables, x))
    for g, w in zip(jax.tree.leaves(jax.grad(loss(off), argnums=(0, 1))(variables, x)),
                    jax.tree.leaves(want)):
        np.testing.assert_array_equal(g, w)


def test_hessian_vector_product_is_flax_conv():
    """Forward-over-reverse (as benchmarks/lrr_curvature.py runs) through the fast paths."""
    rng = np.random.default_rng(1)
    x = _normal(rng, 2, 9, 7, 3)

    def hvp(conv_cls):
        class Net(nn.Module):
            @nn.compact
            def __call__(self, x):
                x = jnp.tanh(conv_cls(8, (1, 1), strides=2, name="pointwise")(x))
                x = jnp.tanh(conv_cls(2, (3, 3), padding=1, name="shift")(x))
                return conv_cls(2, (3, 3), kernel_dilation=2, padding=2, name="dilated")(x)

        variables = Net().init(jax.random.key(0), x)
        grad = jax.grad(lambda v: jnp.sum(jnp.tanh(Net().apply(v, x)) ** 2))
        return jax.jvp(grad, (variables,), (variables,))[1]

    for got, want in zip(jax.tree.leaves(hvp(Conv)), jax.tree.leaves(hvp(nn.Conv))):
        _assert_close(got, want, "hvp", rtol=1e-4)


class _ExportNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = ConvBN(8, 1, 2, name="pointwise")(x, train=False)
        x = ConvBN(8, 1, name="pointwise_stride1")(x, train=False)
        return ConvBN(4, 3, dilation=2, name="dilated")(x, train=False)


@pytest.mark.parametrize("spec, xla_convs", [("b", 1), ("b, h, w", 2)])
def test_export_with_symbolic_shapes(spec, xla_convs):
    """jax.export with a symbolic batch (as `lapseg export` does) keeps both 1x1 convs as
    dots (the dilated forward is XLA's convolution anyway); with symbolic sizes too, the
    strided 1x1 falls back to XLA's convolution. Both equal the all-XLA network."""
    from jax import export  # pylint: disable=import-outside-toplevel

    x = _normal(np.random.default_rng(0), 3, 11, 9, 6)
    variables = _ExportNet().init(jax.random.key(0), x)
    variables = jax.tree.map(lambda v: v + 0.1, variables)
    forward = jax.jit(lambda x: _ExportNet().apply(variables, x))
    dims = export.symbolic_shape(spec)
    shape = (*dims, 6) if len(dims) == 3 else (dims[0], 11, 9, 6)
    exported = export.export(forward)(jax.ShapeDtypeStruct(shape, jnp.float32))
    assert exported.mlir_module().count("stablehlo.convolution") == xla_convs
    got = exported.call(x)
    xla_net = WithFastPaths(_ExportNet(), fast_paths=False)
    want = jax.jit(lambda x: xla_net.apply(variables, x))(x)
    _assert_close(got, want, "exported")
    _assert_close(exported.call(x[:1]), want[:1], "exported, batch 1")


def test_export_gradient_with_symbolic_batch():
    """The tap kernel gradient of the dilated path exports with a symbolic batch."""
    from jax import export  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(2)
    x, kernel = _normal(rng, 3, 9, 8, 4), _normal(rng, 3, 3, 4, 5)

    def loss(x, kernel, conv):
        y = conv(x, kernel, (1, 1), ((2, 2), (2, 2)), rhs_dilation=(2, 2), dimension_numbers=NHWC)
        return jnp.sum(jnp.sin(y))

    fast = jax.jit(jax.grad(lambda x, k: loss(x, k, conv_lib.conv_general_dilated), (0, 1)))
    spec = jax.ShapeDtypeStruct(export.symbolic_shape("b, 9, 8, 4"), jnp.float32)
    exported = export.export(fast)(spec, jax.ShapeDtypeStruct(kernel.shape, jnp.float32))
    want = jax.grad(lambda x, k: loss(x, k, lax.conv_general_dilated), (0, 1))(x, kernel)
    for got, w, name in zip(exported.call(x, kernel), want, ("d input", "d kernel")):
        _assert_close(got, w, name)


def _programs(kernel, channels=3, fast_paths=True, **kwargs):
    """(jaxpr, StableHLO for the CPU) of one `conv_general_dilated`."""
    x = jnp.ones((1, 8, 8, channels))

    def f(x, k):
        return conv_lib.conv_general_dilated(x, k, dimension_numbers=NHWC, fast_paths=fast_paths,
                                             **kwargs)
    return str(jax.make_jaxpr(f)(x, kernel)), _lowered(f, x, kernel)


def test_routing():
    """Which convs take which path on CPU; the rest is XLA's convolution on every platform
    (no platform-dependent branch at all)."""
    k1, k3, wide = jnp.ones((1, 1, 3, 4)), jnp.ones((3, 3, 3, 4)), jnp.ones((3, 3, 8, 2))
    tap_grad, xla, branch = "name=tap_grad_conv", "stablehlo.convolution", "cond["
    jaxpr, cpu = _programs(k1, window_strides=(2, 2), padding="SAME")
    assert xla not in cpu and branch in jaxpr
    assert tap_grad in _programs(k3, window_strides=(1, 1), padding="SAME",
                                 rhs_dilation=(2, 2))[0]
    assert tap_grad in _programs(k3, window_strides=(1, 1), padding="SAME")[0]
    jaxpr, cpu = _programs(k3, window_strides=(2, 2), padding="SAME")
    assert xla in cpu and tap_grad not in jaxpr and branch not in jaxpr
    jaxpr, cpu = _programs(wide, channels=8, window_strides=(1, 1), padding="SAME")
    assert xla not in cpu and tap_grad not in jaxpr and "stablehlo.dot_general" in cpu
    narrow = jnp.ones((3, 3, 8, 3))  # 8 < SHIFT_MIN_RATIO * 3
    assert tap_grad in _programs(narrow, channels=8, window_strides=(1, 1), padding="SAME")[0]
    jaxpr, cpu = _programs(k1, window_strides=(1, 1), padding=((1, 1), (1, 1)))
    assert xla in cpu and branch not in jaxpr
    grouped = jnp.ones((1, 1, 1, 3))
    jaxpr, cpu = _programs(grouped, window_strides=(1, 1), padding="VALID",
                           feature_group_count=3)
    assert xla in cpu and branch not in jaxpr


@pytest.mark.parametrize("paths", [(), ("pointwise",), ("shift", "tap_grad"),
                                   ("tap_grad_undilated",), True, False])
def test_fast_paths_setting(paths):
    """`fast_paths=(...)` leaves only the named paths (True: all, False: none); the others
    are XLA's convolution on every platform."""
    cases = {  # path -> (kernel, input channels, dilation): a conv that takes it
        "pointwise": (jnp.ones((1, 1, 3, 4)), 3, (1, 1)),
        "shift": (jnp.ones((3, 3, 8, 2)), 8, (1, 1)),
        "tap_grad": (jnp.ones((3, 3, 3, 4)), 3, (2, 2)),
        "tap_grad_undilated": (jnp.ones((3, 3, 3, 4)), 3, (1, 1)),
    }
    allowed = conv_lib.PATHS if paths is True else () if paths is False else paths
    for path, (kernel, channels, dilation) in cases.items():
        jaxpr, cpu = _programs(kernel, channels, fast_paths=paths, window_strides=(1, 1),
                               padding="SAME", rhs_dilation=dilation)
        if path.startswith("tap_grad"):
            taken = "name=tap_grad_conv" in jaxpr
        else:
            taken = "stablehlo.convolution" not in cpu
        assert taken == (path in allowed), path
        if not allowed:
            assert "cond[" not in jaxpr  # no platform-dependent branch at all


@pytest.mark.parametrize("setting", ["pointwise", ("dots",), 1])
def test_unknown_fast_paths_raise(setting):
    with pytest.raises(ValueError, match="fast paths|fast_paths"):
        conv_lib.resolve_fast_paths(setting)
    with pytest.raises(ValueError, match="fast paths|fast_paths"):
        Conv(4, (1, 1), fast_paths=setting)


def test_conv_keeps_its_convolution_function():
    """`Conv` sets `conv_general_dilated` from `fast_paths`; another function is an error."""
    with pytest.raises(ValueError, match="nn.Conv"):
        Conv(4, (1, 1), conv_general_dilated=lax.conv_general_dilated)
    with pytest.raises(ValueError, match="nn.Conv"):
        Conv(4, (1, 1), conv_general_dilated_cls=lambda: lax.conv_general_dilated)


def test_the_platform_decides_in_one_traced_program():
    """One traced program: lowered for the CPU it holds the fast paths (1x1 as a dot, the
    dilated kernel gradient as a scan of tap dots), lowered for GPU or TPU only XLA's
    convolutions. `jax.default_backend()` (the CPU here) plays no part."""
    rng = np.random.default_rng(5)
    x, k1, k3 = _normal(rng, 2, 9, 7, 4), _normal(rng, 1, 1, 4, 6), _normal(rng, 3, 3, 6, 5)

    def loss(x, k1, k3):
        y = conv_lib.conv_general_dilated(x, k1, (2, 2), "VALID", dimension_numbers=NHWC)
        y = conv_lib.conv_general_dilated(jnp.sin(y), k3, (1, 1), "SAME", rhs_dilation=(2, 2),
                                          dimension_numbers=NHWC)
        return jnp.sum(jnp.sin(y))

    traced = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).trace(x, k1, k3)
    cpu = traced.lower(lowering_platforms=("cpu",)).as_text()
    assert "stablehlo.while" in cpu  # the taps of the kernel gradient
    # The dilated forward and input gradient stay XLA's on CPU too; the 1x1's are dots.
    assert cpu.count("stablehlo.convolution") == 2
    for platform in ("cuda", "rocm", "tpu"):
        other = traced.lower(lowering_platforms=(platform,)).as_text()
        assert "stablehlo.while" not in other and "stablehlo.dot_general" not in other
        assert other.count("stablehlo.convolution") == 6, platform  # 2 convs x (fwd + 2 grads)


def test_export_for_cpu_and_gpu_carries_both_branches():
    """Exported for several platforms, the program keeps both formulations and picks one
    when it is compiled: called here (CPU) it computes the convolution."""
    from jax import export  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(6)
    x, kernel = _normal(rng, 2, 9, 7, 4), _normal(rng, 1, 1, 4, 6)

    def f(x, k):
        return conv_lib.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=NHWC)

    exported = export.export(jax.jit(f), platforms=("cpu", "cuda"))(x, kernel)
    text = exported.mlir_module()
    assert "stablehlo.convolution" in text and "stablehlo.dot_general" in text
    want = lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=NHWC)
    _assert_close(exported.call(x, kernel), want, "exported for cpu and cuda")


def test_vmap_and_grad_through_the_platform_branch():
    """`vmap` over the input and the kernel, and gradients of it, equal XLA's convolution's."""
    rng = np.random.default_rng(7)
    x, kernel = _normal(rng, 3, 2, 9, 7, 4), _normal(rng, 3, 3, 3, 4, 5)

    def loss(conv):
        def one(x, k):
            return conv(x, k, (1, 1), ((2, 2), (2, 2)), rhs_dilation=(2, 2),
                        dimension_numbers=NHWC)
        return lambda x, k: jnp.sum(jnp.sin(jax.vmap(one)(x, k)))

    got = jax.jit(jax.value_and_grad(loss(conv_lib.conv_general_dilated), (0, 1)))(x, kernel)
    want = jax.value_and_grad(loss(lax.conv_general_dilated), (0, 1))(x, kernel)
    for g, w, what in zip(jax.tree.leaves(got), jax.tree.leaves(want), ("loss", "dx", "dk")):
        _assert_close(g, w, what)


def test_setting_is_part_of_the_jitted_program():
    """Two settings are two modules, two traced programs, two compilations; an equal module
    hits jit's cache. Both compute the same values."""
    x = _normal(np.random.default_rng(8), 2, 9, 7, 8)
    apply = jax.jit(lambda module, v, x: module.apply(v, x), static_argnums=0)
    on, off = Conv(4, (1, 1)), Conv(4, (1, 1), fast_paths=False)
    assert on != off and on == Conv(4, (1, 1))
    variables = on.init(jax.random.key(0), x)
    got = apply(on, variables, x)
    want = apply(off, variables, x)
    assert apply._cache_size() == 2  # pylint: disable=protected-access
    apply(Conv(4, (1, 1)), variables, x)
    assert apply._cache_size() == 2  # pylint: disable=protected-access
    _assert_close(got, want, "output")
    assert "stablehlo.convolution" not in apply.trace(on, variables, x).lower().as_text()
    assert "stablehlo.convolution" in apply.trace(off, variables, x).lower().as_text()


def test_enclosing_setting_and_with_fast_paths():
    """`Conv` without a setting takes its nearest enclosing module's (here `ConvBN`'s or
    `WithFastPaths`'); its own wins. `WithFastPaths` keeps the model's variables."""
    x = _normal(np.random.default_rng(9), 2, 9, 7, 16)
    model = CascadeFeatureFusion(features=8, num_classes=3)  # 3x3 dilated, 1x1, 1x1 classifier
    low = x[:, ::2, ::2]
    variables = model.init(jax.random.key(0), low, x, train=True)
    for setting, convs in ((True, 1), (False, 3), (("pointwise",), 1), (("tap_grad",), 3)):
        wrapped = WithFastPaths(model, fast_paths=setting)
        wrapped_variables = wrapped.init(jax.random.key(0), low, x, train=True)
        assert jax.tree.structure(wrapped_variables) == jax.tree.structure(variables)
        for got, want in zip(jax.tree.leaves(wrapped_variables), jax.tree.leaves(variables)):
            np.testing.assert_array_equal(got, want)

        def forward(v, low, x, module=wrapped):
            return module.apply(v, low, x, train=True, mutable=["batch_stats"])[0]

        assert _lowered(forward, variables, low, x).count("stablehlo.convolution") == convs
        for got, want in zip(jax.tree.leaves(forward(variables, low, x)),
                             jax.tree.leaves(forward(variables, low, x, model))):
            _assert_close(got, want, f"output, {setting}")

    class Own(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = ConvBN(4, 1, fast_paths=True, name="own")(x, train=False)
            return ConvBN(4, 1, name="inherited")(x, train=False)

    own = WithFastPaths(Own(), fast_paths=False)
    own_variables = own.init(jax.random.key(0), x)
    cpu = _lowered(lambda v, x: own.apply(v, x), own_variables, x)
    assert cpu.count("stablehlo.convolution") == 1
    with pytest.raises(ValueError, match="fast_paths"):
        WithFastPaths(Own(), fast_paths="none").init(jax.random.key(0), x)


def _flax_convs(path: pathlib.Path) -> list[int]:
    """Lines of `path` that name flax's `Conv` (`nn.Conv`, `linen.Conv`, `from flax.linen
    import Conv`); `ConvTranspose` and lapseg's `Conv` do not count."""
    tree = ast.parse(path.read_text(), filename=str(path))
    lines = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr == "Conv"
                and isinstance(node.value, ast.Name) and node.value.id in ("nn", "linen")):
            lines.append(node.lineno)
        elif (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flax")
              and any(alias.name == "Conv" for alias in node.names)):
            lines.append(node.lineno)
    return lines


def test_every_convolution_is_lapseg_conv():
    """No module of lapseg but `lapseg/layers/conv.py` uses flax's `nn.Conv`: every
    convolution of the layers, backbones and decoders is `lapseg.layers.conv.Conv`
    (directly or through `ConvBN`), and so takes the fast paths and their setting."""
    found = {str(path.relative_to(LAPSEG.parent)): lines
             for path in sorted(LAPSEG.rglob("*.py"))
             if path != LAPSEG / "layers" / "conv.py" and (lines := _flax_convs(path))}
    assert found == {}


def test_modules_take_the_fast_paths():
    """`ConvBN` (through `Conv`) routes 1x1 convs to dots and stride-1 kxk ones to the custom
    derivative, forward and gradient, so the parity tests above test what models run."""
    x = jnp.ones((2, 9, 7, 3))

    def programs(**fields):
        """(forward jaxpr, forward on CPU, gradient on CPU)."""
        module = ConvBN(4, **fields)
        variables = module.init(jax.random.key(0), x, train=False)

        def forward(x):
            return module.apply(variables, x, train=False)

        def loss(params):
            y, _ = module.apply({**variables, "params": params}, x, train=True,
                                mutable=["batch_stats"])
            return jnp.sum(y)

        return (str(jax.make_jaxpr(forward)(x)), _lowered(forward, x),
                _lowered(jax.grad(loss), variables["params"]))

    for fields in (dict(kernel_size=1), dict(kernel_size=1, strides=2)):
        _, forward, backward = programs(**fields)
        assert "stablehlo.convolution" not in forward + backward, fields
        assert "stablehlo.dot_general" in forward and "stablehlo.dot_general" in backward
    for fields in (dict(kernel_size=3, dilation=2), dict(kernel_size=3)):
        jaxpr, _, backward = programs(**fields)
        assert "name=tap_grad_conv" in jaxpr, fields
        assert "stablehlo.while" in backward, fields  # the kernel gradient, one dot per tap
    jaxpr, forward, backward = programs(kernel_size=3, strides=2)
    assert "name=tap_grad_conv" not in jaxpr and "stablehlo.while" not in backward
    assert "stablehlo.convolution" in forward


@pytest.mark.parametrize("shape, kernel_size", [((2, 9, 3), (1,)), ((2, 5, 6, 7, 3), (1, 1, 1))])
def test_pointwise_in_1d_and_3d_is_flax_conv(shape, kernel_size):
    """1x1 (1x1x1) convs of any spatial rank take the dot, with `nn.Conv`'s result."""
    x = _normal(np.random.default_rng(3), *shape)
    ours, flax_conv = Conv(4, kernel_size, strides=2), nn.Conv(4, kernel_size, strides=2)
    variables = ours.init(jax.random.key(0), x)
    assert "stablehlo.convolution" not in _lowered(lambda x: ours.apply(variables, x), x)
    _assert_close(ours.apply(variables, x), flax_conv.apply(variables, x), "output")
    grad = jax.grad(lambda v, conv: jnp.sum(jnp.sin(conv.apply(v, x))))
    for g, w in zip(jax.tree.leaves(grad(variables, ours)),
                    jax.tree.leaves(grad(variables, flax_conv))):
        _assert_close(g, w, "gradient")


@pytest.mark.parametrize("kernel_size, dilation", [((1, 1), 1), ((3, 3), 2)])
def test_bfloat16_compute_is_flax_conv(kernel_size, dilation):
    """With `dtype=bfloat16` the fast paths compute in bfloat16 as `nn.Conv` does."""
    x = _normal(np.random.default_rng(4), 2, 9, 7, 8)
    fields = dict(features=4, kernel_size=kernel_size, kernel_dilation=dilation,
                  dtype=jnp.bfloat16)
    ours, flax_conv = Conv(**fields), nn.Conv(**fields)
    variables = ours.init(jax.random.key(0), x)
    got, want = ours.apply(variables, x), flax_conv.apply(variables, x)
    assert got.dtype == want.dtype == jnp.bfloat16
    _assert_close(got, want, "output", rtol=2e-2)
    grad = jax.grad(lambda v, conv: jnp.sum(conv.apply(v, x).astype(jnp.float32) ** 2))
    for g, w in zip(jax.tree.leaves(grad(variables, ours)),
                    jax.tree.leaves(grad(variables, flax_conv))):
        assert g.dtype == w.dtype
        _assert_close(g, w, "gradient", rtol=5e-2)


def test_convbn_train_step_on_8_devices_matches_xla_conv():
    """A batch-sharded ConvBN train-mode gradient (1x1 stride 2, undilated 3x3, wide-input
    3x3, dilated 3x3) equals the same computation through `lax.conv_general_dilated`."""
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",),
                             axis_types=(jax.sharding.AxisType.Auto,))
    rng = np.random.default_rng(0)
    x = _normal(rng, 8, 11, 9, 6)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = ConvBN(8, 1, 2, name="pointwise")(x, train=True)
            x = ConvBN(8, 3, name="undilated")(x, train=True)
            x = ConvBN(2, 3, name="shift")(x, train=True)
            return ConvBN(4, 3, dilation=2, name="dilated")(x, train=True)

    variables = Net().init(jax.random.key(0), x)

    def grads(net):
        def loss(params, x):
            y, _ = net.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                             mutable=["batch_stats"])
            return jnp.sum(jnp.sin(y))
        step = jax.jit(jax.grad(loss), in_shardings=(NamedSharding(mesh, P()),
                                                      NamedSharding(mesh, P("data"))))
        return step(variables["params"], x)

    got = grads(Net())
    want = grads(WithFastPaths(Net(), fast_paths=False))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        _assert_close(g, w, "gradient")
    assert set(got) == {"pointwise", "undilated", "shift", "dilated"}
