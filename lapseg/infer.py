"""Inference: whole image, sliding window, multi-scale + flip test-time augmentation.

    predict_fn = make_predict_fn(model, tile_size=(512, 512), scales=(0.75, 1.0, 1.25), flip=True)
    probs = jax.jit(predict_fn)(variables, images)   # f32 [N, H, W, 3] -> f32 [N, H, W, C]

`predict_fn(variables, images)` is a pure function of arrays: jit it, vmap it or call
it inside another JAX program. Every shape in it (scaled sizes, tile positions) follows
from the input's static shape, so one compilation serves every image of that shape;
`Predictor` pads host images of any size up to a few bucket sizes so that a folder of
mixed sizes compiles a handful of times, not once per image. `restore_model` gives a
training run's model and variables (no optimiser is built or read):

    model, variables, info, step = restore_model(config, workdir, best=True)
    predictor = Predictor.from_workdir(workdir, best=True)   # the same, as a Predictor
    labels = predictor('photo.jpg')                    # a path, PIL or uint8 [H, W, 3] -> [H, W]

`fold_batch_norm(model, variables)` (`lapseg.layers.fold`) folds every BatchNorm into the
conv before it: the same outputs to float rounding, one op less per BatchNorm, no
`batch_stats`. `restore_model(..., fold_bn=True)` returns a run folded, and
`Predictor.from_workdir` folds by default, as `lapseg predict`, `eval` and `export` do.

Views are combined as in semseg's `test.py` (hszhao) and mmsegmentation's `aug_test`:
tiles of one view average their *logits* where they overlap; the views (scales, flips)
average their softmax *probabilities*. Images are rescaled bilinearly with half-pixel
centres and no antialiasing (OpenCV's INTER_LINEAR, as in semseg), and each view's
logits are resized back the same way.

Importing this module loads no input pipeline (grain, tfds): `restore_model` imports
`lapseg.data` for the dataset's classes, and a `Predictor` given a path or a PIL image
`lapseg.data.images` to read it.
"""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
from jax import lax

from lapseg import models, visualize
from lapseg.models import model_logits  # also `lapseg.infer.model_logits`
from lapseg.layers.fold import fold_batch_norm  # also `lapseg.infer.fold_batch_norm`
from lapseg.ops import resize, sizes
from lapseg.ops.normalize import normalize
from lapseg.train import checkpoint as checkpoint_lib
from lapseg.train import state as state_lib

