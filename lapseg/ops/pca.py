"""Label-patch PCA in one streaming pass before training: LRR bases, DUpsampling matrix.

Both are principal directions of label patches. `label_batches` is any iterable of
integer label maps `[N, H, W]` (numpy or jax), consumed once. Per batch a jitted update
adds exact integer moments (count, sum, sum of outer products) of the patches; the
covariance is centred at the end and diagonalised with `jnp.linalg.eigh`.

The moments are int32 and each batch's are computed in f32 from 0/1 indicators (exact in
bf16/TF32/f32 while a batch has < 2**24 patches), so the moments are exact and the result
does not depend on how the labels are batched. Limit: < 2**31 patches in all.

Label conventions: class ids in `[0, num_classes)`, plus `ignore_label` (outside that
range) for void pixels. Ignore pixels are "no class": they count as "not c" in LRR
indicator patches and get an all-zero one-hot row in DUpsampling patches.

Eigenvectors are sign-fixed so that each one's largest-magnitude entry is positive, so
the output is deterministic up to ties in that entry.
"""

import functools
import warnings
from typing import Iterable, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np

from lapseg.ops import dupsample as dup
from lapseg.ops import resize

# Per-batch moments are f32 sums of 0/1 products, exact below this many patches.
_MAX_PATCHES_PER_BATCH = 2**24


class _Moments(NamedTuple):
    """Exact streaming moments of G groups of D-dimensional 0/1 vectors."""

    count: jnp.ndarray  # [G] int32, number of vectors
    total: jnp.ndarray  # [G, D] int32, sum of vectors
    outer: jnp.ndarray  # [G, D, D] int32, sum of outer products


def _zero_moments(groups: int, dim: int) -> _Moments:
    return _Moments(
        jnp.zeros((groups,), jnp.int32),
        jnp.zeros((groups, dim), jnp.int32),
        jnp.zeros((groups, dim, dim), jnp.int32),
    )


def _add_moments(moments: _Moments, x: jnp.ndarray, weight: jnp.ndarray) -> _Moments:
    """Adds vectors `x[M, G, D]` (0/1, already zero where `weight[M, G]` is 0) to the moments.

    `outer[g] += sum_m x[m, g]^T x[m, g]`, `total[g] += sum_m x[m, g]`, `count[g] += sum_m weight`.
    """

    def exact(v):  # f32 holding integers -> int32
        return jnp.round(v).astype(jnp.int32)

    return _Moments(
        moments.count + weight.astype(jnp.int32).sum(0),
        moments.total + exact(x.sum(0)),
        moments.outer + exact(jnp.einsum("mgp,mgq->gpq", x, x)),
    )


@functools.partial(jax.jit, static_argnames="k")
def _principal_directions(moments: _Moments, k: int):
    """Top-k eigenpairs of each group's covariance `outer/n - mean mean^T`.

    Returns:
      `(eigenvalues [G, k] descending, directions [G, k, D] orthonormal rows, mean [G, D])`.
    """
    n = jnp.maximum(moments.count, 1).astype(jnp.float32)[:, None]
    mean = moments.total / n
    covariance = moments.outer / n[..., None] - mean[:, :, None] * mean[:, None, :]
    values, vectors = jnp.linalg.eigh(covariance)  # ascending; eigenvectors in columns
    values = values[:, ::-1][:, :k]
    directions = jnp.swapaxes(vectors[:, :, ::-1][:, :, :k], 1, 2)
    largest = jnp.argmax(jnp.abs(directions), axis=-1)[..., None]
    sign = jnp.sign(jnp.take_along_axis(directions, largest, axis=-1))
    return values, directions * sign, mean


def _one_hot(labels: jnp.ndarray, num_classes: int) -> jnp.ndarray:
    """`[N, H, W]` -> f32 `[N, H, W, C]`; ids outside `[0, C)` (the ignore label) give zero rows."""
    return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)


def _check_labels(batch, num_classes: int, ignore_label: int, name: str) -> np.ndarray:
    """Host-side check of one label batch; returns it as int32 numpy `[N, H, W]`."""
    labels = np.asarray(batch)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}: label batches must be integer [N, H, W], got {labels.dtype} {labels.shape}")
    bad = ((labels < 0) | (labels >= num_classes)) & (labels != ignore_label)
    if bad.any():
        raise ValueError(
            f"{name}: labels {np.unique(labels[bad])[:8].tolist()} are neither a class id in "
            f"[0, {num_classes}) nor ignore_label={ignore_label}"
        )
    return labels.astype(np.int32)


