"""Why the staged LRR schedule trails end-to-end training on `shapes`: a measurement.

    python -m benchmarks.lrr_stages [--steps 1000] [--workdir benchmarks_out/lrr_stages]

The staged schedule (configs/shapes_lrr.py, the reference's `LRR4xTrainVGG16Pascal.m`):
the 32x level alone ('coarse'), then every level at lr / 16 from that run ('refine', through
`config.init.checkpoint`). This runs, each `--steps` long, in `<workdir>/<name>`:

- `coarse`: the first stage;
- `refine_start`: the second stage for one step at learning rate 0, to check that it starts
  from the first stage's weights (every parameter compared, level by level) and at its mIoU;
- `refine`: the second stage as configured (lr / 16);
- `refine_full_lr`: the second stage at the first stage's rate;
- `coarse_more`: the first stage continued for `--steps` more (the same total steps, one
  level supervised throughout);

and prints each run's val mIoU, plus the size of each level's coefficient-conv kernel at
the end of each run (the finer levels start at zero: how far does each rate move them?).
"""

import argparse
import os

import jax
import numpy as np

from benchmarks import decoders_shapes
from lapseg.train import checkpoint as checkpoint_lib


def _params(workdir):
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
        state = checkpointer.read()
    finally:
        checkpointer.close()
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(state["params"])[0]}


def _coefficient_norms(params) -> str:
    return ", ".join(f"{name.split('/')[0].replace('coefficients_', '')} "
                     f"{float(np.linalg.norm(value)):.3g}"
                     for name, value in sorted(params.items())
                     if name.startswith("coefficients_") and name.endswith("kernel"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--workdir", default="benchmarks_out/lrr_stages")
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args()

    def config(stage, **changes):
        config = decoders_shapes.model_config("lrr_staged", stage)
        if args.data_dir:
            config.data.data_dir = args.data_dir
        for key, value in changes.items():
            target = config
            *parents, leaf = key.split(".")
            for parent in parents:
                target = target[parent]
            target[leaf] = value
        return config

    def path(name):
        return os.path.abspath(os.path.join(args.workdir, name))

    coarse = path("coarse")
    runs = {
        "coarse": (config("coarse"), args.steps),
        "refine_start": (config("refine", **{"init.checkpoint": coarse,
                                             "optimizer.learning_rate": 0.0}), 1),
        "refine": (config("refine", **{"init.checkpoint": coarse}), args.steps),
        "refine_full_lr": (config("refine", **{"init.checkpoint": coarse,
                                               "optimizer.learning_rate": 0.1}), args.steps),
        "coarse_more": (config("coarse", **{"init.checkpoint": coarse}), args.steps),
    }
    results = {}
    for name, (cfg, steps) in runs.items():
        results[name] = decoders_shapes.run(cfg, path(name), steps=steps, reuse=True)
    start, first = _params(path("refine_start")), _params(coarse)
    shared = sorted(set(start) & set(first))
    differing = [k for k in shared if not np.array_equal(start[k], first[k])]
    print(f"\nrefine_start vs coarse: {len(shared)} parameters in both, {len(differing)} differ"
          + (f" (e.g. {differing[:3]})" if differing else " (the refine stage starts from the "
                                                        "coarse stage's weights)"))
    print(f"\n| run | steps | val mIoU | trimap w=1 | coefficient-conv kernel norms |")
    print("|---|---|---|---|---|")
    for name, (_, steps) in runs.items():
        print(f"| {name} | {steps} | {results[name]['miou']:.4f} | {results[name]['w1']:.4f} | "
              f"{_coefficient_norms(_params(path(name)))} |")


if __name__ == "__main__":
    main()