DEFAULT_INIT_SIZE = (64, 64)  # init image size when the config has no crop size


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Offsets of tiles of length `tile` every `stride` covering `[0, size)`, the last one
    flush with the end (`size >= tile`)."""
    count = math.ceil((size - tile) / stride) + 1
    return sorted({min(i * stride, size - tile) for i in range(count)})


def sliding_window_logits(logits_fn, images, tile_size, stride) -> jnp.ndarray:
    """Logits of overlapping tiles, averaged where they overlap.

    The image is zero-padded (bottom/right) to at least one tile; tiles of the static
    shape `tile_size` start every `stride` pixels, the last row and column flush with
    the (padded) image's edge. A `lax.scan` over the tile offsets runs `logits_fn` once
    per tile on the whole batch, adding into a running sum, so memory holds one tile's
    activations whatever the image size.

    Args:
      logits_fn: `[N, th, tw, 3] -> [N, th, tw, C]`.
      images: f32 `[N, H, W, 3]`.
      tile_size: `(th, tw)`.
      stride: `(sh, sw)`, at most the tile size (no gaps).

    Returns:
      f32 `[N, H, W, C]`.
    """
    (tile_height, tile_width), (stride_height, stride_width) = tile_size, stride
    if not (0 < stride_height <= tile_height and 0 < stride_width <= tile_width):
        raise ValueError(f"stride {stride} must be positive and at most the tile size {tile_size}")
    batch, height, width, _ = images.shape
    padded_height, padded_width = max(height, tile_height), max(width, tile_width)
    images = jnp.pad(
        images, ((0, 0), (0, padded_height - height), (0, padded_width - width), (0, 0)))
    starts = np.array([(y, x) for y in tile_starts(padded_height, tile_height, stride_height)
                       for x in tile_starts(padded_width, tile_width, stride_width)], np.int32)
    coverage = np.zeros((padded_height, padded_width), np.float32)
    for y, x in starts:
        coverage[y:y + tile_height, x:x + tile_width] += 1
    tile_shape = (batch, tile_height, tile_width)
    tile_spec = jax.ShapeDtypeStruct((*tile_shape, 3), images.dtype)
    num_classes = jax.eval_shape(logits_fn, tile_spec).shape[-1]

    def add_tile(total, start):
        y, x = start[0], start[1]
        tile = lax.dynamic_slice(images, (0, y, x, 0), (*tile_shape, 3))
        current = lax.dynamic_slice(total, (0, y, x, 0), (*tile_shape, num_classes))
        total = lax.dynamic_update_slice(total, current + logits_fn(tile), (0, y, x, 0))
        return total, None

    total = jnp.zeros((batch, padded_height, padded_width, num_classes), jnp.float32)
    total, _ = lax.scan(add_tile, total, jnp.asarray(starts))
    return (total / coverage[None, :, :, None])[:, :height, :width]


def make_predict_fn(model, *, tile_size=None, tile_overlap: float = 1 / 3, scales=(1.0,),
                    flip: bool = False, size_multiple: int = 32):
    """A pure, jittable `predict_fn(variables, images) -> probabilities`.

    Args:
      model: a lapseg model.
      tile_size: `(th, tw)` for sliding-window inference at every scale, or None for
        whole-image inference.
      tile_overlap: fraction of a tile shared with its neighbour (stride =
        `ceil(tile * (1 - overlap))`); semseg's default stride rate 2/3 is overlap 1/3.
      scales: image scale factors; each view is the image resized by round(s * size).
      flip: also predict on the horizontally flipped image (of every scale) and flip back.
      size_multiple: pad each model input to a multiple of this (the output stride).

    Returns:
      `predict_fn(variables, images)`: f32 `[N, H, W, 3]` normalised images -> f32
      `[N, H, W, C]` class probabilities, the mean over views of each view's softmax.
      `jnp.argmax(..., -1)` gives the labels.
    """
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive, got {scales}")
    if not 0 <= tile_overlap < 1:
        raise ValueError(f"tile_overlap must be in [0, 1), got {tile_overlap}")
    if tile_size is not None:
        tile_size = tuple(int(t) for t in tile_size)
        stride = tuple(max(1, math.ceil(t * (1 - tile_overlap))) for t in tile_size)

    def predict_fn(variables, images):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be [N, H, W, 3], got {images.shape}")
        height, width = images.shape[1:3]
        batch = images.shape[0]

        def logits_fn(x):
            return model_logits(model, variables, x, size_multiple=size_multiple)

        probs = 0.0
        for scale in scales:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            view = images if size == (height, width) else resize.resize_bilinear(
                images, size, align_corners=False)
            if flip:  # One model batch of [image, mirror]: the flipped half is flipped back.
                view = jnp.concatenate([view, view[:, :, ::-1]])
            if tile_size is None:
                logits = logits_fn(view)
            else:
                logits = sliding_window_logits(logits_fn, view, tile_size, stride)
            if size != (height, width):
                logits = resize.resize_bilinear(logits, (height, width), align_corners=False)
            view_probs = jax.nn.softmax(logits, axis=-1)
            if flip:
                view_probs = view_probs[:batch] + view_probs[batch:, :, ::-1]
            probs = probs + view_probs
        return probs / (len(scales) * (2 if flip else 1))

    return predict_fn


def bucket_size(height: int, width: int, bucket: int) -> tuple[int, int]:
    """`(H, W)` rounded up to multiples of `bucket`, the padded shape `Predictor` compiles
    for; `bucket` 0: the evaluation sizes (`lapseg.ops.sizes.eval_padded_size`), the rule
    of the training loop's evaluation, `lapseg eval` and `lapseg predict`."""
    if bucket == 0:
        return sizes.eval_padded_size(height, width)
    return bucket * math.ceil(height / bucket), bucket * math.ceil(width / bucket)


