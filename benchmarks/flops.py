"""Inference FLOPs per model: total, convolutions only, and resizes, by XLA cost analysis.

    python -m benchmarks.flops [--models icnet,pspnet50_half,...] [--resize auto|dense|taps]
    python -m benchmarks.flops --timing [--rounds 5]

Each model is built as its paper-recipe config builds it (`configs/cityscapes_*.py`: the
Cityscapes models at the 1024 x 2048 evaluation size, 19 classes; FCN-8s and LRR on VGG-16
at PASCAL VOC's 500 x 500, 21 classes), its eval-mode `'logits'` program jitted on abstract
variables (no weights are allocated), lowered and compiled for this machine's backend.
Nothing is executed. Columns:

- total: `compiled.cost_analysis()['flops']` of the whole program (XLA counts a multiply-add
  as 2 FLOPs; elementwise ops, BN and ReLU count too);
- conv: 2 x the multiply-adds of every `conv_general_dilated` (over the taps that read the
  input, not its padding, as XLA counts) and `dot_general` (a 1x1 conv, a deconvolution)
  outside the resizes, in the traced program without what does not reach the logits;
- resizes: the XLA cost of each `lapseg.ops.resize` call (`resize_bilinear`,
  `adaptive_avg_pool`) that reaches the logits, each compiled alone (with `--resize
  dense`, the dense-matrix resizes lapseg used before the two-tap form).

XLA may compute part of a convolution whose input is partly a broadcast (a pyramid bin of
1) more cheaply, so total - conv - resizes, the elementwise rest, can come out slightly low.

ICNet is compared like for like with a half-width PSPNet-50 (`pspnet50_half`: the same
half-width deep-stem ResNet-50 at output stride 8 and a 256-wide head, ICNet's width) at the
same 1024 x 2048. The ICNet paper's "~5x" is a measured *time* (and memory) ratio on a GPU,
not a FLOPs ratio.

`--timing`: CPU wall time of ICNet's resizes at 1024 x 2048 and of the default training
sizes, 'dense' against 'auto' (the two-tap form on long axes), forward and forward +
backward, in interleaved rounds (medians), plus the whole ICNet eval forward at 512 x 1024
with each.
"""

import argparse
import contextlib
import functools
import importlib.util
import math
import os
import statistics
import time

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
from jax.interpreters import partial_eval as pe

from lapseg import models
from lapseg.ops import resize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CITYSCAPES = ((1024, 2048), 19)
VOC = ((500, 500), 21)

# key -> (label, config file or None, model name (without a config), model kwargs laid over
# the config's, (size, classes)).
MODELS = {
    "icnet": ("ICNet (ResNet-50 x0.5)", "cityscapes_icnet_resnet50", None, None, CITYSCAPES),
    "pspnet50_half": ("PSPNet-50 x0.5 (ICNet's widths)", "cityscapes_pspnet_resnet50", None,
                      {"backbone_kwargs": {"deep_stem": True, "output_stride": 8, "width": 0.5},
                       "channels": 256}, CITYSCAPES),
    "pspnet50": ("PSPNet-50", "cityscapes_pspnet_resnet50", None, None, CITYSCAPES),
    "dsrl": ("DSRL (PSPNet-50, x2 SSSR)", "cityscapes_dsrl_pspnet", None, None, CITYSCAPES),
    "dupsampling": ("DUpsampling (ResNet-50)", "cityscapes_dupsampling_resnet50", None, None,
                    CITYSCAPES),
    "gcn": ("GCN (ResNet-101, k=25)", "cityscapes_gcn_resnet101", None, None, CITYSCAPES),
    "refinenet": ("RefineNet (ResNet-101, x1.2)", "cityscapes_refinenet_resnet101", None, None,
                  CITYSCAPES),
    "fcn8s": ("FCN-8s (VGG-16)", None, "fcn8s", {"backbone": "vgg16"}, VOC),
    "lrr": ("LRR-4x (VGG-16)", None, "lrr", {"backbone": "vgg16"}, VOC),
}
DEFAULT_MODELS = ",".join(MODELS)


