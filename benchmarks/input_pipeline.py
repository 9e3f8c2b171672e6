"""Does the main job wait for input? The pipeline alone, the step alone, and a real run.

    python -m benchmarks.input_pipeline [--parts pipeline step run] [--variants default
        cache_mb=0 device_prefetch=0 ...] [--rounds 3] [--batches 60] [--steps 30]
        [--run-steps 300] [--data-dir DIR]
    python -m benchmarks.input_pipeline --summary WORKDIR   # a finished run's metrics.jsonl

The job is the FCN-8s shapes job (configs/shapes_fcn8s.py: the default job's data, batch
16 of 96x96, and quarter-width ResNet-18, with FCN-8s's decoder). Three measurements:

- pipeline: batches/s that `create_loader` alone delivers, and the CPU time it spends
  per batch (all its threads), after one warm-up epoch (so the decoded-example cache,
  `cache_mb`, is full as it is for most of a run); the first epoch's rate too.
- step: the jitted train step alone on one fixed batch already on the devices: ms/step
  over `--steps` steps dispatched back to back (the compute ceiling).
- run: `lapseg.train.loop.train_and_evaluate` for `--run-steps` steps (log every 50,
  evaluation and checkpoint only at the end): the steps/s of each logging interval and
  the `input_wait_fraction` it logs (the share of the interval the device sat idle
  waiting for a batch, `lapseg.train.reporting.InputWait`), medians over the intervals
  after the first (which holds compilation), the whole run's mean wait, and the wait the
  last progress line showed (before `input_wait_fraction` existed the progress line
  showed the run's share of wall time spent in `next(loader)`, a different measure that
  counts waits overlapping the asynchronously dispatched steps; `in_next_fraction` is
  that measure for the current loop).

`--summary WORKDIR` measures nothing: it reads a run's `metrics.jsonl` (e.g. the main job's,
`lapseg train --workdir workdir/default`) and prints its `input_wait_fraction` (maximum and
mean over the log steps) and its last evaluation's mIoU.

Each `--variants` entry is a comma-separated list of `config.data` overrides
(`default`: none), e.g. `cache_mb=0,num_threads=1`; variants are measured in
interleaved rounds and medians reported. Timings on a shared CPU are noisy: compare
variants of one invocation, not absolutes across invocations.
"""

import argparse
import ast
import json
import os
import statistics
import tempfile
import time

import jax
import numpy as np

from lapseg import data as data_lib
from lapseg import losses, models
from lapseg.data import pipeline as data_pipeline
from lapseg.train import config as config_lib
from lapseg.train import loop
from lapseg.train import reporting as log_lib
from lapseg.train import optim
from lapseg.train import state as state_lib
from lapseg.train import step as step_lib


def _config(variant, data_dir):
    config = config_lib.shapes_job("fcn8s")
    config.data.data_dir = data_dir
    for item in filter(None, variant.split(",")):
        if item == "default":
            continue
        key, _, value = item.partition("=")
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        config.data[key] = value
    return config


def pipeline_rate(config, batches):
    """(warm batches/s, first-epoch batches/s, warm CPU ms per batch, all threads) of the
    training loader alone. On a shared CPU the CPU time is the steadier number."""
    iterator = iter(data_lib.create_loader(config.data, "train", data_dir=config.data.data_dir,
                                           seed=0, train=True))
    source = data_lib.load_source(config.data.dataset, "train", data_dir=config.data.data_dir)
    epoch = len(source) // config.data.batch_size
    start = time.perf_counter()
    for _ in range(epoch):
        next(iterator)
    first = epoch / (time.perf_counter() - start)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    warm = batches / (time.perf_counter() - start)
    cpu_ms = 1e3 * (time.process_time() - cpu) / batches
    if hasattr(iterator, "close"):
        iterator.close()
    return warm, first, cpu_ms