def _as_rgb(image) -> np.ndarray:
    """uint8 RGB `[H, W, 3]` from such an array, a PIL image or an image file's path
    (upright by its EXIF orientation, as viewers show it); a ValueError otherwise."""
    if isinstance(image, (str, os.PathLike, PIL.Image.Image)):
        from lapseg.data import images  # pylint: disable=import-outside-toplevel  (tfds)

        return images.read_rgb(image)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 RGB [H, W, 3], a PIL image or a path, got "
                         f"{image.dtype} {image.shape}")
    return image


class Predictor:
    """Labels for host images of any size: normalise, pad to a bucket, jitted predict, crop.

        predictor = Predictor.from_workdir('workdir/default')        # a `lapseg train` run
        labels = predictor('photo.jpg')                               # int32 [H, W]
        out = predictor(image, probabilities=True, overlay=True)      # a dict, see __call__

    Args:
      model, variables: a lapseg model and its variables (e.g. from `restore_model`).
      normalization: the training config's `data.normalize` ('torch', 'caffe', 'none').
      bucket: images are zero-padded (bottom/right, after normalisation, as in the eval
        pipeline) to multiples of this, so sizes within one bucket share one compilation;
        0 (the default, as `lapseg eval` and `lapseg predict`): to the training loop's
        evaluation sizes (`bucket_size`), so the labels are those evaluation scores.
      info: the dataset's `lapseg.data.DatasetInfo` (palette, ignore label, class names),
        needed only for `overlay=True`; `from_workdir` sets it.
      **predict_kwargs: `make_predict_fn`'s tiling / scales / flip options.

    Attributes:
      info: as given; `step`: the restored step (`from_workdir`), else None.
    """

    def __init__(self, model, variables, *, normalization: str, bucket: int = 0, info=None,
                 **predict_kwargs):
        if bucket < 0:
            raise ValueError(f"bucket must be >= 0, got {bucket}")
        self.variables = variables
        self.normalization = normalization
        self.bucket = bucket
        self.info = info
        self.step = None
        self.predict_fn = jax.jit(make_predict_fn(model, **predict_kwargs))

    @classmethod
    def from_workdir(cls, workdir, *, config=None, best: bool = False, step=None,
                     fold_bn: bool = True, **options) -> "Predictor":
        """The predictor of a training run's latest (or best, or `step`'s) checkpoint.

        Args:
          workdir: a `lapseg train` work dir.
          config: the run's config; default its saved `<workdir>/config.json`
            (`lapseg.train.config.load`: FileNotFoundError naming it when missing).
          best, step: which checkpoint (`restore_model`).
          fold_bn: fold every BatchNorm into its conv (`restore_model`; the default, as
            `lapseg predict`): the same labels, faster.
          **options: `Predictor`'s `bucket` and `make_predict_fn`'s tiling / scales / flip.

        Returns:
          A `Predictor` with the run's normalisation, its dataset's `info` (for overlays)
          and the restored `step`: what `lapseg predict --workdir W` runs.
        """
        if config is None:
            from lapseg.train import config as config_lib  # pylint: disable=import-outside-toplevel

            config = config_lib.load(workdir)
        model, variables, info, restored = restore_model(config, workdir, best=best, step=step,
                                                         fold_bn=fold_bn)
        predictor = cls(model, variables, normalization=config.data.normalize, info=info,
                        **options)
        predictor.step = restored
        return predictor

    def __call__(self, image, *, probabilities: bool = False, overlay: bool = False,
                 alpha: float = 0.5):
        """The labels of one image, and optionally its probabilities and an overlay.

        Args:
          image: uint8 RGB `[H, W, 3]`, a PIL image or the path of an image file (any mode:
            `lapseg.data.images.read_rgb`; turned upright by its EXIF orientation).
          probabilities: also return the class probabilities.
          overlay: also return the class colours blended over the image, regions
            outlined, ignored and background pixels untouched (`lapseg.visualize.overlay`
            at the image's size; needs `info`, as `from_workdir` sets it).
          alpha: the colours' weight in the overlay, in [0, 1].

        Returns:
          int32 `[H, W]` class ids; with `probabilities` or `overlay` a dict of `'labels'`
          and `'probabilities'` (f32 `[H, W, C]`, the mean over views of their softmax)
          and / or `'overlay'` (uint8 `[H, W, 3]`).
        """
        image = _as_rgb(image)
        if overlay and self.info is None:
            raise ValueError("overlay=True needs the dataset's palette: build the predictor "
                             "with Predictor.from_workdir or pass info=DatasetInfo")
        height, width = image.shape[:2]
        padded = np.zeros((1, *bucket_size(height, width, self.bucket), 3), np.float32)
        padded[0, :height, :width] = normalize(image, self.normalization)
        probs = self.predict_fn(self.variables, padded)[0, :height, :width]
        labels = np.asarray(jnp.argmax(probs, -1), np.int32)
        if not (probabilities or overlay):
            return labels
        out = {"labels": labels}
        if probabilities:
            out["probabilities"] = np.asarray(probs, np.float32)
        if overlay:
            out["overlay"] = visualize.overlay(
                image, labels, self.info.palette, ignore_label=self.info.ignore_label,
                alpha=alpha, background=visualize.background_class(self.info.class_names))
        return out