def _load_config(name: str):
    path = os.path.join(ROOT, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_flops_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def build(key: str):
    """`(label, model, (size, classes))` of `MODELS[key]`."""
    label, config_name, model_name, overrides, geometry = MODELS[key]
    kwargs = {}
    if config_name is not None:
        config = _load_config(config_name)
        model_name = config.model
        kwargs = config.model_kwargs.to_dict()
    for field, value in (overrides or {}).items():
        kwargs[field] = {**kwargs.get(field, {}), **value} if isinstance(value, dict) else value
    return label, models.create_model(model_name, num_classes=geometry[1], **kwargs), geometry


RESIZE_PREFIX = "lapseg_resize_"


@contextlib.contextmanager
def resizes(mode: str, calls: list | None = None):
    """Within: lapseg's float resizes forced to a method ('dense' / 'taps'; 'auto' leaves
    them as they are). With `calls`, each resize call is also wrapped in a `jax.jit` named
    `lapseg_resize_<i>` and `calls[i]` is `(function, input ShapeDtypeStruct)`, so that the
    calls that reach an output can be found in a (dead-code-eliminated) jaxpr."""
    saved = resize.resize_bilinear, resize.adaptive_avg_pool
    functions = {"resize_bilinear": saved[0], "adaptive_avg_pool": saved[1]}
    if mode in ("dense", "taps"):
        functions["resize_bilinear"] = functools.partial(saved[0], method=mode)

    def recorded(fn):
        def call(x, *args, **kwargs):
            def one_resize(v):
                return fn(v, *args, **kwargs)
            one_resize.__name__ = f"{RESIZE_PREFIX}{len(calls)}"
            calls.append((one_resize, jax.ShapeDtypeStruct(x.shape, x.dtype)))
            return jax.jit(one_resize)(x)
        return call

    if calls is not None:
        functions = {name: recorded(fn) for name, fn in functions.items()}
    resize.resize_bilinear = functions["resize_bilinear"]
    resize.adaptive_avg_pool = functions["adaptive_avg_pool"]
    try:
        yield
    finally:
        resize.resize_bilinear, resize.adaptive_avg_pool = saved


def _abstract_variables(model):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))


def _xla_flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost).get("flops", 0.0)  # absent: none


def _subjaxprs(params):
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jax.extend.core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax.extend.core.Jaxpr):
                yield item


def _valid_taps(in_size, out_size, kernel, stride, padding, lhs_dilation, rhs_dilation) -> int:
    """(output, kernel tap) pairs of one spatial axis that read an input, not padding or a
    transposed conv's inserted zeros (what XLA's cost analysis counts)."""
    q = (np.arange(out_size)[:, None] * stride + np.arange(kernel)[None, :] * rhs_dilation
         - padding[0])
    return int(np.sum((q >= 0) & (q <= (in_size - 1) * lhs_dilation) & (q % lhs_dilation == 0)))


