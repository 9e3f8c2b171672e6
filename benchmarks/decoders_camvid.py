"""FCN-8s against LRR (PCA bases) and LRR (bilinear basis) on CamVid, from scratch, on a CPU.

    python -m benchmarks.decoders_camvid [--camvid_dir ../shared/data/camvid] [--steps 2000]
        [--batch_size 8] [--width 0.25] [--seeds 0,1,2] [--repeat]
        [--workdir benchmarks_out/decoders_camvid] [--reuse]

The shapes comparison (`benchmarks/decoders_shapes.py`) on real street scenes, sized for a
2-core CPU: every model trains from scratch on a width-`--width` ResNet-18 (output stride
32) at half resolution (images scaled by 0.4-0.6, 160x224 crops, flips), the same steps and
batch for every model, with the shapes configs' optimiser settings otherwise. Each run's
work dir is kept (`<workdir>/<model>`), so `lapseg eval --workdir` evaluates it again on any
split. Evaluation is `lapseg eval --scales=0.5`: the 101 validation images are fed at half
resolution (the training scale) and the logits resized back, so IoU and trimap accuracy
(w = 1, 2, 4, 8) are scored against the full 360x480 labels. Seeds and `--repeat` as in
`benchmarks/decoders_shapes.py`: mean ± std over the seeds, ties marked.
"""

import argparse
import os
import pathlib

import numpy as np

from benchmarks import decoders_shapes

DEFAULT_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


def camvid_config(model: str, args):
    """The shapes config of `model`, moved to CamVid at half resolution (see the docstring)."""
    config = decoders_shapes.model_config(model)
    config.model_kwargs.backbone_kwargs.width = args.width
    config.data.dataset = "camvid"
    config.data.source_dir = str(args.camvid_dir)
    config.data.crop_size = (160, 224)
    config.data.scale_range = (0.4, 0.6)
    config.data.batch_size = args.batch_size
    if args.data_dir:
        config.data.data_dir = args.data_dir
    return config


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid_dir", type=pathlib.Path, default=DEFAULT_DIR)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--models", default="fcn8s,lrr,lrr_bilinear")
    parser.add_argument("--workdir", default="benchmarks_out/decoders_camvid")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate work dirs that already hold a run instead of failing")
    parser.add_argument("--seeds", default="0", help="comma-separated config.seed values")
    parser.add_argument("--repeat", action="store_true",
                        help="train the first seed twice (measures nondeterminism)")
    args = parser.parse_args()
    if not (args.camvid_dir / "trainannot").is_dir():
        raise SystemExit(f"no CamVid copy at {args.camvid_dir}: pass --camvid_dir")
    seeds = [int(s) for s in args.seeds.split(",")]

    def make_run(model, workdir, seed):
        config = decoders_shapes.with_seed(camvid_config(model, args), seed)
        return decoders_shapes.run(config, workdir, steps=args.steps,
                                   eval_flags=("--scales=0.5",), reuse=args.reuse)

    results = {model: decoders_shapes.run_seeds(make_run, model, args.workdir, seeds, args.repeat)
               for model in args.models.split(",")}
    decoders_shapes.print_table(
        results, f"CamVid, {args.steps} steps of batch {args.batch_size} at half resolution, "
                 f"val at 360x480")
    names = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
             "Pedestrian", "Bicyclist")
    print("\nper-class IoU\n| model | " + " | ".join(names) + " |\n" + "|---" * (len(names) + 1) + "|")
    for model, result in results.items():
        per_class = np.array([[np.nan if v is None else v for v in r["per_class_iou"]]
                              for r in result["runs"]])
        print(f"| {model} | " + " | ".join(f"{v:.3f}" for v in np.nanmean(per_class, 0)) + " |")


if __name__ == "__main__":
    main()
