"""`lapseg predict [--workdir W] [--config C] [--best] [--output_dir D] [flags] IMAGES...`

For each image writes to --output_dir:
  <stem>_label.png    a palette PNG of the predicted class ids, at the image's size (a
                      viewer shows the class colours; reading it gives the ids back)
  <stem>_overlay.png  the class colours blended over the image (--alpha, 0 to 1, their
                      weight), each region outlined in its colour; ignored pixels and a
                      background class (class 0 named 'background' or 'void') show the
                      photo untouched
  <stem>_panels.png   image | prediction | ground truth (with --masks), and a legend of
                      the classes present
The overlay and the panels are enlarged by a whole factor to at least 512 px on the long
side (labels nearest, the photo bilinearly). With --masks=DIR, DIR/<stem>.png is each
image's ground truth: a class-id PNG like a folder dataset's masks (e.g. --masks
/data/mine/masks/val /data/mine/images/val). An image with an EXIF orientation (phone
photos) is turned upright first, as viewers show it, and the PNGs are upright. The
model is a training run's (`lapseg train --workdir W`), restored from its latest
checkpoint or with --best from its best-mIoU one; its config is the run's own
`<workdir>/config.json`, or --config for runs without one.

IMAGES are files, directories (their *.png, *.jpg and *.jpeg files, any case, not
hidden, not recursive, sorted) and quoted glob patterns (`'photos/*.jpg'`, expanded
here, sorted); an image named twice is predicted once. A directory or pattern that
matches no image is an error naming it.

Inference flags, shared with `lapseg eval`:
  --scales=0.75,1,1.25 --flip   multi-scale and mirrored views, probabilities averaged
  --tile_size=512,512           sliding window (overlap --tile_overlap, default 1/3)
  --bucket=0                    pad images as the training loop's evaluation (the default;
                                N: to multiples of N): one compile per padded size
  --fold_bn=false               run the model as trained; by default every BatchNorm is
                                folded into its conv (same labels, faster)
"""

import glob
import os
import sys
import tempfile

from absl import flags

from lapseg.cli import common

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # of the images a directory gives
GLOB_CHARACTERS = "*?["  # an argument with one of these (and no such file) is a pattern


def _define(flag_values):
    flags.DEFINE_string("output_dir", "predictions", "Where the PNGs go.", flag_values=flag_values)
    flags.DEFINE_string("palette", "", "Palette: 'voc' or a dataset name (default: the config's).",
                        flag_values=flag_values)
    flags.DEFINE_float("alpha", 0.5, "Weight of the class colours in the overlay (0 to 1).",
                       flag_values=flag_values)
    flags.DEFINE_string("masks", "", "Directory of ground-truth class-id PNGs <stem>.png: a "
                        "third panel (default: none).", flag_values=flag_values)


def image_paths(program, args) -> list[str]:
    """The image files that `args` name, in order, each once.

    An existing file is itself; a directory gives its `IMAGE_SUFFIXES` files (any case,
    not hidden, not recursive) sorted; an argument with `GLOB_CHARACTERS` gives the
    files that match, sorted. A directory or pattern without a match and a missing file
    are one-line exits naming them. Duplicates (the same file twice, however spelt) are
    dropped, the first kept.
    """
    paths, missing = [], []
    for arg in args:
        if os.path.isfile(arg):
            paths.append(arg)
        elif os.path.isdir(arg):
            found = sorted(os.path.join(arg, name) for name in os.listdir(arg)
                           if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")
                           and os.path.isfile(os.path.join(arg, name)))
            if not found:
                common.fail(program, f"no {'/'.join(IMAGE_SUFFIXES)} images in directory {arg}")
            paths += found
        elif any(c in arg for c in GLOB_CHARACTERS):
            found = sorted(p for p in glob.glob(arg) if os.path.isfile(p))
            if not found:
                common.fail(program, f"no image files match {arg!r}")
            paths += found
        else:
            missing.append(arg)
    if missing:
        common.fail(program, f"no such image file: {', '.join(missing)}")
    unique = {}
    for path in paths:
        unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


