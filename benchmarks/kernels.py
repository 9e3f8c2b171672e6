"""Forward + backward timings of the two einsum kernels against their convolution baselines.

    python -m benchmarks.kernels [--repeats 7] [--reconstruct 8,32,32,10,21,4] [--dupsample 8,32,32,64,16,21]
                                 [--boundary 16,96,96,5,9]

For each kernel: `jax.jit` of the output and the VJP of all inputs for a fixed random
cotangent, timed after a warm-up call as the median of `--repeats` runs (with
`block_until_ready`), next to its baseline:

- `lapseg.ops.basis.reconstruct` (LRR, `[N, H, W, K, C] x [2s, 2s, K, C]`) against the
  grouped transposed convolution it equals (kernel 2s, stride s, padding s/2, groups C),
  written as `lax.conv_general_dilated` with `lhs_dilation=s`, flipped kernel and
  `feature_group_count=C`: what `lax.conv_transpose` lowers to (it has no groups argument).
- `lapseg.ops.dupsample.dupsample` (`[N, h, w, L] x [L, r*r*C]`) against a 1x1
  convolution followed by `depth_to_space`.
- `lapseg.ops.boundary.boundary_mask` (LRR's `maxpool(p) + maxpool(-p)`, separable pools as
  shifted-slice selections differentiated through the argmax) against the same mask from
  fused `size x size` `reduce_window` max-pools, from separable `reduce_window` pools, and
  from the shifted-slice `jnp.maximum`s differentiated by autodiff (lapseg's before issue
  25); then the same mask on class planes `[N, C, H, W]` (`axes=(2, 3)`, what LRR's decoder
  computes) against NHWC, and the class-by-class softmax (`boundary.softmax`) against
  `jax.nn.softmax` over the class axis, on planes and on NHWC.

Achieved bandwidth = bytes of inputs + cotangent + outputs + gradients / time, next to
the machine's copy bandwidth measured in the same run (`x + 1` on a large array: one
read and one write). Timings on a shared CPU are noisy: compare ratios within one run.

Notes from writing `reconstruct` (2-core AMD EPYC VM, shared with other jobs; medians of
interleaved runs, forward / forward+backward in ms at the default LRR size):
- the direct einsum `nijuvkc,uavbkc->niajbc` straight on the NHWKC layout: about
  45-65 / 85-125. The class axis c is a batch axis of the dot and minor in every operand,
  so XLA transposes the stacked neighbours Z (4x the input, 27 MB here) to class-major
  with the minor k axis moving (`compile().as_text()` shows a copy of
  f32[21,10,2,2,8,33,33] before the dot), and swaps the dot's operands.
- four einsums, one per neighbour shift, summed: slower (about 120 / 300).
- contracting k first into full 2s x 2s tiles, then overlap-adding four shifted slices:
  much slower (about 100 / 340): the tiles are 4x the output.
- broadcast multiply + reduce with c kept minor (no dot): forward comparable, backward
  pathological (about 2300 ms).
- dense matmul with a block-diagonal (over c) kernel: no transposes but 21x the flops,
  about 160 / 290.
- kept: transpose x (not Z) to class-major, stack the four shifts there, one einsum
  `cnijuvk,cuvkab->cnijab` (a plain batched matmul per class, no operand swap), transpose
  the output back: about 30-35 / 50-80, i.e. 1.5-2x faster than the NHWKC einsum, and
  far faster than the grouped convolution (about 700-1400 / 950-1900), which XLA's CPU
  backend lowers poorly with input dilation and groups.
"""

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lapseg.ops import basis, boundary, dupsample

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def grouped_conv_transpose(coeffs, kernel, precision=None):
    """Baseline for `reconstruct`: the grouped transposed convolution, as XLA runs it.

    The transposed convolution (kernel 2s, stride s, padding s/2, one group per class)
    written as the convolution it is the adjoint of: dilate the input by the stride, pad
    `k - 1 - padding`, correlate with the spatially flipped kernel, `feature_group_count=C`
    (tests/ops/test_basis.py checks `reconstruct` against it).
    """
    n, h, w, num_bases, channels = coeffs.shape
    size = kernel.shape[0]
    stride = size // 2
    lhs = jnp.swapaxes(coeffs, 3, 4).reshape(n, h, w, channels * num_bases)
    rhs = jnp.flip(kernel, (0, 1)).reshape(size, size, num_bases, channels)
    edge = size - 1 - stride // 2
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides=(1, 1),
        padding=((edge, edge), (edge, edge)),
        lhs_dilation=(stride, stride),
        dimension_numbers=_DIMENSIONS,
        feature_group_count=channels,
        precision=precision,
    )