def step_time(config, steps):
    """Median seconds per train step on a fixed device batch (3 timings of `steps`)."""
    info = data_lib.dataset_info(config.data.dataset)
    model = models.from_config(config, info.num_classes)
    tx = optim.make_optimizer(config.optimizer, config.num_train_steps)
    loss_fn = losses.for_model(config.model, config.loss, ignore_label=info.ignore_label)
    mesh = step_lib.make_mesh()
    crop = tuple(config.data.crop_size)
    state = jax.jit(lambda rng: state_lib.create_train_state(
        state_lib.init_variables(model, rng, (1, *crop, 3)), tx),
        out_shardings=step_lib.replicated(mesh))(jax.random.key(0))
    train_step = step_lib.jit_train_step(mesh, model=model, tx=tx, loss_fn=loss_fn,
                                         ignore_label=info.ignore_label)
    batch = next(iter(data_lib.create_loader(config.data, "train", data_dir=config.data.data_dir,
                                             seed=0, train=True)))
    batch = step_lib.shard_batch(batch, mesh)
    rng = jax.random.key(1)
    for _ in range(3):  # compile, warm up
        state, metrics = train_step(state, batch, rng)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = train_step(state, batch, rng)
        jax.block_until_ready(metrics)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def real_run(config, steps):
    """A short `train_and_evaluate`: per logging interval, steps/s and the logged wait."""
    config.num_train_steps = steps
    config.log_every_steps = 50
    config.eval_every_steps = config.checkpoint_every_steps = 10**9  # only at the end
    marks = []  # (time, step, input_wait_fraction or None) at each train log line
    real_write = log_lib.MetricWriter.write

    def write(self, step, split, scalars):
        if split == "train":
            marks.append((time.perf_counter(), step, scalars.get("input_wait_fraction")))
        return real_write(self, step, split, scalars)

    progress = []  # the input-wait fraction each progress line shows
    real_update = log_lib.Progress.update

    def update(self, step, loss, wait_fraction):
        progress.append(wait_fraction)
        return real_update(self, step, loss, wait_fraction)

    # The older measure: the share of the loop's wall time spent blocked in `next(loader)`,
    # whether or not the device was busy meanwhile (what the progress line showed before).
    in_next = [0.0, None]  # seconds inside `get`, time of the first call
    real_get = getattr(data_pipeline.DevicePrefetch, "get", None)

    def get(self, device_busy=None):
        start = time.perf_counter()
        in_next[1] = in_next[1] or start
        try:
            return real_get(self, device_busy)
        finally:
            in_next[0] += time.perf_counter() - start

    log_lib.MetricWriter.write = write
    log_lib.Progress.update = update
    if real_get is not None:
        data_pipeline.DevicePrefetch.get = get
    try:
        with tempfile.TemporaryDirectory() as workdir:
            start = time.perf_counter()
            result = loop.train_and_evaluate(config, workdir)
            wall = time.perf_counter() - start
    finally:
        log_lib.MetricWriter.write = real_write
        log_lib.Progress.update = real_update
        if real_get is not None:
            data_pipeline.DevicePrefetch.get = real_get
    rates = [(s1 - s0) / (t1 - t0) for (t0, s0, _), (t1, s1, _) in zip(marks, marks[1:])]
    waits = [w for _, _, w in marks[1:] if w is not None]
    return {
        "steps_per_s": statistics.median(rates) if rates else float("nan"),
        "wait_median": statistics.median(waits) if waits else float("nan"),
        "wait_max": max(waits) if waits else float("nan"),
        "wait_mean": float(np.mean([w for _, _, w in marks if w is not None]))
        if marks and marks[0][2] is not None else float("nan"),
        "progress_line_wait": progress[-1] if progress else float("nan"),
        "in_next_fraction": in_next[0] / (marks[-1][0] - in_next[1])
        if in_next[1] and marks else float("nan"),
        "wall_s": wall,
        "miou": result["miou"],
    }