def _check_ignore_label(num_classes: int, ignore_label: int, name: str) -> None:
    if 0 <= ignore_label < num_classes:
        raise ValueError(f"{name}: ignore_label={ignore_label} is a class id (num_classes={num_classes})")


# --------------------------------------------------------------------------------------
# LRR: per-class bases of binary indicator patches.


@functools.partial(jax.jit, static_argnames=("patch", "crops_per_image"))
def _crops(labels, first_image, seed, *, patch, crops_per_image):
    n, height, width = labels.shape
    # Threefry explicitly: its fold_in/randint are the same under vmap as unbatched, which
    # the batching-independence below needs ('rbg', a global option, is not).
    root = jax.random.key(seed, impl="threefry2x32")
    # One key per image index (not per batch), so the crops do not depend on batching.
    keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(first_image + jnp.arange(n))
    limits = jnp.array([height - patch + 1, width - patch + 1])
    origins = jax.vmap(lambda key: jax.random.randint(key, (crops_per_image, 2), 0, limits))(keys)
    offsets = jnp.arange(patch)
    rows = origins[:, :, 0, None] + offsets  # [N, P, patch]
    cols = origins[:, :, 1, None] + offsets
    image = jnp.arange(n)[:, None, None, None]
    return labels[image, rows[:, :, :, None], cols[:, :, None, :]]  # one gather: [N, P, patch, patch]


def lrr_crops(labels, *, patch: int = 32, crops_per_image: int = 100, seed: int = 0, first_image: int = 0):
    """The random label crops `lrr_bases` draws from a batch.

    Crop origins are uniform over all positions where a `patch x patch` crop fits, drawn
    from `fold_in(key(seed), first_image + i)` for image i of the batch: the crops of an
    image depend only on its index in the stream, not on the batching. (The reference,
    golnazghiasi/LRR `deconvBases/ClassPatches.m`, draws 100 crops per image with MATLAB's
    `randi`, excluding the last two positions; the same up to that detail.)

    Args:
      labels: integer `[N, H, W]`, `H, W >= patch`.
      patch: crop size.
      crops_per_image: crops drawn per image.
      seed: random seed.
      first_image: stream index of `labels[0]`.

    Returns:
      `[N, crops_per_image, patch, patch]` label crops (int32).
    """
    labels = jnp.asarray(labels, jnp.int32)
    chex.assert_rank(labels, 3)
    if min(labels.shape[1:]) < patch:
        raise ValueError(f"lrr_crops: images {labels.shape[1:]} are smaller than patch={patch}")
    return _crops(labels, first_image, seed, patch=patch, crops_per_image=crops_per_image)


@functools.partial(
    jax.jit,
    static_argnames=("num_classes", "patch", "crops_per_image"),
    donate_argnums=0,
)
def _lrr_update(
    moments, labels, first_image, seed, min_fraction, patches_per_class, *, num_classes, patch, crops_per_image
):
    crops = _crops(labels, first_image, seed, patch=patch, crops_per_image=crops_per_image)
    crops = crops.reshape(-1, patch * patch)  # [M, D], in (image, crop) order
    indicator = (crops[:, None, :] == jnp.arange(num_classes)[None, :, None]).astype(jnp.float32)  # [M, C, D]
    qualifies = indicator.sum(-1) >= min_fraction * patch * patch  # [M, C]
    # Keep the first `patches_per_class` qualifying crops of each class in stream order.
    rank = moments.count + jnp.cumsum(qualifies, axis=0, dtype=jnp.int32)
    keep = qualifies & (rank <= patches_per_class)
    return _add_moments(moments, indicator * keep[..., None], keep)