def _image_stems(program, paths) -> dict:
    """stem -> path; two images with one stem are a one-line exit."""
    if not paths:
        common.fail(program, "no images given", "pass image files, directories or patterns")
    stems = {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in stems:
            common.fail(program, f"{stems[stem]} and {path} would write the same {stem}_*.png",
                        "rename one, or predict them in two runs")
        stems[stem] = path
    return stems


def check_output_dir(program, path) -> None:
    """A one-line exit unless `path` is a directory or can be made one: it, or its nearest
    existing parent, must not be a file."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is" if existing == os.path.abspath(path) else f"is under {existing}, which is"
        common.fail(program, f"--output_dir {path} {where} a file, not a directory",
                    "pass a directory (it is made if missing)")
    try:  # writable (a read-only file system, no permission, a full disk): before any work
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        common.fail(program, f"cannot write in --output_dir {path} ({err.strerror or err})",
                    "pass a writable directory")


def _ground_truth(masks: str, stem: str, shape, info):
    """int `[H, W]` class ids of `<masks>/<stem>.png`, or None without --masks; a
    ValueError naming the file when it is missing, unreadable, not single-channel, of
    another size than its image or holds a value that is neither a class id nor the
    ignore label."""
    if not masks:
        return None
    import numpy as np  # pylint: disable=import-outside-toplevel
    import PIL.Image  # pylint: disable=import-outside-toplevel

    path = os.path.join(masks, f"{stem}.png")
    try:
        with PIL.Image.open(path) as mask:
            values = np.asarray(mask).astype(np.int64)
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"--masks: cannot read the ground truth {path} ({err})") from err
    if values.shape != tuple(shape):
        raise ValueError(f"--masks: {path} is {values.shape} (H, W[, C]), its image "
                         f"{tuple(shape)}; pass single-channel class-id PNGs of the images' size")
    bad = (values < 0) | (values >= info.num_classes)
    bad &= values != info.ignore_label
    if bad.any():
        raise ValueError(f"--masks: {path} holds value {values[bad][0]}, neither a class id "
                         f"(0..{info.num_classes - 1}) nor the ignore label {info.ignore_label}")
    return values


def main(argv) -> int:
    program = argv[0]
    flag_values, paths = common.parse_run_flags(argv, __doc__, define=_define)
    stems = _image_stems(program, image_paths(program, paths))
    options = common.inference_options(program, flag_values)
    if not 0 <= flag_values.alpha <= 1:
        common.fail(program, f"--alpha must be in [0, 1], got {flag_values.alpha}",
                    "pass the overlay's colour weight, e.g. --alpha=0.5")
    if flag_values.masks and not os.path.isdir(flag_values.masks):
        common.fail(program, f"--masks {flag_values.masks} is not a directory",
                    "pass the directory of the images' class-id PNGs <stem>.png")
    check_output_dir(program, flag_values.output_dir)
    common.quiet_logging()
    # pylint: disable=import-outside-toplevel  (JAX only once the flags are good)
    import PIL.Image

    from lapseg import visualize
    from lapseg.data import images

    predictor, info, _ = common.restore_predictor(program, flag_values.config,
                                                  flag_values.workdir, options,
                                                  best=flag_values.best,
                                                  fold_bn=flag_values.fold_bn)
    if flag_values.palette:
        try:
            palette = visualize.palette_for(flag_values.palette)
        except ValueError as err:
            common.fail(program, f"--palette: {err}", "pass 'voc' or a dataset name")
    else:
        palette = info.palette
    if len(palette) != info.num_classes + 1:
        common.fail(program, f"palette {flag_values.palette!r} has {len(palette) - 1} classes, "
                    f"the model {info.num_classes}")
    output_dir = flag_values.output_dir
    os.makedirs(output_dir, exist_ok=True)
    background = visualize.background_class(info.class_names)
    for stem, path in stems.items():
        try:
            image = images.read_rgb(path)  # upright as viewers show it (EXIF orientation)
            truth = _ground_truth(flag_values.masks, stem, image.shape[:2], info)
        except ValueError as err:  # unreadable, cut, corrupt, float; a bad mask
            common.fail(program, str(err))
        pred = predictor(image)
        written = [os.path.join(output_dir, f"{stem}_{kind}.png")
                   for kind in ("label", "overlay", "panels")]
        big_image, big_pred = visualize.enlarge(image, pred, scale=visualize.display_scale(
            *pred.shape))
        try:
            visualize.label_png(pred, palette, ignore_label=info.ignore_label).save(written[0])
            PIL.Image.fromarray(visualize.overlay(
                big_image, big_pred, palette, ignore_label=info.ignore_label,
                alpha=flag_values.alpha, background=background)).save(written[1])
            PIL.Image.fromarray(visualize.side_by_side(
                image, pred, palette, class_names=info.class_names,
                ignore_label=info.ignore_label, ground_truth=truth)).save(written[2])
        except OSError as err:  # the disk filled up meanwhile
            common.fail(program, f"cannot write {written[0]} ({err.strerror or err})",
                        "free disk space or pass another --output_dir")
        print(f"{path}: {', '.join(written)}")
    return 0


if __name__ == "__main__":  # the same as `lapseg predict`
    from lapseg import cli

    sys.exit(cli.main(["predict", *sys.argv[1:]]))