def restore_model(config, workdir, *, best: bool = False, step=None, fold_bn: bool = False):
    """The model of a training run and its variables from the run's checkpoints.

    Only the variables are read (`params`, `batch_stats`, frozen `constants` such as LRR
    bases): no optimiser is built and its state is not read.

    Args:
      config: the run's config (`<workdir>/config.json` through
        `lapseg.train.config.load`, or the config file it was trained with). It names
        the model; a checkpoint of another model or class count raises
        `lapseg.train.checkpoint.CheckpointError` naming both.
      workdir: the training work dir.
      best: the best-mIoU checkpoint (`<workdir>/best`) instead of the latest
        (`<workdir>/checkpoints`).
      step: a specific step (default: the latest of the chosen kind).
      fold_bn: return the model and variables with every BatchNorm folded into its conv
        (`fold_batch_norm`): for inference only, eval-mode outputs equal to float rounding,
        no `batch_stats`; the model cannot train.

    Returns:
      `(model, variables, info, step)`: the linen model (`lapseg.models.from_config`,
      wrapped by `fold_batch_norm` with `fold_bn`), its variables `{'params': ...,
      'batch_stats': ..., ...}` on the default device, the dataset's `DatasetInfo`
      (classes, palette, ignore label) and the restored step.
    """
    from lapseg import data as data_lib  # pylint: disable=import-outside-toplevel  (tfds)

    info = data_lib.dataset_info(config.data.dataset, config.data.get("source_dir"))
    model = models.from_config(config, info.num_classes)
    crop = config.data.get("crop_size", None)
    image_shape = (1, *(tuple(crop) if crop else DEFAULT_INIT_SIZE), 3)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.eval_shape(
        lambda rng: state_lib.init_variables(model, rng, image_shape), jax.random.key(0))
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)
    directory = os.path.join(os.path.abspath(os.fspath(workdir)), "best" if best else "checkpoints")
    identity = {"model": config.model, **checkpoint_lib.contract(config, info)}
    variables, step = checkpoint_lib.read_variables(directory, abstract, meta=identity, step=step)
    if fold_bn:
        model, variables = fold_batch_norm(model, variables, image_shape=image_shape)
    return model, variables, info, step
