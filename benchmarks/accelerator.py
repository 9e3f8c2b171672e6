"""Accelerator readiness: PSPNet-R50 bf16 train-step MFU, ICNet fps, peak device memory.

    python -m benchmarks.accelerator [--batch 8] [--peak_tflops T] [--seconds 10]
    python -m benchmarks.accelerator --smoke     # tiny sizes; runs on a CPU (tests use it)

Meant for one GPU or TPU and under 5 minutes there (two compiles of a ResNet-50 step, two of
ICNet, ~`--seconds` of timing each):

- PSPNet (deep-stem ResNet-50, output stride 8, auxiliary head 0.4, 19 classes), SGD momentum
  train step (`lapseg.train.step`) with `dtype=bfloat16` (parameters f32), batch `--batch`
  at 512 x 512. FLOPs per step from XLA's `compiled.cost_analysis()` of the compiled step;
  MFU = FLOPs per step / step time / peak, the peak being the device's dense bf16 FLOP/s
  from `PEAK_TFLOPS` (matched on `device.device_kind`) or `--peak_tflops`;
- ICNet (configs/cityscapes_icnet_resnet50.py's model) eval forward at 1024 x 2048, batch 1,
  frames per second in float32 and in bfloat16;
- peak device memory, `device.memory_stats()['peak_bytes_in_use']` where the backend has it
  (GPU, TPU; not the CPU), and XLA's own estimate for each program
  (`compiled.memory_analysis()`: arguments + outputs + temporaries).

`--smoke`: a quarter-width ResNet-18 PSPNet at 64 x 64, ICNet on a quarter-width
ResNet-18 at 128 x 256, a few steps: checks the script end to end on any device. On a CPU
the output says so, and MFU is only printed with `--peak_tflops`.
"""

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lapseg import losses, models
from lapseg.train import optim
from lapseg.train import state as state_lib
from lapseg.train import step as step_lib

# Dense (not 2:4 sparse) bf16 peak TFLOP/s per JAX device, from the vendors' data sheets,
# matched in order as lower-case substrings of `device.device_kind`. TPU v2/v3 expose one
# device per core (half a chip).
PEAK_TFLOPS = (
    ("h100 pcie", 756.0),
    ("h100", 989.0),
    ("h200", 989.0),
    ("h800", 989.0),
    ("a100", 312.0),
    ("a800", 312.0),
    ("l40s", 362.0),
    ("l4", 121.0),
    ("v100", 125.0),  # fp16 tensor cores; V100 has no bf16 units, XLA emulates bf16 there
    ("tpu v6 lite", 918.0),
    ("tpu v6e", 918.0),
    ("tpu v5 lite", 197.0),
    ("tpu v5e", 197.0),
    ("tpu v5p", 459.0),
    ("tpu v5", 459.0),
    ("tpu v4", 275.0),
    ("tpu v3", 61.5),
    ("tpu v2", 23.0),
)

FULL = {
    "pspnet_label": "PSPNet-R50",
    "pspnet": {"backbone": "resnet50", "backbone_kwargs": {"deep_stem": True, "output_stride": 8}},
    "pspnet_size": (512, 512),
    "icnet_size": (1024, 2048),
    "classes": 19,
}
SMOKE = {
    "pspnet_label": "PSPNet (ResNet-18 x0.25)",
    "pspnet": {"backbone": "resnet18", "backbone_kwargs": {"output_stride": 8, "width": 0.25},
               "channels": 64, "aux_channels": 32},
    "pspnet_size": (64, 64),
    "icnet_size": (128, 256),
    "icnet": {"backbone": "resnet18", "backbone_kwargs": {"width": 0.25}},
    "classes": 19,
}


def peak_tflops(device, override=None):
    """`(TFLOP/s, where from)`; `(None, reason)` when unknown."""
    if override:
        return float(override), "--peak_tflops"
    kind = device.device_kind.lower()
    for key, value in PEAK_TFLOPS:
        if key in kind:
            return value, f"table entry '{key}'"
    return None, f"no entry for device kind {device.device_kind!r} (pass --peak_tflops)"


