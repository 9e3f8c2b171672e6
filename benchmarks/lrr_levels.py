"""Each level of a trained LRR's pyramid, scored on its own: does refinement help?

    python -m benchmarks.lrr_levels WORKDIR [WORKDIR ...] [--split val] [--scale 0.5]

For every work dir of an LRR run (`lapseg train` of an LRR config), the latest checkpoint is
restored and every image of the split is fed at `--scale` (0.5: the half resolution the CamVid
comparison trains and evaluates at, `benchmarks/decoders_camvid.py`); each pyramid level's
class scores (`level_32` coarsest ... `level_4`, the model's logits) are upsampled bilinearly
to the image's full size and scored against the full-resolution labels: mIoU, per-class IoU
and trimap accuracy at w = 1 and 4. With several work dirs (seeds), the mean over them is
printed too. If a finer level scores below a coarser one, the refinement that produced it
hurts on this data.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from lapseg import data, infer, metrics
from lapseg.ops import resize
from lapseg.ops.normalize import normalize
from lapseg.train import config as config_lib


def level_scores(workdir: str, split: str, scale: float) -> dict:
    """`{level: {'miou', 'per_class_iou', 'w1', 'w4'}}` for one LRR work dir."""
    config = config_lib.load(workdir)
    model, variables, info, _ = infer.restore_model(config, workdir, fold_bn=True)
    source = data.load_source(config.data.dataset, split, **data.location(config.data))

    @jax.jit
    def levels(images):
        return model.apply(variables, images, train=False)

    confusion, counts = {}, {}
    for index in range(len(source)):
        example = source[index]
        height, width = example["label"].shape
        size = (round(height * scale), round(width * scale))
        image = resize.resize_bilinear(
            jnp.asarray(normalize(example["image"], config.data.normalize))[None], size,
            align_corners=False)
        padded = jnp.pad(image, ((0, 0), (0, -size[0] % 32), (0, -size[1] % 32), (0, 0)))
        outputs = levels(padded)
        label = jnp.asarray(example["label"], jnp.int32)[None]
        for name in sorted((k for k in outputs if k.startswith("level_")),
                           key=lambda k: -int(k.split("_")[1])):
            scores = outputs[name]
            factor = padded.shape[1] // scores.shape[1]
            scores = resize.resize_bilinear(scores, (scores.shape[1] * factor,
                                                     scores.shape[2] * factor),
                                            align_corners=False)[:, :size[0], :size[1]]
            scores = resize.resize_bilinear(scores, (height, width), align_corners=False)
            prediction = jnp.argmax(scores, -1)
            matrix = metrics.confusion_matrix(prediction, label, info.num_classes,
                                              info.ignore_label)
            confusion[name] = confusion.get(name, 0) + np.asarray(matrix)
            counts[name] = counts.get(name, 0) + np.asarray(metrics.trimap_counts(
                prediction, label, ignore_label=info.ignore_label, widths=(1, 4)))
    result = {}
    for name, matrix in confusion.items():
        summary = metrics.summarize(matrix)
        trimap = metrics.trimap_accuracy_from_counts(counts[name])
        result[name] = {"miou": float(summary["miou"]),
                        "per_class_iou": np.asarray(summary["per_class_iou"]),
                        "w1": float(trimap[0]), "w4": float(trimap[1])}
    return result, info.class_names


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--split", default="val")
    parser.add_argument("--scale", type=float, default=0.5)
    args = parser.parse_args()
    runs = []
    for workdir in args.workdirs:
        result, names = level_scores(workdir, args.split, args.scale)
        runs.append(result)
        print(f"\n{workdir}")
        print("| level | mIoU | trimap w=1 | w=4 | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 4) + "|")
        for level, r in result.items():
            print(f"| {level} | {r['miou']:.4f} | {r['w1']:.4f} | {r['w4']:.4f} | "
                  + " | ".join(f"{v:.3f}" for v in r["per_class_iou"]) + " |")
    if len(runs) > 1:
        print(f"\nmean over {len(runs)} runs")
        print("| level | mIoU | trimap w=1 | w=4 | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 4) + "|")
        for level in runs[0]:
            mean = {k: np.mean([r[level][k] for r in runs], axis=0) for k in runs[0][level]}
            print(f"| {level} | {mean['miou']:.4f} | {mean['w1']:.4f} | {mean['w4']:.4f} | "
                  + " | ".join(f"{v:.3f}" for v in mean["per_class_iou"]) + " |")


if __name__ == "__main__":
    main()