def conv1x1_depth_to_space(features, w, ratio):
    """Baseline for `dupsample`: 1x1 convolution to r*r*C channels, then DCR depth_to_space."""
    y = lax.conv_general_dilated(features, w[None, None], (1, 1), "VALID", dimension_numbers=_DIMENSIONS)
    return dupsample.depth_to_space(y, ratio)


def forward_backward(fn):
    """`(args..., cotangent) -> (output, gradients of every arg)`, jitted."""

    def run(*args):
        *inputs, cotangent = args
        out, vjp = jax.vjp(fn, *inputs)
        return out, vjp(cotangent)

    return jax.jit(run)


def median_seconds(fn, args, repeats):
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fused_boundary_mask(prob, size):
    """Baseline for `boundary_mask`: one 2-D `size x size` max-pool per sign."""
    pad = size // 2

    def pool(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, size, size, 1), (1, 1, 1, 1),
                                 ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    return pool(prob) + pool(-prob)


def separable_reduce_window_mask(prob, size):
    """Second baseline for `boundary_mask`: a `size x 1` then a `1 x size` `reduce_window`
    max-pool per sign (lapseg's implementation before the shifted-slice maxima)."""
    pad = size // 2

    def pool(x):
        for window in ((1, size, 1, 1), (1, 1, size, 1)):
            padding = tuple((pad, pad) if w > 1 else (0, 0) for w in window)
            x = lax.reduce_window(x, -jnp.inf, lax.max, window, (1, 1, 1, 1), padding)
        return x

    return pool(prob) + pool(-prob)


def doubling_maximum_mask(prob, size):
    """Third baseline for `boundary_mask`: lapseg's before issue 25, the same separable pools
    (`jnp.maximum`s of shifted slices, log2(size) + 1 per axis, differentiated by autodiff,
    each maximum's gradient halved between tied operands) on p and -p apart."""
    return boundary._max_pool_same(prob, size) + boundary._max_pool_same(-prob, size)


def compare_layouts(name, planes_fn, nhwc_fn, planes_input, repeats):
    """Forward + backward of the same function on class planes `[N, C, H, W]` and on NHWC."""
    rng = np.random.default_rng(1)
    nhwc_input = jnp.transpose(planes_input, (0, 2, 3, 1))
    times = {}
    for label, fn, x in (("planes", planes_fn, planes_input), ("NHWC", nhwc_fn, nhwc_input)):
        cotangent = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
        times[label] = median_seconds(forward_backward(fn), (x, cotangent), repeats)
    print(f"{name}: planes {tuple(planes_input.shape)} against NHWC {tuple(nhwc_input.shape)}")
    for label, seconds in times.items():
        print(f"  {label:14s} fwd+bwd {seconds * 1e3:9.2f} ms")
    print(f"  ratio planes / NHWC = {times['planes'] / times['NHWC']:.3f}")


