"""`lapseg eval [--config C] [--workdir WORKDIR] [--best] [--split validation] [options]`

Evaluates the run's checkpoint (latest, or `--best`) on a split of the config's
dataset, image by image at full resolution, and prints per-class IoU, mIoU, pixel
accuracy and the boundary (trimap) accuracy: pixel accuracy within `w` pixels of a
label boundary for w in 1, 2, 4, 8, 16 (`lapseg.metrics.trimap_accuracy`), the measure
that shows what boundary refinement buys. Inference options (`--scales`, `--flip`,
`--tile_size`, `--bucket`) are those of `lapseg predict`. With the default `--bucket=32`
images are padded as the training loop's evaluation pads them by default (to multiples
of 32), so the whole-image mIoU is the one the loop reported for that checkpoint.
"""

import sys

import numpy as np

from lapseg import infer_cli


def evaluate(predictor, source, info, *, widths=None) -> dict:
    """Confusion matrix and trimap counts over `source`, one image at a time.

    Args:
      predictor: `lapseg.infer.Predictor` (uint8 image -> class ids).
      source: sequence of `{'image': uint8 [H, W, 3], 'label': uint8 [H, W]}`.
      info: the dataset's `DatasetInfo`.
      widths: trimap band widths (default `lapseg.metrics.TRIMAP_WIDTHS`).

    Returns:
      `lapseg.metrics.summarize`'s dict (`miou`, `per_class_iou`, `pixel_accuracy`) plus
      `trimap_widths`, `trimap_accuracy` (float `[len(widths)]`) and `trimap_pixels` (int
      `[len(widths)]`, non-ignored pixels in each band).
    """
    # pylint: disable=import-outside-toplevel
    import jax

    from lapseg import metrics

    widths = tuple(widths or metrics.TRIMAP_WIDTHS)

    @jax.jit  # One compilation per image size.
    def image_counts(pred, label):
        confusion = metrics.confusion_matrix(pred, label, info.num_classes, info.ignore_label)
        trimap = metrics.trimap_counts(pred[None], label[None], ignore_label=info.ignore_label,
                                       widths=widths)
        return confusion, trimap

    confusion = np.zeros((info.num_classes, info.num_classes), np.int64)
    trimap = np.zeros((len(widths), 2), np.int64)
    for example in source:
        image_confusion, image_trimap = image_counts(predictor(example["image"]), example["label"])
        confusion += np.asarray(image_confusion)
        trimap += np.asarray(image_trimap)
    result = metrics.summarize(confusion)
    result["trimap_widths"] = widths
    result["trimap_accuracy"] = metrics.trimap_accuracy_from_counts(trimap)
    result["trimap_pixels"] = trimap[:, 1]
    return result


def trimap_table(result) -> str:
    """The boundary-accuracy part of the report as aligned text."""
    lines = ["boundary (trimap) pixel accuracy", f"{'band width':<12} {'accuracy':<9} pixels"]
    for width, accuracy, pixels in zip(result["trimap_widths"], result["trimap_accuracy"],
                                       result["trimap_pixels"]):
        lines.append(f"{width:<12} {accuracy:<9.4f} {pixels}")
    return "\n".join(lines)


def _extra_flags(flag_values):
    from absl import flags  # pylint: disable=import-outside-toplevel

    flags.DEFINE_string("split", "validation", "Split of the config's dataset.",
                        flag_values=flag_values)


def main(argv) -> int:
    flag_values, predict_kwargs, positional = infer_cli.parse_flags(
        argv, checkpoint_flag="workdir", bucket=32, extra=_extra_flags)
    if positional:
        sys.exit(f"{argv[0]}: unexpected arguments {' '.join(positional)}")
    # pylint: disable=import-outside-toplevel
    from lapseg import data
    from lapseg.train import logging as log_lib

    config = flag_values.config
    predictor, info = infer_cli.restore_predictor(
        argv[0], flag_values, flag_values.workdir, predict_kwargs)
    source = data.load_source(config.data.dataset, flag_values.split,
                              data_dir=config.data.data_dir, source_dir=config.data.source_dir)
    result = evaluate(predictor, source, info)
    print(f"{config.model} on {config.data.dataset} {flag_values.split} "
          f"({len(source)} images, {'best' if flag_values.best else 'latest'} checkpoint "
          f"of {flag_values.workdir})")
    print(log_lib.summary_table(result, info.class_names))
    print(trimap_table(result))
    return 0
