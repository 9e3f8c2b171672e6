"""FCN-8s against LRR (PCA bases) and LRR (bilinear basis, the paper's ablation) on `shapes`.

    python -m benchmarks.decoders_shapes [--steps 6500] [--batch_size 16] [--seeds 0,1,2]
        [--repeat] [--models fcn8s,lrr,lrr_bilinear[,lrr_staged][,dfn]]
        [--workdir benchmarks_out/decoders_shapes] [--reuse]

Every model trains from scratch with the main job's data, backbone, steps and batch
(`configs/shapes_fcn8s.py`, `configs/default.py` (LRR), and the latter with `basis='bilinear'`),
one after the other in this process, in its own kept work dir (`<workdir>/<model>`, so that
`lapseg eval --workdir` can evaluate it again on any split). Each is then evaluated by
`lapseg eval` on the whole validation split at full resolution. `lrr_staged` is the
reference's schedule (configs/shapes_lrr.py): half the steps on the 32x level alone, then
every level at lr / 16 from that run, in `<workdir>/lrr_staged_coarse` and `lrr_staged`. The table gives val mIoU,
trimap (boundary) accuracy at w = 1, 2, 4, 8, training minutes, and each number's ratio to
FCN-8s's.

Seeds (`--seeds`, `config.seed`: initialisation, data order, augmentation, dropout): each
model trains once per seed (`<workdir>/<model>/seed<s>`), and the table gives the mean and
standard deviation over the seeds; a difference from FCN-8s smaller than the larger of the
two standard deviations is marked a tie (`~`). `--repeat` trains the first seed a second
time (`.../seed<s>_repeat`): the difference between the two runs of one seed is the
nondeterminism of the CPU run (thread scheduling in XLA's reductions), against which the
seed-to-seed spread is read.
"""

import argparse
import importlib.util
import json
import os
import pathlib
import time

import numpy as np

from lapseg import cli
from lapseg.train import config as config_lib
from lapseg.train import recipes

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
WIDTHS = ("1", "2", "4", "8")


def load_config(name: str, *args):
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*args)


def model_config(model: str, stage: str = "all"):
    """The shapes configs of `model`: 'fcn8s', 'lrr' (PCA bases), 'lrr_bilinear',
    'lrr_staged' (`stage` 'coarse' or 'refine' of configs/shapes_lrr.py), or 'dfn' (the main
    job with DFN on its backbone, plain stem included, every head supervised as in TorchSeg,
    64 smooth channels for the quarter-width ResNet-18's 128 at res5: ResNet-101's 2048 feed
    DFN's 512)."""
    if model == "fcn8s":
        return load_config("shapes_fcn8s")
    if model == "dfn":
        config = load_config("shapes_fcn8s")
        config.model = "dfn"
        config.model_kwargs.channels = 64
        config.model_kwargs.backbone_kwargs.deep_stem = False  # FCN-8s's backbone, not DFN's default
        config.loss.weights = dict(recipes.DFN_LOSS_WEIGHTS)
        config.loss.update(recipes.DFN_BORDER_LOSS)
        return config
    config = load_config("shapes_lrr", stage if model == "lrr_staged" else "all")
    if model == "lrr_bilinear":
        config.model_kwargs.basis = "bilinear"
    return config