def summarize(workdir):
    """`input_wait_fraction` (max, mean, count over the train log steps) and the last
    evaluation of the run in `workdir`, from its `metrics.jsonl`."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise SystemExit(f"--summary: {path} does not exist; pass the work dir of a finished "
                         f"`lapseg train` run")
    with open(path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    waits = [line["input_wait_fraction"] for line in lines
             if line.get("split") == "train" and "input_wait_fraction" in line]
    evals = [line for line in lines if line.get("split") != "train" and "miou" in line]
    summary = {"log_steps": len(waits), "wait_max": max(waits, default=float("nan")),
               "wait_mean": statistics.fmean(waits) if waits else float("nan"),
               "last_eval": evals[-1] if evals else None}
    print(f"{path}: input_wait_fraction max {summary['wait_max']:.4f}, mean "
          f"{summary['wait_mean']:.4f} over {len(waits)} log steps; "
          + (f"val mIoU {evals[-1]['miou']:.4f} at step {evals[-1]['step']}" if evals
             else "no evaluation"))
    return summary


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--parts", nargs="+", default=["pipeline", "step", "run"],
                        choices=["pipeline", "step", "run"])
    parser.add_argument("--variants", nargs="+", default=["default"],
                        help="config.data overrides per variant, e.g. cache_mb=0,num_threads=1")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--batches", type=int, default=60,
                        help="batches timed per pipeline measurement (after a warm-up epoch)")
    parser.add_argument("--steps", type=int, default=30, help="steps per step-time timing")
    parser.add_argument("--run-steps", type=int, default=300, help="steps of each real run")
    parser.add_argument("--data-dir", default=None,
                        help="tfds data_dir (default: the job's, ~/tensorflow_datasets)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--summary", default=None, metavar="WORKDIR",
                        help="only print a finished run's input_wait_fraction and final mIoU")
    args = parser.parse_args()
    if args.summary:
        summarize(args.summary)
        return

    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}, "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    configs = {v: _config(v, args.data_dir) for v in args.variants}
    results = {"args": vars(args), "pipeline": {}, "run": {}}
    if "step" in args.parts:
        seconds = step_time(configs[args.variants[0]], args.steps)
        results["step_ms"] = 1e3 * seconds
        print(f"step alone: {1e3 * seconds:.1f} ms/step ({1 / seconds:.1f} steps/s, "
              f"{configs[args.variants[0]].data.batch_size / seconds:.0f} img/s)")
    for part in ("pipeline", "run"):
        if part not in args.parts:
            continue
        samples = {v: [] for v in args.variants}
        for round_ in range(args.rounds):
            for variant in args.variants:
                config = configs[variant].copy_and_resolve_references()
                if part == "pipeline":
                    samples[variant].append(pipeline_rate(config, args.batches))
                else:
                    samples[variant].append(real_run(config, args.run_steps))
                print(f"  round {round_ + 1} {part} {variant}: {samples[variant][-1]}",
                      flush=True)
        for variant, values in samples.items():
            if part == "pipeline":
                warm = statistics.median(v[0] for v in values)
                first = statistics.median(v[1] for v in values)
                cpu_ms = statistics.median(v[2] for v in values)
                results["pipeline"][variant] = {"batches_per_s": warm, "first_epoch": first,
                                                "cpu_ms_per_batch": cpu_ms}
                print(f"pipeline alone [{variant}]: {warm:.1f} batches/s "
                      f"({1e3 / warm:.1f} ms/batch, {cpu_ms:.1f} CPU ms/batch; first epoch "
                      f"{first:.1f} batches/s)")
            else:
                summary = {key: statistics.median(v[key] for v in values) for key in values[0]}
                results["run"][variant] = summary
                line = (f"run [{variant}]: {summary['steps_per_s']:.2f} steps/s, "
                        f"input_wait_fraction median {summary['wait_median']:.3f} "
                        f"(max {summary['wait_max']:.3f}, run mean {summary['wait_mean']:.3f}); "
                        f"time in next(loader) {summary['in_next_fraction']:.3f}; last "
                        f"progress line {summary['progress_line_wait']:.3f}")
                if "step_ms" in results:
                    line += (f"; {summary['steps_per_s'] * results['step_ms'] / 1e3:.2f}x "
                             f"the step-alone rate")
                print(line)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
