"""`lapseg eval [--workdir W] [--config C] [--best] [--split val] [inference flags]`

Evaluates a training run's latest checkpoint (or with --best its best-mIoU one) on a
split of its dataset, image by image, each at its own resolution against its full label
map, prints per-class IoU, mIoU, pixel accuracy and the boundary (trimap) accuracy (pixel
accuracy within w pixels of a label boundary, w in 1, 2, 4, 8, 16: what boundary
refinement buys), and writes them to `<workdir>/eval_<split>.json`:

  {"miou", "per_class_iou" (NaN: null), "class_names", "pixel_accuracy",
   "class_pixels" (labelled pixels of each class in the split, at label resolution),
   "trimap_accuracy": {"1": ..., "2": ..., ...}, "trimap_pixels": {"1": ..., ...},
   "step", "split", "checkpoint": "latest" | "best", "num_images"}

The model's config is the run's own `<workdir>/config.json` (written by `lapseg train`);
--config replaces it, for runs without one. `--config.field=value` overrides either.
Inference flags (--scales, --flip, --tile_size, --tile_overlap, --bucket, --fold_bn) are
those of `lapseg predict`; with the default --bucket=0 images are padded as the training
loop's evaluation pads them, so the mIoU is the one the loop reported for that checkpoint
(to float rounding: BatchNorm is folded unless --fold_bn=false), and the labels are those
`lapseg predict` writes.
"""

import contextlib
import json
import math
import os
import re
import sys

from absl import flags

from lapseg.cli import common


def trimap_table(result) -> str:
    """The boundary-accuracy part of the report as aligned text."""
    lines = ["boundary (trimap) pixel accuracy", f"{'band width':<12} {'accuracy':<9} pixels"]
    for width, accuracy, pixels in zip(result["trimap_widths"], result["trimap_accuracy"],
                                       result["trimap_pixels"]):
        lines.append(f"{width:<12} {accuracy:<9.4f} {pixels}")
    return "\n".join(lines)


def _number(value):
    """float, or None for NaN (JSON has no NaN)."""
    value = float(value)
    return None if math.isnan(value) else value


def result_json(result, *, class_names, step, split, best, num_images) -> dict:
    """`lapseg.metrics.evaluate`'s result (with trimap widths) as the eval_<split>.json dict."""
    widths = [str(w) for w in result["trimap_widths"]]
    return {
        "miou": _number(result["miou"]),
        "per_class_iou": [_number(v) for v in result["per_class_iou"]],
        "class_names": list(class_names),
        "pixel_accuracy": _number(result["pixel_accuracy"]),
        "trimap_accuracy": dict(zip(widths, map(_number, result["trimap_accuracy"]))),
        "trimap_pixels": dict(zip(widths, map(int, result["trimap_pixels"]))),
        "step": int(step),
        "split": split,
        "checkpoint": "best" if best else "latest",
        "num_images": int(num_images),
        "class_pixels": [int(v) for v in result["class_pixels"]],
    }


def result_path(workdir, split: str) -> str:
    """`<workdir>/eval_<split>.json`, characters other than [A-Za-z0-9_.-] of a tfds slice
    (`validation[:50]`) replaced by '_'."""
    return os.path.join(workdir, f"eval_{re.sub(r'[^A-Za-z0-9_.-]+', '_', split)}.json")


def _define(flag_values):
    flags.DEFINE_string("split", "val", "Split of the config's dataset, e.g. val, test, "
                        "train (tfds slices such as 'val[:50]' work too).",
                        flag_values=flag_values)


def main(argv) -> int:
    program = argv[0]
    flag_values, positional = common.parse_run_flags(argv, __doc__, define=_define)
    if positional:
        common.fail(program, f"unexpected arguments {' '.join(positional)}", "see --help")
    options = common.inference_options(program, flag_values)
    config, workdir, split = flag_values.config, flag_values.workdir, flag_values.split
    common.quiet_logging()
    # pylint: disable=import-outside-toplevel  (JAX and tfds only once the flags are good)
    import jax

    from lapseg import data, metrics
    from lapseg.train import reporting as log_lib

    predictor, info, step = common.restore_predictor(program, config, workdir, options,
                                                     best=flag_values.best,
                                                     fold_bn=flag_values.fold_bn)
    try:
        source = data.load_source(config.data.dataset, split, **data.location(config.data))
    except (ValueError, OSError) as err:  # a missing split, or data that does not build
        common.fail(program, str(err),
                    "pass a --split the dataset has" if "has no split" in str(err) else None)
    widths = metrics.TRIMAP_WIDTHS

    @jax.jit  # One compilation per image size.
    def image_counts(pred, label):
        return {"confusion": metrics.confusion_matrix(pred, label, info.num_classes,
                                                      info.ignore_label),
                "trimap": metrics.trimap_counts(pred[None], label[None],
                                                ignore_label=info.ignore_label, widths=widths)}

    def count_fn(example):
        return image_counts(predictor(example["image"]), example["label"])

    result = metrics.evaluate(count_fn, source, num_classes=info.num_classes, widths=widths)
    if not result["class_pixels"].sum():
        common.fail(program, f"nothing was scored: every label pixel of the {len(source)} "
                    f"images of {config.data.dataset} {split} is the ignore label "
                    f"({info.ignore_label})", "check the split's labels")
    print(f"{config.model} on {config.data.dataset} {split} ({len(source)} images, "
          f"{'best' if flag_values.best else 'latest'} checkpoint, step {step}, of {workdir})")
    print(log_lib.summary_table(result, info.class_names))
    print(trimap_table(result))
    path = result_path(workdir, split)
    report = result_json(result, class_names=info.class_names, step=step, split=split,
                         best=flag_values.best, num_images=len(source))
    try:
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        os.replace(path + ".tmp", path)
    except OSError as err:  # a read-only work dir, a full disk: the metrics are printed above
        with contextlib.suppress(OSError):
            os.remove(path + ".tmp")
        common.fail(program, f"the metrics are above, but {path} could not be written "
                    f"({err.strerror or err})", "make the work dir writable or free disk space")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":  # the same as `lapseg eval`
    from lapseg import cli

    sys.exit(cli.main(["eval", *sys.argv[1:]]))