def lrr_bases(
    label_batches: Iterable,
    num_classes: int,
    *,
    patch: int = 32,
    num_bases: int = 10,
    min_fraction: float = 0.02,
    patches_per_class: int = 10000,
    crops_per_image: int = 100,
    ignore_label: int = 255,
    seed: int = 0,
) -> jnp.ndarray:
    """Per-class LRR reconstruction bases from label patches (Ghiasi & Fowlkes, ECCV 2016, Sec. 3.1).

    Follows golnazghiasi/LRR `deconvBases/ClassPatches.m` + `ComputeIniBases.m`: for each
    class c, random `patch x patch` crops (`lrr_crops`) in which c covers at least
    `min_fraction` of the pixels give binary patches `x = [label == c]` (ignore pixels count
    as "not c", as in the reference, which maps void to 0); the first `patches_per_class`
    per class in stream order are kept. The bases are the top `num_bases` principal
    directions `v_k` of the centred patches, scaled as the reference scales them:
    `T = sqrt(S) V'` from the SVD of the centred `n x patch^2` patch matrix, i.e.
    `basis_k = (n * lambda_k)^(1/4) v_k` with `lambda_k` the covariance eigenvalue and
    `n = patches_per_class` (the reference always collects its 10000, cycling through the
    data; using the target count keeps the scale independent of how many were found).

    Deviation (documented fallback): the reference cycles through the data until every class
    has its patches; this consumes the stream once. A class with at most `num_bases`
    qualifying patches (too few for a rank-`num_bases` covariance) gets the bases of all
    classes' patches pooled, with a warning; if every class is that scarce, ValueError.

    Cost: `O(crops * C * patch^4)` flops and `C * patch^4` int32 of state (11 classes, 32x32
    patches: 46 MB); eigh of C matrices of size `patch^2`.

    Args:
      label_batches: iterable of integer `[N, H, W]` label maps, `H, W >= patch`.
      num_classes: C; labels are in `[0, C)` or `ignore_label`.
      patch: patch size (32 in the paper).
      num_bases: K bases per class (10 in the paper).
      min_fraction: minimum share of class pixels in a crop (0.02 in the reference).
      patches_per_class: patches kept per class (10000 in the reference).
      crops_per_image: random crops drawn per image (100 in the reference).
      ignore_label: void label, outside `[0, C)`.
      seed: crop-position seed.

    Returns:
      f32 `[patch, patch, K, C]`: `bases[:, :, k, c]` is basis image k of class c.
    """
    name = "lrr_bases"
    _check_ignore_label(num_classes, ignore_label, name)
    dim = patch * patch
    if not 1 <= num_bases <= dim:
        raise ValueError(f"{name}: num_bases={num_bases} must be in [1, patch*patch={dim}]")
    moments = _zero_moments(num_classes, dim)
    seen = 0
    for batch in label_batches:
        labels = _check_labels(batch, num_classes, ignore_label, name)
        if min(labels.shape[1:]) < patch:
            raise ValueError(f"{name}: images {labels.shape[1:]} are smaller than patch={patch}")
        if labels.shape[0] * crops_per_image >= _MAX_PATCHES_PER_BATCH:
            raise ValueError(f"{name}: batch of {labels.shape[0]} images x {crops_per_image} crops is too large")
        moments = _lrr_update(
            moments,
            labels,
            seen,
            seed,
            min_fraction,
            patches_per_class,
            num_classes=num_classes,
            patch=patch,
            crops_per_image=crops_per_image,
        )
        seen += labels.shape[0]
    counts = np.asarray(moments.count)
    scarce = counts <= num_bases
    if scarce.all():
        raise ValueError(
            f"{name}: no class has more than num_bases={num_bases} qualifying patches "
            f"(counts {counts.tolist()} from {seen} images)"
        )
    values, directions, _ = _principal_directions(moments, num_bases)
    if scarce.any():
        warnings.warn(
            f"{name}: classes {np.flatnonzero(scarce).tolist()} have <= {num_bases} qualifying patches "
            f"(counts {counts[scarce].tolist()}); they get the bases of all classes' patches pooled",
            stacklevel=2,
        )
        pooled = jax.tree.map(lambda m: m.sum(0, keepdims=True), moments)
        pooled_values, pooled_directions, _ = _principal_directions(pooled, num_bases)
        values = jnp.where(scarce[:, None], pooled_values, values)
        directions = jnp.where(scarce[:, None, None], pooled_directions, directions)
    scale = (patches_per_class * jnp.maximum(values, 0.0)) ** 0.25  # sqrt of singular values
    bases = (directions * scale[..., None]).reshape(num_classes, num_bases, patch, patch)
    return bases.transpose(2, 3, 1, 0)


