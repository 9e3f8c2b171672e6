"""Folding an eval-mode BatchNorm into the linear map before it (pure, jittable).

In evaluation BatchNorm is the per-channel affine map `y = (x - mean) * scale /
sqrt(var + eps) + offset` of the running statistics. Following a linear map with output
channels last (a convolution's HWIO kernel, DSRL's 2x2 deconvolution kernel), it is the
same map with the kernel scaled per output channel and a bias added, so inference runs
one op instead of two (`lapseg.layers.fold.fold_batch_norm` applies it to a model).
"""

import jax.numpy as jnp
from jax import lax


def fold_into_kernel(kernel, bias, *, mean, var, epsilon: float, scale=None, offset=None):
    """The kernel and bias of `BN(x @ kernel + bias)` as one linear map, BN in eval mode.

    `factor = scale / sqrt(var + epsilon)`; the folded kernel is `kernel * factor` (per
    output channel, the last axis) and the folded bias `(bias - mean) * factor + offset`,
    computed in float32 and returned in `kernel`'s dtype.

    Args:
      kernel: `[..., O]`, output channels last (HWIO conv kernels, `[2, 2, I, O]`
        deconvolution kernels).
      bias: `[O]`, or None for a map without bias (0).
      mean, var: the BatchNorm's running statistics, `[O]`.
      epsilon: the BatchNorm's own epsilon.
      scale, offset: its learned `scale` and `bias`, `[O]`; None for a BatchNorm without
        them (1 and 0).

    Returns:
      `(kernel [..., O], bias [O])`.
    """
    channels = kernel.shape[-1]
    stats = {"mean": mean, "var": var, "scale": scale, "offset": offset, "bias": bias}
    for name, value in stats.items():
        if value is not None and jnp.shape(value) != (channels,):
            raise ValueError(f"fold_into_kernel: {name} must be [{channels}] (the kernel's "
                             f"output channels), got shape {jnp.shape(value)}")
    f32 = jnp.float32
    factor = lax.rsqrt(jnp.asarray(var, f32) + epsilon)
    if scale is not None:
        factor = factor * jnp.asarray(scale, f32)
    folded_bias = (-jnp.asarray(mean, f32) if bias is None
                   else jnp.asarray(bias, f32) - jnp.asarray(mean, f32)) * factor
    if offset is not None:
        folded_bias = folded_bias + jnp.asarray(offset, f32)
    folded_kernel = jnp.asarray(kernel, f32) * factor
    return folded_kernel.astype(kernel.dtype), folded_bias.astype(kernel.dtype)