def _conv_flops(eqn) -> float:
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    out = eqn.outvars[0].aval.shape
    numbers = eqn.params["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = numbers.lhs_spec, numbers.rhs_spec, numbers.out_spec
    taps = 1
    for j in range(len(lhs_spec) - 2):
        lhs_dilation = (eqn.params["lhs_dilation"] or (1,) * 8)[j]
        rhs_dilation = (eqn.params["rhs_dilation"] or (1,) * 8)[j]
        taps *= _valid_taps(lhs[lhs_spec[2 + j]], out[out_spec[2 + j]], rhs[rhs_spec[2 + j]],
                            eqn.params["window_strides"][j], eqn.params["padding"][j],
                            lhs_dilation, rhs_dilation)
    # batch x valid taps x input features per group x output features
    batch = out[out_spec[0]]
    return 2.0 * batch * taps * rhs[rhs_spec[1]] * rhs[rhs_spec[0]]


def _resize_index(eqn):
    name = str(eqn.params.get("name", ""))
    return int(name[len(RESIZE_PREFIX):]) if name.startswith(RESIZE_PREFIX) else None


def matmul_flops(jaxpr, resize_calls: set | None = None) -> float:
    """2 x multiply-adds of every `conv_general_dilated` (valid taps only, as XLA counts) and
    `dot_general` in `jaxpr`, recursing into sub-jaxprs (jit, custom_jvp, ...) except the
    recorded resize calls (`resizes(..., calls)`), whose indices go to `resize_calls`."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if (index := _resize_index(eqn)) is not None:
            if resize_calls is not None:
                resize_calls.add(index)
            continue
        if name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
        if name == "cond" and eqn.params.get("branches_platforms"):
            # `lax.platform_dependent` (the CPU conv fast paths): one branch runs, so count
            # the default one (XLA's convolutions), as XLA counts for the default platform.
            platforms = eqn.params["branches_platforms"]
            branch = eqn.params["branches"][platforms.index(None) if None in platforms else -1]
            total += matmul_flops(branch.jaxpr, resize_calls)
            continue
        for sub in _subjaxprs(eqn.params):
            total += matmul_flops(sub, resize_calls)
    return total


def inference_cost(key: str, resize_mode: str = "auto") -> dict:
    """FLOPs of `MODELS[key]`'s eval-mode logits on one image at its size."""
    label, model, (size, classes) = build(key)
    variables = _abstract_variables(model)
    images = jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)

    def logits_fn():
        # A new function object per trace: jit caches traces by function, and each trace
        # must see the resize functions patched at that time.
        return lambda v, x: model.apply(v, x)["logits"]

    with resizes(resize_mode):
        total = _xla_flops(logits_fn(), variables, images)
    calls = []
    with resizes(resize_mode, calls):
        jaxpr = jax.make_jaxpr(logits_fn())(variables, images).jaxpr
    # Without what does not reach the logits (PSPNet's auxiliary head), as XLA drops it.
    jaxpr = pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars))[0]
    live = set()
    conv = matmul_flops(jaxpr, live)
    resize_flops = sum(_xla_flops(*calls[index]) for index in sorted(live))
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(variables["params"]))
    return {"label": label, "size": size, "classes": classes, "total": total, "conv": conv,
            "resize": resize_flops, "params": params}


def print_table(rows: list, resize_mode: str) -> None:
    print(f"eval FLOPs of one image, XLA cost analysis ({jax.default_backend()} backend), "
          f"resizes '{resize_mode}'; GFLOPs, a multiply-add = 2")
    print("| model | input, classes | total | conv only | resizes | params (M) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['label']} | {row['size'][0]}x{row['size'][1]}, {row['classes']} | "
              f"{row['total'] / 1e9:.1f} | {row['conv'] / 1e9:.1f} | {row['resize'] / 1e9:.2f} | "
              f"{row['params'] / 1e6:.2f} |")
    by_key = {row["key"]: row for row in rows}
    if "icnet" in by_key:
        icnet = by_key["icnet"]
        for key in ("pspnet50_half", "pspnet50"):
            if key in by_key:
                other = by_key[key]
                print(f"{other['label']} / ICNet at {icnet['size'][0]}x{icnet['size'][1]}: "
                      f"{other['conv'] / icnet['conv']:.1f}x conv FLOPs, "
                      f"{other['total'] / icnet['total']:.1f}x total FLOPs")
        print("(the ICNet paper's ~5x is a measured inference time and memory ratio, not FLOPs)")


# ------------------------------------------------------------------------------- timing