def resize_bases(bases: jnp.ndarray, size: int) -> jnp.ndarray:
    """Resizes every basis image, `[P, P, K, C] -> [size, size, K, C]`.

    The paper learns one 32x32 basis set and resizes it for the reconstruction kernel of
    every level (2s x 2s: 8x8 for stride 4). The reference does this with MATLAB
    `imresize` (bicubic, antialiased when shrinking); here shrinking by an integer factor
    (32 -> 8 is exactly 4x4 blocks) is the block average (`adaptive_avg_pool`), the
    antialiased box-filter counterpart, and any other size is `resize_bilinear` with
    half-pixel centres (`align_corners=False`, the geometry of `imresize` and of block
    averages; corner alignment would shift the basis by a fraction of a pixel). Both keep
    amplitudes, as `imresize` does.
    """
    chex.assert_rank(bases, 4)
    height, width, k, c = bases.shape
    if height != width:
        raise ValueError(f"resize_bases: basis images must be square, got {height}x{width}")
    if size < 1:
        raise ValueError(f"resize_bases: size must be positive, got {size}")
    image = bases.reshape(1, height, width, k * c)  # channels (k, c): one resize for all
    if height % size == 0:
        out = resize.adaptive_avg_pool(image, size)
    else:
        out = resize.resize_bilinear(image, (size, size), align_corners=False)
    return out.reshape(size, size, k, c)


# --------------------------------------------------------------------------------------
# DUpsampling: one matrix for all r x r x C one-hot label patches.


def dupsampling_patches(labels, num_classes: int, ratio: int) -> jnp.ndarray:
    """The vectors `dupsampling_matrix` analyses: `space_to_depth(one_hot(labels), r)` rows.

    Args:
      labels: integer `[N, H, W]`, H and W divisible by `ratio`; ids outside `[0, C)`
        (the ignore label) give all-zero one-hot rows.

    Returns:
      f32 `[N * H/r * W/r, r*r*C]` in (a, b, c) order.
    """
    x = dup.space_to_depth(_one_hot(jnp.asarray(labels), num_classes), ratio)
    return x.reshape(-1, x.shape[-1])


@functools.partial(jax.jit, static_argnames=("num_classes", "ratio"), donate_argnums=0)
def _dupsampling_update(moments, labels, *, num_classes, ratio):
    x = dupsampling_patches(labels, num_classes, ratio)[:, None, :]  # [M, 1, r*r*C]: one group
    return _add_moments(moments, x, jnp.ones(x.shape[:2], jnp.float32))