def copy_bandwidth(megabytes, repeats):
    """Bytes per second of `x + 1` on a `megabytes` f32 array (one read, one write)."""
    x = jnp.zeros((megabytes * 2**20 // 4,), jnp.float32)
    seconds = median_seconds(jax.jit(lambda x: x + 1), (x,), repeats)
    return 2 * x.nbytes / seconds


def compare(name, kernel, baseline, inputs, cotangent, repeats, bandwidth):
    args = (*inputs, cotangent)
    kernel_fb, baseline_fb = forward_backward(kernel), forward_backward(baseline)
    out, grads = kernel_fb(*args)
    max_err = float(jnp.max(jnp.abs(out - baseline_fb(*args)[0])))
    nbytes = sum(a.nbytes for a in args) + out.nbytes + sum(g.nbytes for g in grads)
    t_kernel = median_seconds(kernel_fb, args, repeats)
    t_base = median_seconds(baseline_fb, args, repeats)
    shapes = " x ".join(str(tuple(a.shape)) for a in inputs)
    print(f"{name}: {shapes} -> {tuple(out.shape)}, max |kernel - baseline| = {max_err:.1e}")
    for label, seconds in (("lapseg kernel", t_kernel), ("baseline", t_base)):
        gbs = nbytes / seconds / 1e9
        print(
            f"  {label:14s} fwd+bwd {seconds * 1e3:9.2f} ms   {gbs:6.2f} GB/s"
            f" ({100 * gbs * 1e9 / bandwidth:5.1f}% of copy bandwidth)"
        )
    print(f"  ratio kernel / baseline = {t_kernel / t_base:.3f}")


def _ints(text):
    return tuple(int(v) for v in text.split(","))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--reconstruct", type=_ints, default=(8, 32, 32, 10, 21, 4), help="N,H,W,K,C,s")
    parser.add_argument("--dupsample", type=_ints, default=(8, 32, 32, 64, 16, 21), help="N,h,w,L,r,C")
    parser.add_argument("--boundary", type=_ints, default=(16, 96, 96, 5, 9), help="N,H,W,C,size")
    parser.add_argument("--bandwidth-mb", type=int, default=512, help="array size for the copy test")
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    def normal(*shape):
        return jnp.asarray(rng.standard_normal(shape), jnp.float32)

    bandwidth = copy_bandwidth(args.bandwidth_mb, args.repeats)
    platform = jax.devices()[0].platform
    print(f"{platform}: copy bandwidth {bandwidth / 1e9:.2f} GB/s ({args.bandwidth_mb} MB array, x + 1)")

    n, h, w, k, c, s = args.reconstruct
    compare(
        "reconstruct",
        basis.reconstruct,
        grouped_conv_transpose,
        (normal(n, h, w, k, c), normal(2 * s, 2 * s, k, c)),
        normal(n, s * h, s * w, c),
        args.repeats,
        bandwidth,
    )
    n, h, w, num_dims, r, c = args.dupsample
    compare(
        "dupsample",
        lambda f, m: dupsample.dupsample(f, m, r),
        lambda f, m: conv1x1_depth_to_space(f, m, r),
        (normal(n, h, w, num_dims), normal(num_dims, r * r * c)),
        normal(n, r * h, r * w, c),
        args.repeats,
        bandwidth,
    )
    n, h, w, c, size = args.boundary
    for name, baseline in (("boundary_mask", fused_boundary_mask),
                           ("boundary_mask vs separable reduce_window", separable_reduce_window_mask),
                           ("boundary_mask vs jnp.maximum doubling (autodiff)", doubling_maximum_mask)):
        compare(
            name,
            lambda p: boundary.boundary_mask(p, size),
            functools.partial(baseline, size=size),
            (jax.nn.softmax(normal(n, h, w, c), axis=-1),),
            normal(n, h, w, c),
            args.repeats,
            bandwidth,
        )
    planes = jax.nn.softmax(normal(n, c, h, w), axis=1)
    compare_layouts("boundary_mask", lambda p: boundary.boundary_mask(p, size, axes=(2, 3)),
                    lambda p: boundary.boundary_mask(p, size), planes, args.repeats)
    compare_layouts("boundary_mask vs jnp.maximum doubling (autodiff) on NHWC",
                    lambda p: boundary.boundary_mask(p, size, axes=(2, 3)),
                    functools.partial(doubling_maximum_mask, size=size), planes, args.repeats)
    logits = normal(n, c, h, w)
    compare_layouts("boundary.softmax", lambda z: boundary.softmax(z, 1),
                    lambda z: jax.nn.softmax(z, axis=-1), logits, args.repeats)
    compare_layouts("jax.nn.softmax over the class axis", lambda z: jax.nn.softmax(z, axis=1),
                    lambda z: jax.nn.softmax(z, axis=-1), logits, args.repeats)


if __name__ == "__main__":
    main()
