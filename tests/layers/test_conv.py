"""ConvBN against torch.nn.Conv2d + BatchNorm2d; PyTorch-style padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lapseg.layers import ConvBN, torch_padding


@pytest.mark.parametrize("kernel, dilation, padding, expected", [
    (3, 1, None, ((1, 1), (1, 1))),
    (3, 4, None, ((4, 4), (4, 4))),
    (7, 1, None, ((3, 3), (3, 3))),
    ((1, 7), 1, None, ((0, 0), (3, 3))),
    (3, 1, 100, ((100, 100), (100, 100))),
    (3, 2, (0, 1), ((0, 0), (1, 1))),
])  # fmt: skip
def test_torch_padding(kernel, dilation, padding, expected):
    assert torch_padding(kernel, dilation, padding) == expected


def test_torch_padding_rejects_negative():
    with pytest.raises(ValueError, match="padding"):
        torch_padding(3, 1, -1)


def test_rank_check():
    with pytest.raises(ValueError, match="rank 4"):
        ConvBN(4).init(jax.random.key(0), jnp.zeros((8, 8, 3)), train=False)


CASES = [
    # kernel, stride, dilation, padding (ours), padding (PyTorch's argument), bias
    (3, 2, 1, None, 1, False),
    (3, 1, 2, None, 2, False),
    ((1, 7), 1, 1, None, (0, 3), True),
    (7, 2, 1, None, 3, False),
    (1, 2, 1, None, 0, False),
    (3, 1, 1, 5, 5, True),
]


@pytest.mark.parametrize("kernel, stride, dilation, padding, torch_pad, bias", CASES)
def test_matches_torch_conv_bn_relu(kernel, stride, dilation, padding, torch_pad, bias):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 13, 10, 3)).astype(np.float32)
    conv = torch.nn.Conv2d(3, 5, kernel, stride, torch_pad, dilation, bias=bias)
    bn = torch.nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(5))
        bn.running_var.copy_(torch.rand(5) + 0.5)
        bn.weight.copy_(torch.rand(5) + 0.5)
        bn.bias.copy_(torch.randn(5))
        want = torch.relu(bn.eval()(conv(torch.from_numpy(x).permute(0, 3, 1, 2))))
    want = want.permute(0, 2, 3, 1).numpy()

    module = ConvBN(5, kernel, stride, dilation, padding, use_bias=bias)
    params = {
        "conv": {"kernel": conv.weight.detach().numpy().transpose(2, 3, 1, 0)},
        "bn": {"scale": bn.weight.detach().numpy(), "bias": bn.bias.detach().numpy()},
    }
    if bias:
        params["conv"]["bias"] = conv.bias.detach().numpy()
    stats = {"bn": {"mean": bn.running_mean.numpy(), "var": bn.running_var.numpy()}}
    got = module.apply({"params": params, "batch_stats": stats}, jnp.asarray(x), train=False)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_train_mode_uses_batch_statistics_with_pytorch_momentum():
    """Running stats after one step: mean exactly as PyTorch (momentum 0.1); var up to n/(n-1)."""
    x = jax.random.normal(jax.random.key(0), (4, 6, 6, 3)) * 3.0 + 1.0
    module = ConvBN(2, 1, use_bn=True, activation=False)
    variables = module.init(jax.random.key(1), x, train=False)
    y, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
    conv = jnp.einsum("nhwc,co->nhwo", x, variables["params"]["conv"]["kernel"][0, 0])
    mean, var = conv.mean((0, 1, 2)), conv.var((0, 1, 2))
    np.testing.assert_allclose(updates["batch_stats"]["bn"]["mean"], 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(updates["batch_stats"]["bn"]["var"], 0.9 + 0.1 * var, rtol=1e-5)
    np.testing.assert_allclose(y, (conv - mean) / jnp.sqrt(var + 1e-5), atol=1e-4)


def test_bfloat16_compute_keeps_float32_params():
    module = ConvBN(4, dtype=jnp.bfloat16)
    x = jnp.ones((1, 8, 8, 3))
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    out = jax.eval_shape(lambda v: module.apply(v, x, train=False), variables)
    assert out.dtype == jnp.bfloat16
