"""lapseg.layers.conv's CPU fast paths equal `lax.conv_general_dilated` (values and
derivatives), and `Conv` has exactly `nn.Conv`'s variables."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lapseg.layers import conv as conv_lib
from lapseg.layers.conv import Conv, ConvBN

NHWC = ("NHWC", "HWIO", "NHWC")


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
def test_export_with_symbolic_shapes(spec, xla_convs, monkeypatch):
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
    monkeypatch.setattr(conv_lib, "conv_general_dilated", lax.conv_general_dilated)
    want = jax.jit(lambda x: _ExportNet().apply(variables, x))(x)
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


def _jaxpr(kernel, channels=3, **kwargs):
    x = jnp.ones((1, 8, 8, channels))

    def f(x, k):
        return conv_lib.conv_general_dilated(x, k, dimension_numbers=NHWC, **kwargs)
    return str(jax.make_jaxpr(f)(x, kernel))


def test_routing():
    """Which convs take which path on CPU; the rest is XLA's convolution."""
    k1, k3, wide = jnp.ones((1, 1, 3, 4)), jnp.ones((3, 3, 3, 4)), jnp.ones((3, 3, 8, 2))
    tap_grad, xla = "name=tap_grad_conv", "conv_general_dilated["
    assert xla not in _jaxpr(k1, window_strides=(2, 2), padding="SAME")
    assert tap_grad in _jaxpr(k3, window_strides=(1, 1), padding="SAME", rhs_dilation=(2, 2))
    assert tap_grad in _jaxpr(k3, window_strides=(1, 1), padding="SAME")
    assert xla in _jaxpr(k3, window_strides=(2, 2), padding="SAME")
    assert tap_grad not in _jaxpr(k3, window_strides=(2, 2), padding="SAME")
    shift = _jaxpr(wide, channels=8, window_strides=(1, 1), padding="SAME")
    assert xla not in shift and tap_grad not in shift and "dot_general" in shift
    narrow = jnp.ones((3, 3, 8, 3))  # 8 < SHIFT_MIN_RATIO * 3
    assert tap_grad in _jaxpr(narrow, channels=8, window_strides=(1, 1), padding="SAME")
    assert xla in _jaxpr(k1, window_strides=(1, 1), padding=((1, 1), (1, 1)))
    grouped = jnp.ones((1, 1, 1, 3))
    assert xla in _jaxpr(grouped, window_strides=(1, 1), padding="VALID", feature_group_count=3)


@pytest.mark.parametrize("paths", [(), ("pointwise",), ("shift", "tap_grad"),
                                   ("tap_grad_undilated",)])
def test_fast_paths_switch_off(paths):
    """`fast_paths(...)` leaves only the named paths; the others are XLA's convolution."""
    cases = {  # path -> (kernel, input channels, dilation): a conv that takes it
        "pointwise": (jnp.ones((1, 1, 3, 4)), 3, (1, 1)),
        "shift": (jnp.ones((3, 3, 8, 2)), 8, (1, 1)),
        "tap_grad": (jnp.ones((3, 3, 3, 4)), 3, (2, 2)),
        "tap_grad_undilated": (jnp.ones((3, 3, 3, 4)), 3, (1, 1)),
    }
    with conv_lib.fast_paths(*paths):
        for path, (kernel, channels, dilation) in cases.items():
            jaxpr = _jaxpr(kernel, channels, window_strides=(1, 1), padding="SAME",
                           rhs_dilation=dilation)
            if path.startswith("tap_grad"):
                taken = "name=tap_grad_conv" in jaxpr
            else:
                taken = "conv_general_dilated[" not in jaxpr
            assert taken == (path in paths), path
    assert conv_lib.FAST_PATHS == frozenset(conv_lib.PATHS)
    with pytest.raises(ValueError, match="unknown"):
        with conv_lib.fast_paths("dots"):
            pass


@pytest.mark.parametrize("value, paths", [("all", conv_lib.PATHS), ("none", ()), ("", ()),
                                          ("pointwise, shift", ("pointwise", "shift"))])
def test_fast_paths_from_the_environment(monkeypatch, value, paths):
    monkeypatch.setenv("LAPSEG_CONV_FAST_PATHS", value)
    assert conv_lib._paths_from_env() == frozenset(paths)  # pylint: disable=protected-access


def test_unknown_fast_path_in_the_environment(monkeypatch):
    monkeypatch.setenv("LAPSEG_CONV_FAST_PATHS", "pointwise,taps")
    with pytest.raises(ValueError, match="taps"):
        conv_lib._paths_from_env()  # pylint: disable=protected-access


def test_modules_take_the_fast_paths():
    """`ConvBN` (through `Conv`) routes 1x1 convs to dots and stride-1 kxk ones to the custom
    derivative, forward and gradient, so the parity tests above test what models run."""
    x = jnp.ones((2, 9, 7, 3))

    def jaxprs(**fields):
        module = ConvBN(4, **fields)
        variables = module.init(jax.random.key(0), x, train=False)

        def loss(params):
            y, _ = module.apply({**variables, "params": params}, x, train=True,
                                mutable=["batch_stats"])
            return jnp.sum(y)

        return (str(jax.make_jaxpr(lambda x: module.apply(variables, x, train=False))(x)),
                str(jax.make_jaxpr(jax.grad(loss))(variables["params"])))

    for fields in (dict(kernel_size=1), dict(kernel_size=1, strides=2)):
        forward, backward = jaxprs(**fields)
        assert "conv_general_dilated" not in forward + backward, fields
        assert "dot_general" in forward and "dot_general" in backward, fields
    for fields in (dict(kernel_size=3, dilation=2), dict(kernel_size=3)):
        forward, backward = jaxprs(**fields)
        assert "name=tap_grad_conv" in forward, fields
        assert "scan" in backward, fields  # the kernel gradient, one dot per tap
    forward, backward = jaxprs(kernel_size=3, strides=2)
    assert "name=tap_grad_conv" not in forward and "scan" not in backward
    assert "conv_general_dilated" in forward


@pytest.mark.parametrize("shape, kernel_size", [((2, 9, 3), (1,)), ((2, 5, 6, 7, 3), (1, 1, 1))])
def test_pointwise_in_1d_and_3d_is_flax_conv(shape, kernel_size):
    """1x1 (1x1x1) convs of any spatial rank take the dot, with `nn.Conv`'s result."""
    x = _normal(np.random.default_rng(3), *shape)
    ours, flax_conv = Conv(4, kernel_size, strides=2), nn.Conv(4, kernel_size, strides=2)
    variables = ours.init(jax.random.key(0), x)
    assert "conv_general_dilated" not in str(jax.make_jaxpr(
        lambda x: ours.apply(variables, x))(x))
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


def test_convbn_train_step_on_8_devices_matches_xla_conv(monkeypatch):
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

    net = Net()
    variables = net.init(jax.random.key(0), x)

    def grads():
        def loss(params, x):
            y, _ = net.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                             mutable=["batch_stats"])
            return jnp.sum(jnp.sin(y))
        step = jax.jit(jax.grad(loss), in_shardings=(NamedSharding(mesh, P()),
                                                      NamedSharding(mesh, P("data"))))
        return step(variables["params"], x)

    got = grads()
    monkeypatch.setattr(conv_lib, "conv_general_dilated", lax.conv_general_dilated)
    want = grads()
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        _assert_close(g, w, "gradient")
    assert set(got) == {"pointwise", "undilated", "shift", "dilated"}
