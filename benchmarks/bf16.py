"""bfloat16 against float32 for the FCN-8s shapes job (`configs/shapes_fcn8s.py`): step speed and accuracy.

    python -m benchmarks.bf16 [--rounds 7] [--steps 5]          # train-step speed, CPU
    python -m benchmarks.bf16 --train [--train_steps 1000] [--seeds 0,1,2]  # val mIoU

Speed: that job's model (FCN-8s on a quarter-width ResNet-18) and train step (SGD
momentum, BN in train mode, batch 16 at 96 x 96, the loss at the input resolution) built
with `config.dtype` = 'float32' and 'bfloat16', on one fixed random batch; interleaved rounds
of `--steps` steps each, median step time per dtype and the bf16 / f32 ratio of the same run.
It also shows where the compute runs in bf16: the FLOPs of the step's convolutions and
matmuls by operand dtype (from the jaxpr, `benchmarks.flops.matmul_flops`), and the dtypes of
the logits, the loss, the gradients and the parameters (which stay float32).

`--train`: `lapseg.train.loop.train_and_evaluate` on that job with
`num_train_steps=N` (the schedule over N steps), evaluated at the end, with each dtype and
each of `--seeds` (`config.seed`: initialisation and data order), in fresh work dirs
`benchmarks_out/bf16/<dtype>_seed<s>`; prints the validation mIoUs, their means per dtype
and whether the bf16 mean is within `--tolerance` (0.02) of the f32 mean. Use several seeds:
after 1000 steps the f32 mIoU varies by ~0.03 (std) from seed to seed.
"""

import argparse
import json
import os
import shutil
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import flops as flops_lib
from lapseg import data as data_lib
from lapseg import losses, models
from lapseg.train import config as config_lib
from lapseg.train import optim
from lapseg.train import state as state_lib
from lapseg.train import step as step_lib

DTYPES = ("float32", "bfloat16")
OUT = os.path.join("benchmarks_out", "bf16")


def job_config(dtype: str, **overrides):
    """`configs/shapes_fcn8s.py`'s job with `config.dtype = dtype` and dotted `overrides`."""
    config = config_lib.shapes_job("fcn8s")
    config.dtype = dtype
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def _dtype_flops(jaxpr, totals):
    """Conv / matmul FLOPs of `jaxpr` by the dtype of their first operand."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
            dtype = str(eqn.invars[0].aval.dtype)
            fake = type("OneEqn", (), {"eqns": [eqn]})()
            totals[dtype] = totals.get(dtype, 0.0) + flops_lib.matmul_flops(fake)
        for sub in flops_lib._subjaxprs(eqn.params):  # pylint: disable=protected-access
            _dtype_flops(sub, totals)
    return totals


class Job:
    """The FCN-8s shapes job's jitted train step for one dtype, on a fixed batch."""

    def __init__(self, dtype: str, batch: int, size: int, mesh):
        config = job_config(dtype, **{"data.batch_size": batch})
        info = data_lib.dataset_info(config.data.dataset)
        self.model = models.from_config(config, info.num_classes)
        tx = optim.make_optimizer(config.optimizer, config.num_train_steps)
        self.loss_fn = losses.for_model(config.model, config.loss, ignore_label=info.ignore_label)
        shape = (batch, size, size, 3)
        self.state = jax.jit(lambda rng: state_lib.create_train_state(
            state_lib.init_variables(self.model, rng, shape), tx),
            out_shardings=step_lib.replicated(mesh))(jax.random.key(0))
        rng = np.random.default_rng(0)
        batch_np = {"image": rng.standard_normal(shape, dtype=np.float32),
                    "label": rng.integers(0, info.num_classes, shape[:3], dtype=np.int32)}
        self.batch = step_lib.shard_batch(batch_np, mesh)
        self.step_fn = step_lib.jit_train_step(mesh, model=self.model, tx=tx, loss_fn=self.loss_fn,
                                               ignore_label=info.ignore_label)
        self.rng = jax.random.key(1)
        self.unjitted = lambda state, b, r: step_lib.train_step(
            state, b, r, model=self.model, tx=tx, loss_fn=self.loss_fn, ignore_label=info.ignore_label)

    def run(self, steps: int) -> float:
        """Median seconds per step over `steps` steps (each synchronised)."""
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            self.state, metrics = self.step_fn(self.state, self.batch, self.rng)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def report(self) -> dict:
        """Where the step computes in which dtype."""
        jaxpr = jax.make_jaxpr(self.unjitted)(self.state, self.batch, self.rng).jaxpr
        by_dtype = _dtype_flops(jaxpr, {})
        variables = self.state.variables
        outputs = jax.eval_shape(lambda v, x: self.model.apply(v, x, train=False), variables,
                                 self.batch["image"])
        loss = jax.eval_shape(
            lambda v, x, y: self.loss_fn(self.model.apply(v, x, train=False), y, {"image": x, "label": y})[0],
            variables, self.batch["image"], self.batch["label"])
        grads = jax.eval_shape(jax.grad(
            lambda p: self.loss_fn(self.model.apply({**variables, "params": p}, self.batch["image"],
                                                    train=False), self.batch["label"], self.batch)[0]),
            self.state.params)
        return {
            "matmul_gflops_by_dtype": {k: round(v / 1e9, 3) for k, v in sorted(by_dtype.items())},
            "logits": str(outputs["logits"].dtype),
            "loss": str(loss.dtype),
            "grads": sorted({str(g.dtype) for g in jax.tree.leaves(grads)}),
            "params": sorted({str(p.dtype) for p in jax.tree.leaves(self.state.params)}),
        }


