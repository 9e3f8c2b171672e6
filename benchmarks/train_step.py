"""Train-step throughput per model, and how much of a step waits for input.

    python -m benchmarks.train_step [--models lrr fcn8s ...] [--size 96] [--batch 8] [--steps 10]
    python -m benchmarks.train_step --configs configs/shapes_fcn8s.py configs/default.py \
        'configs/shapes_lrr.py|model_kwargs.boundary_masking=False' [--rounds 5] [--steps 20] \
        [--profile]

`--configs`: config files as `lapseg train --config` takes them (`path[:arg]`), each optionally
followed by `|field=value` overrides (Python literals); the train step each builds (its model,
loss, optimiser, crop and batch) on one fixed batch from its own data, timed in `--rounds`
interleaved rounds of `--steps` steps dispatched back to back: median ms per step, the ratio
to the first config, and the minutes its `num_train_steps` would take at that rate. When the
configs include an FCN-8s and an LRR step, the LRR / FCN-8s step ratio follows (issue 25's
acceptance: at most 1.4): the ratio of the medians and the median of the per-round ratios.

`--profile` then traces `--steps` steps of each config (`jax.profiler`) and sums the XLA:CPU
thunks' times per part of the step, forward and backward apart, by each thunk's `op_name`
(a fusion's is its root's): 'backbone', the decoder's named scopes (LRR's `lrr.*`:
coefficient convs, reconstruction, x2 upsampling, softmax, mask, refinement sum), the loss
(ops outside the model inside the differentiated function; LRR's `lrr.loss`), and the
update (optimiser, gradient norm, metrics); thunks with no `op_name` (layout copies, the
backbone's max-pool) are 'unlabelled'. A loop's thunks count, not the loop's own event.

For each model: images/s of the jitted, sharded train step on a fixed in-memory batch
(the compute ceiling), then the same step fed by the real grain pipeline on the
embedded `shapes` data, with the fraction of wall time spent in `next(loader)`.
The ratio column is each model's images/s against the first model's, measured in the
same run (timings on a shared CPU are noisy; compare ratios, not absolutes).
"""

import argparse
import ast
import collections
import glob
import gzip
import importlib.util
import json
import os
import re
import statistics
import tempfile
import time

import jax
import ml_collections
import numpy as np

from lapseg import bases
from lapseg import data as data_lib
from lapseg import losses, models
from lapseg.losses.lrr import DEFAULT_WEIGHTS
from lapseg.train import config as config_lib
from lapseg.train import fitted as fitted_lib
from lapseg.train import optim
from lapseg.train import state as state_lib
from lapseg.train import step as step_lib

# Small backbones so that a CPU run finishes in minutes; decoder fields at paper defaults.
MODELS = {
    "fcn8s": {"backbone": "resnet18"},
    "lrr": {"backbone": "resnet18"},
    "pspnet": {"backbone": "resnet18", "backbone_kwargs": {"output_stride": 8}},
    "refinenet": {"backbone": "resnet18"},
    "gcn": {"backbone": "resnet18"},
    "dupsampling": {"backbone": "resnet18", "ratio": 32, "dim": 64},
    "icnet": {"backbone": "resnet18"},
}
def _config(name, args, workdir):
    config = config_lib.base_config()
    config.model = name
    config.model_kwargs = ml_collections.ConfigDict(MODELS[name])
    config.data.crop_size = (args.size, args.size)
    config.data.batch_size = args.batch
    config.data.data_dir = workdir
    if name == "lrr":  # a loss at every pyramid level, as the paper trains it
        config.loss.weights = dict(DEFAULT_WEIGHTS)
    config.basis.num_batches = 4  # label-fitted constants (LRR, DUpsampling): a quick fit
    config.basis.path = f"{workdir}/{name}_basis.npz"
    return config


def _time_steps(run_step, batches, steps):
    """Median seconds per step and the fraction of wall time spent fetching batches."""
    times, waits = [], 0.0
    for _ in range(steps):
        start = time.perf_counter()
        batch = next(batches)
        fetched = time.perf_counter()
        jax.block_until_ready(run_step(batch))
        end = time.perf_counter()
        times.append(end - start)
        waits += fetched - start
    return statistics.median(times), waits / sum(times)