def run_staged(configure, workdir: str, *, steps: int, eval_flags=(), reuse: bool = False) -> dict:
    """The staged LRR schedule: `steps // 2` of the 32x level alone (`<workdir>_coarse`), then
    the rest with every level at lr / 16 from that run; `configure(config)` sets the data."""
    coarse = configure(model_config("lrr_staged", "coarse"))
    first = run(coarse, f"{workdir}_coarse", steps=steps // 2, eval_flags=eval_flags, reuse=reuse)
    refine = configure(model_config("lrr_staged", "refine"))
    refine.init.checkpoint = os.path.abspath(f"{workdir}_coarse")
    result = run(refine, workdir, steps=steps - steps // 2, eval_flags=eval_flags, reuse=reuse)
    both = None if None in (first["minutes"], result["minutes"]) else first["minutes"] + result["minutes"]
    return {**result, "minutes": both}


def run(config, workdir: str, *, steps: int, eval_flags=(), reuse: bool = False) -> dict:
    """Trains `config` for `steps` in `workdir` (kept), then `lapseg eval --workdir` on the whole
    validation split; returns val mIoU, per-class IoU, trimap accuracy by width, minutes.

    With `reuse`, a work dir that already holds a run (of `steps` steps, say from an earlier
    invocation) is evaluated again without training; its minutes are those recorded in
    `<workdir>/train_minutes.json` by the run that trained it (None if absent).
    """
    config.num_train_steps = steps
    config.eval_every_steps = config.checkpoint_every_steps = steps
    minutes_path = os.path.join(workdir, "train_minutes.json")
    if os.path.exists(os.path.join(workdir, "checkpoints")):
        if not reuse:
            raise SystemExit(f"{workdir} holds a run already: pass another --workdir, or --reuse")
        minutes = None
        if os.path.exists(minutes_path):
            with open(minutes_path, encoding="utf-8") as f:
                minutes = json.load(f)["minutes"]
    else:
        from lapseg.train import loop  # pylint: disable=import-outside-toplevel

        start = time.perf_counter()
        loop.train_and_evaluate(config, workdir)
        minutes = (time.perf_counter() - start) / 60
        with open(minutes_path, "w", encoding="utf-8") as f:
            json.dump({"minutes": minutes, "steps": steps}, f)
    if cli.main(["eval", f"--workdir={workdir}", *eval_flags]) != 0:
        raise SystemExit(f"lapseg eval failed on {workdir}")
    with open(os.path.join(workdir, "eval_val.json"), encoding="utf-8") as f:
        result = json.load(f)
    if result["step"] != steps:
        raise SystemExit(f"{workdir} holds a run of {result['step']} steps, not {steps}")
    return {"miou": result["miou"], "per_class_iou": result["per_class_iou"], "minutes": minutes,
            **{f"w{w}": result["trimap_accuracy"][w] for w in WIDTHS}}


KEYS = ("miou", *(f"w{w}" for w in WIDTHS))


def with_seed(config, seed: int):
    config.seed = seed
    return config


def run_seeds(make_run, model: str, workdir: str, seeds, repeat: bool = False) -> dict:
    """`make_run(model, workdir, seed)` for every seed (and the first again with `repeat`):
    `{'runs': [result per seed], 'repeat': result or None}`."""
    runs = [make_run(model, os.path.join(workdir, model, f"seed{s}"), s) for s in seeds]
    again = (make_run(model, os.path.join(workdir, model, f"seed{seeds[0]}_repeat"), seeds[0])
             if repeat else None)
    return {"runs": runs, "repeat": again}


def _stats(runs, key):
    values = np.array([r[key] for r in runs], np.float64)
    return values.mean(), (values.std(ddof=1) if len(values) > 1 else 0.0)


def print_table(results: dict, title: str) -> None:
    """Markdown table of `run_seeds` results: mean ± standard deviation over the seeds, and
    each mean's difference from FCN-8s's (`~`: a tie, smaller than the larger std)."""
    base = results.get("fcn8s")
    seeds = len(next(iter(results.values()))["runs"])
    print(f"\n{title}; mean ± std over {seeds} seed(s), difference from FCN-8s in brackets "
          "(~: within the larger std, a tie)")
    print("| model | val mIoU | " + " | ".join(f"trimap w={w}" for w in WIDTHS) + " | minutes |")
    print("|---" * (len(KEYS) + 2) + "|")
    for model, result in results.items():
        cells = []
        for key in KEYS:
            mean, std = _stats(result["runs"], key)
            cell = f"{mean:.4f} ± {std:.4f}"
            if base and model != "fcn8s":
                base_mean, base_std = _stats(base["runs"], key)
                tie = "~" if abs(mean - base_mean) < max(std, base_std) else ""
                cell += f" ({mean - base_mean:+.4f}{tie})"
            cells.append(cell)
        minutes = [r["minutes"] for r in result["runs"] if r["minutes"] is not None]
        print(f"| {model} | " + " | ".join(cells) + f" | {f'{np.mean(minutes):.1f}' if minutes else '-'} |")
    for model, result in results.items():
        if result["repeat"] is not None:
            first = result["runs"][0]
            print(f"{model}: the first seed run twice differs by "
                  + ", ".join(f"{key} {result['repeat'][key] - first[key]:+.4f}" for key in KEYS)
                  + " (nondeterminism)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=config_lib.default_job().num_train_steps)
    parser.add_argument("--batch_size", type=int, default=config_lib.default_job().data.batch_size)
    parser.add_argument("--models", default="fcn8s,lrr,lrr_bilinear")
    parser.add_argument("--workdir", default="benchmarks_out/decoders_shapes")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate work dirs that already hold a run instead of failing")
    parser.add_argument("--seeds", default="0", help="comma-separated config.seed values")
    parser.add_argument("--repeat", action="store_true",
                        help="train the first seed twice (measures nondeterminism)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    def make_run(model, workdir, seed):
        def configure(config):
            config.data.batch_size = args.batch_size
            if args.data_dir:
                config.data.data_dir = args.data_dir
            return with_seed(config, seed)

        if model == "lrr_staged":
            return run_staged(configure, workdir, steps=args.steps, reuse=args.reuse)
        return run(configure(model_config(model)), workdir, steps=args.steps, reuse=args.reuse)

    results = {model: run_seeds(make_run, model, args.workdir, seeds, args.repeat)
               for model in args.models.split(",")}
    print_table(results, f"shapes, {args.steps} steps of batch {args.batch_size}, val at full "
                         f"resolution")

if __name__ == "__main__":
    main()