def _flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return (cost or {}).get("flops")


def _xla_memory(compiled) -> float | None:
    """Bytes XLA plans for the program: arguments + outputs + temporaries (aliased once)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # pylint: disable=broad-except
        return None
    if m is None:
        return None
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes)


def _peak_device_memory(device) -> int | None:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return (stats or {}).get("peak_bytes_in_use")


def _time(fn, seconds: float, min_runs: int, max_runs: int) -> tuple[float, int]:
    """Median seconds per call of `fn` (synchronised), over >= min_runs and ~`seconds`."""
    times = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < seconds):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def pspnet_train(sizes, args, device) -> dict:
    """MFU of the PSPNet bf16 train step."""
    mesh = step_lib.make_mesh(1)
    model = models.create_model("pspnet", num_classes=sizes["classes"], dtype=jnp.bfloat16,
                                **sizes["pspnet"])
    config = ml_collections.ConfigDict({"learning_rate": 0.01, "momentum": 0.9, "nesterov": False,
                                        "weight_decay": 1e-4, "warmup_steps": 0, "lr_power": 0.9,
                                        "lr_multipliers": ()})
    tx = optim.make_optimizer(config, 1000)
    loss_fn = losses.for_model("pspnet", ml_collections.ConfigDict(
        {"weights": {"logits": 1.0, "aux": 0.4}, "class_weights": None}), ignore_label=255)
    shape = (args.batch, *sizes["pspnet_size"], 3)
    state = jax.jit(lambda rng: state_lib.create_train_state(
        state_lib.init_variables(model, rng, shape), tx), out_shardings=step_lib.replicated(mesh))(
        jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = step_lib.shard_batch({
        "image": rng.standard_normal(shape, dtype=np.float32),
        "label": rng.integers(0, sizes["classes"], shape[:3], dtype=np.int32)}, mesh)
    step = step_lib.jit_train_step(mesh, model=model, tx=tx, loss_fn=loss_fn, ignore_label=255)
    key = jax.random.key(1)
    start = time.perf_counter()
    compiled = step.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - start
    flops = _flops(compiled)
    holder = {"state": state}

    def run():
        holder["state"], metrics = compiled(holder["state"], batch, key)
        return metrics

    for _ in range(2):  # warm up
        jax.block_until_ready(run())
    seconds, runs = _time(run, args.seconds, 3, 10_000)
    peak, source = peak_tflops(device, args.peak_tflops)
    result = {"batch": args.batch, "size": sizes["pspnet_size"], "compile_s": compile_s,
              "step_ms": 1e3 * seconds, "steps_timed": runs, "images_per_s": args.batch / seconds,
              "flops_per_step": flops, "achieved_tflops": flops / seconds / 1e12 if flops else None,
              "peak_tflops": peak, "peak_source": source,
              "xla_memory_bytes": _xla_memory(compiled),
              "loss": float(jax.device_get(run()["loss"]))}
    result["mfu"] = (result["achieved_tflops"] / peak) if (peak and flops) else None
    return result


def icnet_fps(sizes, args, dtype) -> dict:
    """Frames per second of ICNet's eval forward, batch 1."""
    kwargs = sizes.get("icnet")
    if kwargs is None:
        from benchmarks import flops as flops_lib  # pylint: disable=import-outside-toplevel

        config = flops_lib._load_config("cityscapes_icnet_resnet50")  # pylint: disable=protected-access
        kwargs = config.model_kwargs.to_dict()
    model = models.create_model("icnet", num_classes=sizes["classes"], dtype=dtype, **kwargs)
    images = jnp.asarray(np.random.default_rng(1).standard_normal(
        (1, *sizes["icnet_size"], 3), dtype=np.float32))
    variables = jax.jit(lambda: model.init(jax.random.key(0), images, train=False))()
    forward = jax.jit(lambda v, x: jnp.argmax(model.apply(v, x)["logits"], -1))
    start = time.perf_counter()
    compiled = forward.lower(variables, images).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(variables, images))
    seconds, runs = _time(lambda: compiled(variables, images), args.seconds, 3, 10_000)
    return {"dtype": jnp.dtype(dtype).name, "size": sizes["icnet_size"], "compile_s": compile_s,
            "ms": 1e3 * seconds, "fps": 1.0 / seconds, "runs": runs,
            "flops": _flops(compiled), "xla_memory_bytes": _xla_memory(compiled)}