def benchmark(name, args, workdir):
    config = _config(name, args, workdir)
    info = data_lib.dataset_info(config.data.dataset)
    model = models.from_config(config, info.num_classes)
    path = fitted_lib.ensure(config, workdir)  # None for a model without fitted constants
    fitted = bases.load(path, num_classes=info.num_classes) if path else {}
    tx = optim.make_optimizer(config.optimizer, 1000)
    loss_fn = losses.for_model(name, config.loss, ignore_label=info.ignore_label)
    mesh = step_lib.make_mesh()
    shape = (args.batch, args.size, args.size, 3)
    state = jax.jit(lambda rng: state_lib.create_train_state(
        bases.attach(state_lib.init_variables(model, rng, shape), fitted), tx),
        out_shardings=step_lib.replicated(mesh))(jax.random.key(0))
    train_step = step_lib.jit_train_step(mesh, model=model, tx=tx, loss_fn=loss_fn,
                                         ignore_label=info.ignore_label)
    holder = {"state": state}
    rng = jax.random.key(1)

    def run_step(batch):
        holder["state"], metrics = train_step(holder["state"], step_lib.shard_batch(batch, mesh), rng)
        return metrics

    loader = iter(data_lib.create_loader(config.data, "train", data_dir=workdir, seed=0,
                                         train=True))
    fixed = next(loader)
    for _ in range(2):  # compile and warm up
        run_step(fixed)
    compute, _ = _time_steps(run_step, iter(lambda: fixed, None), args.steps)
    fed, wait_fraction = _time_steps(run_step, loader, args.steps)
    return args.batch / compute, args.batch / fed, wait_fraction


def load_spec(spec):
    """`path[:arg][|field=value...]` -> the config, overrides applied."""
    path_arg, *overrides = spec.split("|")
    path, _, arg = path_arg.partition(":")
    module_spec = importlib.util.spec_from_file_location(f"_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    for override in overrides:
        field, _, value = override.partition("=")
        *parents, leaf = field.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = ast.literal_eval(value)
    return config


def config_step(spec, workdir):
    """`(run(n) -> seconds per step over n back-to-back steps, config, hlo() -> the step's
    optimised HLO text)` for one `--configs` entry."""
    config = load_spec(spec)
    config.data.data_dir = workdir
    config.basis.path = f"{workdir}/basis_{abs(hash(spec))}.npz"
    info = data_lib.dataset_info(config.data.dataset)
    model = models.from_config(config, info.num_classes)
    path = fitted_lib.ensure(config, workdir)
    fitted = bases.load(path, num_classes=info.num_classes) if path else {}
    tx = optim.make_optimizer(config.optimizer, config.num_train_steps)
    loss_fn = losses.for_model(config.model, config.loss, ignore_label=info.ignore_label)
    mesh = step_lib.make_mesh()
    shape = (1, *tuple(config.data.crop_size), 3)
    state = jax.jit(lambda rng: state_lib.create_train_state(
        bases.attach(state_lib.init_variables(model, rng, shape), fitted), tx),
        out_shardings=step_lib.replicated(mesh))(jax.random.key(0))
    train_step = step_lib.jit_train_step(mesh, model=model, tx=tx, loss_fn=loss_fn,
                                         ignore_label=info.ignore_label)
    loader = data_lib.create_loader(config.data, "train", data_dir=workdir, seed=0, train=True)
    batch = step_lib.shard_batch(next(iter(loader)), mesh)
    holder = {"state": state}
    rng = jax.random.key(1)

    def run(steps):
        start = time.perf_counter()
        for _ in range(steps):
            holder["state"], metrics = train_step(holder["state"], batch, rng)
        jax.block_until_ready(metrics)
        return (time.perf_counter() - start) / steps

    def hlo():
        return train_step.lower(holder["state"], batch, rng).compile().as_text()

    run(2)  # compile and warm up
    return run, config, hlo


_OP_NAME = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]*)"')
_WHILE = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*? while\(')
_MODEL = re.compile(r"jvp\(([A-Z]\w*)\)")
_SCOPE = re.compile(r"[/(](lrr\.\w+)")


def part_of(op_name):
    """`(part, 'fwd' | 'bwd')` of one HLO instruction from its `op_name` (see the docstring)."""
    direction = "bwd" if "transpose(" in op_name else "fwd"
    scopes = _SCOPE.findall(op_name)  # the innermost names the part
    if "/backbone/" in op_name:
        return "backbone", direction
    if _MODEL.search(op_name):
        return f"decoder: {scopes[-1] if scopes else 'other'}", direction
    if "jvp(" in op_name:
        return (scopes[-1] if scopes else "loss"), direction
    return "update, metrics", "-"


def profile_parts(run, hlo, steps):
    """`({(part, direction): ms per step}, traced ms per step)` over `steps` traced steps."""
    names, loops = {}, set()
    for line in hlo().splitlines():
        match = _OP_NAME.match(line)
        if match:
            names[match.group(1)] = match.group(2)
        if match := _WHILE.match(line):
            loops.add(match.group(1))
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory):
            wall = run(steps)
        (path,) = glob.glob(f"{directory}/**/*.trace.json.gz", recursive=True)
        with gzip.open(path) as file:
            events = json.load(file)["traceEvents"]
    parts = collections.Counter()
    for event in events:
        if event.get("ph") != "X" or "hlo_op" not in event.get("args", {}):
            continue
        op = event["name"]
        if op in loops:
            continue  # the thunks of its body have their own events
        part = part_of(names[op]) if op in names else ("unlabelled", "-")
        parts[part] += event["dur"] / 1e3 / steps
    return parts, 1e3 * wall