def speed(args) -> dict:
    mesh = step_lib.make_mesh(1)  # one device, as the main job has on a plain CPU
    device = jax.devices()[0]
    print(f"train step of configs/shapes_fcn8s.py (batch {args.batch} at {args.size}x{args.size}) on "
          f"{jax.device_count()} x {device.platform} ({device.device_kind}); {args.rounds} "
          f"interleaved rounds of {args.steps} steps")
    jobs = {dtype: Job(dtype, args.batch, args.size, mesh) for dtype in DTYPES}
    for dtype, job in jobs.items():
        report = job.report()
        print(f"  {dtype:9s} conv/matmul GFLOPs per step by operand dtype "
              f"{report['matmul_gflops_by_dtype']}; logits {report['logits']}, loss "
              f"{report['loss']}, grads {report['grads']}, params {report['params']}")
        job.run(2)  # compile and warm up
    times = {dtype: [] for dtype in DTYPES}
    for _ in range(args.rounds):
        for dtype, job in jobs.items():
            times[dtype].append(job.run(args.steps))
    med = {dtype: statistics.median(t) for dtype, t in times.items()}
    for dtype in DTYPES:
        print(f"  {dtype:9s} {1e3 * med[dtype]:8.1f} ms/step  {args.batch / med[dtype]:7.1f} img/s")
    ratio = med["bfloat16"] / med["float32"]
    print(f"  bf16 / f32 step time: {ratio:.2f} ({'slower' if ratio > 1 else 'faster'} in bf16 on this "
          f"{device.platform})")
    return {"ms_per_step": {k: 1e3 * v for k, v in med.items()}, "bf16_over_f32": ratio}


def train(args) -> dict:
    """Trains the FCN-8s shapes job for `args.train_steps` steps per dtype and seed; val mIoUs."""
    from lapseg.train import loop  # pylint: disable=import-outside-toplevel

    seeds = [int(s) for s in str(args.seeds).split(",")]
    runs = {dtype: [] for dtype in DTYPES}
    for seed in seeds:  # dtypes alternate, so load on a shared machine hits both alike
        for dtype in DTYPES:
            workdir = os.path.join(args.out, f"{dtype}_seed{seed}")
            shutil.rmtree(workdir, ignore_errors=True)  # a fresh run, not a resumed one
            config = job_config(dtype, seed=seed, num_train_steps=args.train_steps,
                                eval_every_steps=args.train_steps,
                                checkpoint_every_steps=args.train_steps)
            start = time.perf_counter()
            result = loop.train_and_evaluate(config, workdir)
            run = {"seed": seed, "miou": float(result["miou"]),
                   "pixel_accuracy": float(result["pixel_accuracy"]),
                   "seconds": time.perf_counter() - start, "workdir": workdir}
            runs[dtype].append(run)
            print(f"{dtype} seed {seed}: val mIoU {run['miou']:.4f} after {args.train_steps} steps "
                  f"({run['seconds']:.0f} s, {workdir})", flush=True)
    summary = {dtype: {"mean": float(np.mean([r["miou"] for r in rs])),
                       "std": float(np.std([r["miou"] for r in rs], ddof=1)) if len(rs) > 1 else None,
                       "runs": rs} for dtype, rs in runs.items()}
    gap = summary["bfloat16"]["mean"] - summary["float32"]["mean"]
    ok = abs(gap) <= args.tolerance
    print(f"val mIoU after {args.train_steps} steps, {len(seeds)} seed(s) {seeds}:")
    for dtype in DTYPES:
        values = ", ".join(f"{r['miou']:.4f}" for r in runs[dtype])
        spread = f" (std {summary[dtype]['std']:.4f})" if summary[dtype]["std"] is not None else ""
        print(f"  {dtype:9s} mean {summary[dtype]['mean']:.4f}{spread}: {values}")
    print(f"  bf16 - f32 = {gap:+.4f} ({'within' if ok else 'NOT within'} {args.tolerance}); per seed: "
          + ", ".join(f"{b['miou'] - f['miou']:+.4f}" for f, b in zip(runs["float32"], runs["bfloat16"])))
    return {"steps": args.train_steps, "seeds": seeds, "gap": gap, "within_tolerance": ok, **summary}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="train both dtypes and compare val mIoU")
    parser.add_argument("--train_steps", type=int, default=1000)
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--seeds", default="0", help="comma-separated config.seed values (--train); "
                        "the mean val mIoU per dtype is compared")
    parser.add_argument("--out", default=OUT, help="work dirs of --train, and summary json")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="steps per round (speed)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args(argv)
    result = train(args) if args.train else speed(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "train.json" if args.train else "speed.json"), "w",
              encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