def _gib(value):
    return "n/a" if value is None else f"{value / 2**30:.2f} GiB"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (any device, e.g. CPU)")
    parser.add_argument("--batch", type=int, default=None, help="PSPNet batch (8; smoke: 2)")
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help="the device's peak bf16 TFLOP/s, if not in the table")
    parser.add_argument("--seconds", type=float, default=None,
                        help="timing budget per measurement (10; smoke: 1)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    args.batch = args.batch or (2 if args.smoke else 8)
    args.seconds = args.seconds if args.seconds is not None else (1.0 if args.smoke else 10.0)
    device = jax.devices()[0]
    started = time.perf_counter()
    on_cpu = device.platform == "cpu"
    print(f"device: {device.device_kind} ({device.platform}), {jax.device_count()} device(s), "
          f"jax {jax.__version__}" + ("; smoke sizes" if args.smoke else ""))
    if on_cpu:
        print("NOTE: this is a CPU run, not an accelerator: the numbers below only show that the "
              "script works" + ("" if args.smoke else " (use --smoke on a CPU)"))

    train = pspnet_train(sizes, args, device)
    flops = train["flops_per_step"]
    height, width = train["size"]
    print(f"{sizes['pspnet_label']} bf16 train step, batch {train['batch']} at {height}x{width}: "
          f"{train['step_ms']:.1f} ms/step ({train['images_per_s']:.1f} img/s, {train['steps_timed']} "
          f"steps; compile {train['compile_s']:.0f} s)")
    if flops:
        print(f"  XLA cost analysis: {flops / 1e9:.1f} GFLOP/step -> {train['achieved_tflops']:.2f} TFLOP/s")
    if train["mfu"] is not None:
        print(f"  MFU {100 * train['mfu']:.1f}% of {train['peak_tflops']:.0f} TFLOP/s "
              f"({train['peak_source']})")
    else:
        print(f"  MFU: n/a, {train['peak_source'] if not train['peak_tflops'] else 'no FLOP count'}")
    results = {"device": device.device_kind, "platform": device.platform, "smoke": args.smoke,
               "pspnet_train": train, "icnet": []}
    for dtype in (jnp.float32, jnp.bfloat16):
        fps = icnet_fps(sizes, args, dtype)
        results["icnet"].append(fps)
        print(f"ICNet eval {fps['size'][0]}x{fps['size'][1]}, batch 1, {fps['dtype']}: "
              f"{fps['fps']:.1f} fps ({fps['ms']:.1f} ms, {fps['runs']} runs; "
              f"{(fps['flops'] or 0) / 1e9:.1f} GFLOP; compile {fps['compile_s']:.0f} s)")
    results["peak_device_memory_bytes"] = _peak_device_memory(device)
    print(f"peak device memory: {_gib(results['peak_device_memory_bytes'])}"
          + (" (memory_stats() has none on this backend)" if results["peak_device_memory_bytes"] is None
             else " (memory_stats peak_bytes_in_use, whole run)"))
    print(f"XLA planned memory: PSPNet train step {_gib(train['xla_memory_bytes'])}, ICNet f32 "
          f"{_gib(results['icnet'][0]['xla_memory_bytes'])}")
    results["seconds"] = time.perf_counter() - started
    print(f"total {results['seconds']:.0f} s")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2, default=str)
    return results


if __name__ == "__main__":
    main()