def print_profile(spec, parts, wall):
    total = sum(parts.values())
    print(f"\n{spec}: {wall:.1f} ms per traced step, thunks {total:.1f} ms")
    print("| part | fwd ms | bwd ms | total ms |")
    print("|---|---:|---:|---:|")
    names = sorted({p for p, _ in parts}, key=lambda p: -sum(v for (q, _), v in parts.items() if q == p))
    for name in names:
        fwd, bwd = parts.get((name, "fwd"), 0.0), parts.get((name, "bwd"), 0.0)
        print(f"| {name} | {fwd:.1f} | {bwd:.1f} | {fwd + bwd + parts.get((name, '-'), 0.0):.1f} |")


def _model_kind(config):
    return {"fcn8s": "FCN-8s", "lrr": "LRR"}.get(config.model)


def compare_configs(args):
    with tempfile.TemporaryDirectory() as workdir:
        runs = {spec: config_step(spec, workdir) for spec in args.configs}
        times = {spec: [] for spec in args.configs}
        for _ in range(args.rounds):
            for spec, (run, _, _) in runs.items():
                times[spec].append(run(args.steps))
        profiles = {spec: profile_parts(run, hlo, args.steps)
                    for spec, (run, _, hlo) in runs.items()} if args.profile else {}
    base = statistics.median(times[args.configs[0]])
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; median of {args.rounds} "
          f"interleaved rounds of {args.steps} steps; load average {os.getloadavg()[0]:.1f}")
    print("| config | batch, crop | ms/step | ratio | minutes for num_train_steps |")
    print("|---|---|---:|---:|---:|")
    for spec, (_, config, _) in runs.items():
        seconds = statistics.median(times[spec])
        print(f"| {spec} | {config.data.batch_size}, {tuple(config.data.crop_size)} | "
              f"{1e3 * seconds:.1f} | {seconds / base:.2f} | "
              f"{seconds * config.num_train_steps / 60:.1f} ({config.num_train_steps}) |")
    kinds = {}
    for spec, (_, config, _) in runs.items():
        kinds.setdefault(_model_kind(config), spec)
    if "FCN-8s" in kinds and "LRR" in kinds:
        fcn, lrr = times[kinds["FCN-8s"]], times[kinds["LRR"]]
        paired = statistics.median(b / a for a, b in zip(fcn, lrr))
        print(f"LRR / FCN-8s step ratio ({kinds['LRR']} / {kinds['FCN-8s']}): "
              f"{statistics.median(lrr) / statistics.median(fcn):.2f} (ratio of the medians; "
              f"median of the {args.rounds} per-round ratios {paired:.2f}; target <= 1.4)")
    for spec, (parts, wall) in profiles.items():
        print_profile(spec, parts, wall)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--configs", nargs="+", default=None,
                        help="compare the train steps of these config files instead of --models")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (--configs)")
    parser.add_argument("--profile", action="store_true",
                        help="per-part thunk times of each config's step (--configs)")
    args = parser.parse_args()
    if args.configs:
        compare_configs(args)
        return
    available = set(models.names())
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; batch {args.batch} "
          f"at {args.size}x{args.size}; median of {args.steps} steps")
    print(f"{'model':<12} {'img/s (fixed batch)':>20} {'img/s (pipeline)':>17} "
          f"{'input wait':>11} {'ratio':>6}")
    baseline = None
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            if name not in available:
                print(f"{name:<12} (not available)")
                continue
            compute, fed, wait = benchmark(name, args, workdir)
            baseline = baseline or compute
            print(f"{name:<12} {compute:>20.1f} {fed:>17.1f} {100 * wait:>10.1f}% "
                  f"{compute / baseline:>6.2f}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