def dupsampling_matrix(
    label_batches: Iterable, num_classes: int, *, ratio: int, dim: int, ignore_label: int = 255
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """DUpsampling matrix W by PCA of one-hot label patches (Tian et al., CVPR 2019, Sec. 3.1).

    Patches are `space_to_depth(one_hot(labels), r)` rows (`dupsampling_patches`), length
    `r*r*C` in (a, b, c) order, i.e. exactly what `ops.dupsample.dupsample(F, W, r)`
    produces. W's rows are the top-`dim` principal directions (orthonormal) of the patch
    covariance, so `F = (x - mean) @ W.T` and `x ~ F @ W + mean`.

    Centring: the paper minimises `||Y - W P Y||` (no mean; the public PyTorch ports learn
    W by SGD, also without one). The centred PCA with `mean` re-added is the best affine
    rank-`dim` reconstruction (never worse in squared error; in reconstruction mIoU the two
    differ by < 0.003 on CamVid); a decoder adds `mean` as a fixed bias of the
    DUpsample output (`depth_to_space` of the broadcast mean), or drops it to follow the
    paper. Ignore pixels: all-zero one-hot rows (the block still counts).

    Args:
      label_batches: iterable of integer `[N, H, W]`, H and W divisible by `ratio`.
      num_classes: C.
      ratio: r, the upsampling factor.
      dim: number of directions L, `<= r*r*C`.
      ignore_label: void label, outside `[0, C)`.

    Returns:
      `(w, mean)`: f32 `w [dim, r*r*C]` with orthonormal rows, f32 `mean [r*r*C]`.
    """
    name = "dupsampling_matrix"
    _check_ignore_label(num_classes, ignore_label, name)
    depth = ratio * ratio * num_classes
    if not 1 <= dim <= depth:
        raise ValueError(f"{name}: dim={dim} must be in [1, ratio*ratio*num_classes={depth}]")
    moments = _zero_moments(1, depth)
    for batch in label_batches:
        labels = _check_labels(batch, num_classes, ignore_label, name)
        n, height, width = labels.shape
        if height % ratio or width % ratio:
            raise ValueError(f"{name}: label size {height}x{width} is not divisible by ratio {ratio}")
        if n * (height // ratio) * (width // ratio) >= _MAX_PATCHES_PER_BATCH:
            raise ValueError(f"{name}: batch has too many {ratio}x{ratio} patches; use smaller batches")
        moments = _dupsampling_update(moments, labels, num_classes=num_classes, ratio=ratio)
    if int(moments.count[0]) <= dim:
        raise ValueError(f"{name}: {int(moments.count[0])} patches cannot give dim={dim} directions")
    _, directions, mean = _principal_directions(moments, dim)
    return directions[0], mean[0]


# --------------------------------------------------------------------------------------
# Reconstruction of labels through a low-resolution code, as mIoU (the paper's Table 1).


def _mean_iou(prediction: jnp.ndarray, labels: jnp.ndarray, num_classes: int, ignore_label: int) -> jnp.ndarray:
    """mIoU over classes present in labels or prediction; ignore pixels left out."""
    valid = labels != ignore_label
    index = jnp.where(valid, labels * num_classes + prediction, 0)
    confusion = jnp.bincount(index.ravel(), weights=valid.ravel().astype(jnp.int32), length=num_classes**2)
    confusion = confusion.reshape(num_classes, num_classes)
    hits = jnp.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - hits
    return jnp.nanmean(jnp.where(union > 0, hits / jnp.maximum(union, 1), jnp.nan))


@functools.partial(jax.jit, static_argnames=("ratio", "num_classes", "ignore_label"))
def reconstruction_miou(
    labels,
    w: jnp.ndarray,
    ratio: int,
    *,
    num_classes: int,
    ignore_label: int,
    mean: Optional[jnp.ndarray] = None,
) -> jnp.ndarray:
    """mIoU of labels reconstructed through DUpsampling's W (the paper's upper bound).

    `x = space_to_depth(one_hot(labels), r)`, least-squares code `F = (x - mean) @ pinv(W)`
    (`= (x - mean) @ W.T` for orthonormal rows), `Y = dupsample(F, W, r) + mean`,
    prediction `argmax_c Y`, mIoU against `labels` without ignore pixels.

    Args:
      labels: integer `[N, H, W]`, H and W divisible by `ratio`.
      w: `[L, r*r*C]`.
      ratio: r.
      num_classes: C.
      ignore_label: void label.
      mean: optional `[r*r*C]` patch mean (from `dupsampling_matrix`).

    Returns:
      scalar mIoU in [0, 1].
    """
    labels = jnp.asarray(labels)
    chex.assert_rank([labels, w], [3, 2])
    x = dup.space_to_depth(_one_hot(labels, num_classes), ratio)
    if mean is not None:
        x = x - mean
    y = dup.dupsample(x @ jnp.linalg.pinv(w), w, ratio)
    if mean is not None:
        y = y + dup.depth_to_space(jnp.broadcast_to(mean, x.shape), ratio)
    return _mean_iou(jnp.argmax(y, -1), labels, num_classes, ignore_label)


@functools.partial(jax.jit, static_argnames=("ratio", "num_classes", "ignore_label"))
def bilinear_reconstruction_miou(labels, ratio: int, *, num_classes: int, ignore_label: int) -> jnp.ndarray:
    """mIoU of labels reconstructed by bilinear upsampling of their downsampled one-hot maps.

    The baseline of DUpsampling's Table 1: `low = adaptive_avg_pool(one_hot, (H/r, W/r))`
    (the r x r block average, the best linear low-resolution map), then
    `resize_bilinear(low, (H, W), align_corners=False)` (half-pixel centres: a block
    average sits at its block's centre), argmax, mIoU without ignore pixels.

    Args:
      labels: integer `[N, H, W]`, H and W divisible by `ratio`.

    Returns:
      scalar mIoU in [0, 1].
    """
    labels = jnp.asarray(labels)
    chex.assert_rank(labels, 3)
    _, height, width = labels.shape
    if height % ratio or width % ratio:
        raise ValueError(
            f"bilinear_reconstruction_miou: label size {height}x{width} is not divisible by ratio {ratio}"
        )
    low = resize.adaptive_avg_pool(_one_hot(labels, num_classes), (height // ratio, width // ratio))
    y = resize.resize_bilinear(low, (height, width), align_corners=False)
    return _mean_iou(jnp.argmax(y, -1), labels, num_classes, ignore_label)
