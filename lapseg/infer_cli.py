"""`lapseg predict [--config C] [--checkpoint WORKDIR] [--best] [options] IMAGES...`

For each image writes `<output_dir>/<stem>_label.png`, a palette PNG whose pixel values
are the predicted class ids, and `<stem>_overlay.png`, the class colours blended over
the image. `--checkpoint` is a training work dir (`lapseg train --workdir`); the model
is restored from its latest checkpoint, or with `--best` from its best-mIoU one, and
`--config` must be the config it was trained with (default: the embedded default).

Inference options, shared with `lapseg eval`:
  --scales=0.75,1,1.25 --flip   multi-scale and mirrored views, probabilities averaged
  --tile_size=512,512           sliding window (overlap --tile_overlap, default 1/3)
  --bucket=128                  pad images to multiples of this: one compile per bucket
"""

import os
import sys

from absl import flags
from ml_collections import config_flags

from lapseg.train import cli as train_cli


def parse_flags(argv, *, checkpoint_flag: str, bucket: int, extra=None):
    """Parses the config, checkpoint and inference flags (plus `extra(flag_values)`'s).

    Args:
      argv: `[program, *args]`.
      checkpoint_flag: the name of the work-dir flag (`'checkpoint'` or `'workdir'`).
      bucket: default `--bucket`.
      extra: optional function defining more flags on the `FlagValues`.

    Returns:
      `(flag_values, predict_kwargs, positional arguments)`, `predict_kwargs` the
      tiling / scales / flip options for `lapseg.infer.Predictor`.
    """
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", str(train_cli.DEFAULT_CONFIG), "The config the model was trained with.",
        flag_values=flag_values, lock_config=True)
    flags.DEFINE_string(checkpoint_flag, "workdir/default", "Training work dir to restore from.",
                        flag_values=flag_values)
    flags.DEFINE_bool("best", False, "Restore the best-mIoU checkpoint instead of the latest.",
                      flag_values=flag_values)
    flags.DEFINE_list("scales", ["1.0"], "Image scales of the views (probabilities averaged).",
                      flag_values=flag_values)
    flags.DEFINE_bool("flip", False, "Add horizontally mirrored views.", flag_values=flag_values)
    flags.DEFINE_list("tile_size", [], "Sliding-window tile 'H,W' (empty: whole image).",
                      flag_values=flag_values)
    flags.DEFINE_float("tile_overlap", 1 / 3, "Fraction of a tile shared with its neighbour.",
                       flag_values=flag_values)
    flags.DEFINE_integer("bucket", bucket, "Pad images to multiples of this (fewer compiles).",
                         flag_values=flag_values)
    if extra is not None:
        extra(flag_values)
    try:
        positional = flag_values(argv)[1:]
        scales = tuple(float(s) for s in flag_values.scales)
        tile_size = tuple(int(t) for t in flag_values.tile_size)
    except (flags.Error, ValueError) as err:
        sys.exit(f"{argv[0]}: {err}")
    if tile_size and len(tile_size) != 2:
        sys.exit(f"{argv[0]}: --tile_size takes 'H,W', got {','.join(flag_values.tile_size)}")
    predict_kwargs = {"tile_size": tile_size or None, "tile_overlap": flag_values.tile_overlap,
                      "scales": scales, "flip": flag_values.flip}
    return flag_values, predict_kwargs, positional


def restore_predictor(program: str, flag_values, workdir: str, predict_kwargs):
    """`(Predictor, DatasetInfo)`: the model of `--config` restored from `workdir`."""
    checkpoints = os.path.join(workdir, "best" if flag_values.best else "checkpoints")
    if not os.path.isdir(checkpoints):
        sys.exit(f"{program}: {workdir} is not a training work dir with a saved checkpoint "
                 f"({checkpoints} does not exist)")
    # pylint: disable=import-outside-toplevel  (JAX and tfds only once the flags are good)
    from lapseg import infer
    from lapseg.train import loop

    config = flag_values.config
    model, variables, info = loop.restore_model(config, workdir, best=flag_values.best)
    predictor = infer.Predictor(model, variables, normalization=config.data.normalize,
                                bucket=flag_values.bucket, **predict_kwargs)
    return predictor, info


def _extra_flags(flag_values):
    flags.DEFINE_string("output_dir", "predictions", "Where the PNGs go.", flag_values=flag_values)
    flags.DEFINE_string("palette", "", "Palette: 'voc' or a dataset name (default: the config's).",
                        flag_values=flag_values)
    flags.DEFINE_float("alpha", 0.5, "Weight of the class colours in the overlay.",
                       flag_values=flag_values)


def main(argv) -> int:
    flag_values, predict_kwargs, paths = parse_flags(
        argv, checkpoint_flag="checkpoint", bucket=128, extra=_extra_flags)
    if not paths:
        sys.exit(f"{argv[0]}: give one or more image files")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        sys.exit(f"{argv[0]}: no such image file: {', '.join(missing)}")
    stems = {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in stems:
            sys.exit(f"{argv[0]}: {stems[stem]} and {path} would write the same {stem}_*.png")
        stems[stem] = path

    # pylint: disable=import-outside-toplevel
    import numpy as np
    import PIL.Image

    from lapseg import visualize

    predictor, info = restore_predictor(argv[0], flag_values, flag_values.checkpoint,
                                        predict_kwargs)
    palette = visualize.palette_for(flag_values.palette) if flag_values.palette else info.palette
    if len(palette) != info.num_classes + 1:
        sys.exit(f"{argv[0]}: palette {flag_values.palette!r} has {len(palette) - 1} classes, "
                 f"the model {info.num_classes}")
    os.makedirs(flag_values.output_dir, exist_ok=True)
    for stem, path in stems.items():
        with PIL.Image.open(path) as image:
            image = np.asarray(image.convert("RGB"))
        pred = predictor(image)
        label_path = os.path.join(flag_values.output_dir, f"{stem}_label.png")
        overlay_path = os.path.join(flag_values.output_dir, f"{stem}_overlay.png")
        visualize.label_png(pred, palette, ignore_label=info.ignore_label).save(label_path)
        PIL.Image.fromarray(visualize.overlay(
            image, pred, palette, ignore_label=info.ignore_label, alpha=flag_values.alpha),
        ).save(overlay_path)
        print(f"{path}: {label_path}, {overlay_path}")
    return 0