# (label, input shape, output size, align_corners): ICNet's resizes at 1024 x 2048 and the
# sizes of the default job and a 512 x 512 PSPNet (`--timing`).
TIMING_CASES = [
    ("ICNet image x1/2, 1024x2048x3", (1, 1024, 2048, 3), (512, 1024), True),
    ("ICNet conv3_1 x1/2, 128x256x128", (1, 128, 256, 128), (64, 128), True),
    ("ICNet sub124 x2, 128x256x128", (1, 128, 256, 128), (256, 512), True),
    ("ICNet logits x4, 256x512x19", (1, 256, 512, 19), (1024, 2048), True),
    ("PSPNet logits x8, b2 64x64x21", (2, 64, 64, 21), (512, 512), True),
    ("PPM bin 6 -> 64x64, b2 x512", (2, 6, 6, 512), (64, 64), True),
    ("shapes-size x4, b16 24x24x8", (16, 24, 24, 8), (96, 96), False),
]


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def timing(rounds: int, methods=("dense", "auto")) -> None:
    print(f"CPU timing ({jax.devices()[0].device_kind}), interleaved rounds: median ms "
          f"over {rounds} rounds")
    print("| resize | " + " | ".join(f"{m} fwd | {m} fwd+bwd" for m in methods) + " | auto/dense fwd+bwd |")
    print("|---|" + "---|" * (2 * len(methods) + 1))
    for label, shape, size, corners in TIMING_CASES:
        x = jnp.asarray(np.random.default_rng(0).standard_normal(shape, dtype=np.float32))
        fns = {}
        for method in methods:
            def fwd(v, method=method):
                return resize.resize_bilinear(v, size, corners, method=method)
            fns[(method, "fwd")] = jax.jit(fwd)
            fns[(method, "bwd")] = jax.jit(jax.grad(lambda v, f=fwd: jnp.sum(f(v) ** 2)))
        for fn in fns.values():
            _timed(fn, x)  # compile
        times = {k: [] for k in fns}
        for _ in range(rounds):
            for key, fn in fns.items():
                times[key].append(_timed(fn, x))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        cells = " | ".join(f"{med[(m, 'fwd')]:.1f} | {med[(m, 'bwd')]:.1f}" for m in methods)
        if max(shape[1:3]) <= resize.DENSE_MAX_INPUT:
            label += " (auto is dense here: the same program twice)"
        print(f"| {label} | {cells} | {med[(methods[-1], 'bwd')] / med[(methods[0], 'bwd')]:.2f} |",
              flush=True)
    # The whole ICNet forward, eval mode, at half resolution (random weights).
    _, model, _ = build("icnet")
    images = jnp.asarray(np.random.default_rng(1).standard_normal((1, 512, 1024, 3), np.float32))
    fns = {}
    for method in methods:
        with resizes(method):
            variables = jax.jit(lambda m=model: m.init(jax.random.key(0), images[:, :64, :64]))()
            fn = jax.jit(lambda v, x, m=model: m.apply(v, x)["logits"])
            fns[method] = functools.partial(fn, variables)
            _timed(fns[method], images)  # traced and compiled under the patch
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            times[key].append(_timed(fn, images))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print("ICNet eval forward, 1x512x1024 (configs/cityscapes_icnet_resnet50.py, random weights): "
          + ", ".join(f"{m} {med[m]:.0f} ms" for m in methods)
          + f"; auto/dense {med[methods[-1]] / med[methods[0]]:.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help=f"comma-separated keys of {', '.join(MODELS)}")
    parser.add_argument("--resize", default="auto", choices=("auto", "dense", "taps"),
                        help="resize method for the 'total' column ('dense': lapseg before the two-tap form)")
    parser.add_argument("--timing", action="store_true", help="CPU timing of the resize methods instead")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.timing:
        timing(args.rounds)
        return
    rows = []
    for key in args.models.split(","):
        if key not in MODELS:
            parser.error(f"unknown model {key!r}; one of {', '.join(MODELS)}")
        rows.append({"key": key, **inference_cost(key, args.resize)})
        print(f"  {rows[-1]['label']}: {rows[-1]['total'] / 1e9:.1f} GFLOPs", flush=True)
    print_table(rows, args.resize)


if __name__ == "__main__":
    main()
