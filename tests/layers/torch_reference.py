"""Helpers for parity tests against PyTorch reference modules built in the tests.

Weights go from torch to flax: conv `[O, I, kh, kw]` -> HWIO `[kh, kw, I, O]`; BatchNorm
weight/bias -> `scale`/`bias`, running stats -> batch_stats `mean`/`var`. `randomize`
gives every BatchNorm random affine parameters and running statistics, so that a test
that mixes up BN parameters or skips a BN fails.
"""

import numpy as np
import torch


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN affine parameters and running statistics (eval mode); returns the module."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                channels = bn.num_features
                bn.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
                bn.bias.copy_(torch.randn(channels, generator=generator) * 0.5)
                bn.running_mean.copy_(torch.randn(channels, generator=generator) * 0.5)
                bn.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
    return module.eval()


def conv(module: torch.nn.Conv2d) -> dict:
    """flax `nn.Conv` params of a torch conv."""
    params = {"kernel": module.weight.detach().numpy().transpose(2, 3, 1, 0)}
    if module.bias is not None:
        params["bias"] = module.bias.detach().numpy()
    return params


def conv_bn(conv_module: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d | None = None):
    """`(params, batch_stats)` of a lapseg `ConvBN` (`conv`, `bn`) from torch modules."""
    params = {"conv": conv(conv_module)}
    if bn is None:
        return params, {}
    params["bn"] = {"scale": bn.weight.detach().numpy(), "bias": bn.bias.detach().numpy()}
    return params, {"bn": {"mean": bn.running_mean.numpy(), "var": bn.running_var.numpy()}}


def to_torch(x) -> torch.Tensor:
    """NHWC numpy/jax -> NCHW torch."""
    return torch.from_numpy(np.array(x, np.float32)).permute(0, 3, 1, 2).contiguous()


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """NCHW torch -> NHWC numpy."""
    return x.detach().permute(0, 2, 3, 1).numpy()


def max_abs_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max())


def assert_parity(got, want, what: str, tolerance: float) -> None:
    """Prints `'<what>: max abs err E'` and asserts `E <= tolerance` (`max_abs_error`)."""
    error = max_abs_error(got, want)
    print(f"{what}: max abs err {error:.2e}")
    assert error <= tolerance
