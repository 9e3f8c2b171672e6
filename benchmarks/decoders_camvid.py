"""FCN-8s against LRR (PCA bases) and LRR (bilinear basis) on CamVid, from scratch, on a CPU.

    python -m benchmarks.decoders_camvid [--camvid_dir ../shared/data/camvid] [--steps 2000]
        [--batch_size 8] [--width 0.25] [--workdir benchmarks_out/decoders_camvid] [--reuse]

The shapes comparison (`benchmarks/decoders_shapes.py`) on real street scenes, sized for a
2-core CPU: every model trains from scratch on a width-`--width` ResNet-18 (output stride
32) at half resolution (images scaled by 0.4-0.6, 160x224 crops, flips), the same steps and
batch for every model, with the shapes configs' optimiser settings otherwise. Each run's
work dir is kept (`<workdir>/<model>`), so `lapseg eval --workdir` evaluates it again on any
split. Evaluation is `lapseg eval --scales=0.5`: the 101 validation images are fed at half
resolution (the training scale) and the logits resized back, so IoU and trimap accuracy
(w = 1, 2, 4, 8) are scored against the full 360x480 labels.
"""

import argparse
import os
import pathlib

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
    args = parser.parse_args()
    if not (args.camvid_dir / "trainannot").is_dir():
        raise SystemExit(f"no CamVid copy at {args.camvid_dir}: pass --camvid_dir")
    results = {model: decoders_shapes.run(camvid_config(model, args),
                                          os.path.join(args.workdir, model), steps=args.steps,
                                          eval_flags=("--scales=0.5",), reuse=args.reuse)
               for model in args.models.split(",")}
    decoders_shapes.print_table(
        results, f"CamVid, {args.steps} steps of batch {args.batch_size} at half resolution, "
                 f"val at 360x480")
    names = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
             "Pedestrian", "Bicyclist")
    print("\nper-class IoU\n| model | " + " | ".join(names) + " |\n" + "|---" * (len(names) + 1) + "|")
    for model, result in results.items():
        print(f"| {model} | " + " | ".join(f"{v:.3f}" if v is not None else "-"
                                           for v in result["per_class_iou"]) + " |")


if __name__ == "__main__":
    main()
