"""Label-patch PCA, the pure per-batch parts: exact moment updates and principal directions.

`lapseg.bases` streams label maps through these functions to fit LRR's per-class
reconstruction bases and DUpsampling's matrix; every function here takes and returns
arrays, with no iteration, IO or warnings.

Moments are int32 and each batch's are computed in f32 from 0/1 indicators (exact while a
batch has < `MAX_PATCHES_PER_BATCH` patches), so the moments are exact and a fit does not
depend on how the labels are batched. Limit: < 2**31 patches in all.

Label conventions: class ids in `[0, num_classes)`, plus an ignore label (outside that
range) for void pixels. Ignore pixels are "no class": they count as "not c" in LRR
indicator patches and get an all-zero one-hot row in DUpsampling patches.

"""

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from lapseg.ops import dupsample as dup
from lapseg.ops import resize

# Per-batch moments are f32 sums of 0/1 products, exact below this many patches.
MAX_PATCHES_PER_BATCH = 2**24


class Moments(NamedTuple):
    """Exact streaming moments of G groups of D-dimensional 0/1 vectors."""

    count: jnp.ndarray  # [G] int32, number of vectors
    total: jnp.ndarray  # [G, D] int32, sum of vectors
    outer: jnp.ndarray  # [G, D, D] int32, sum of outer products


def zero_moments(groups: int, dim: int) -> Moments:
    """Empty moments of `groups` groups of `dim`-vectors."""
    return Moments(
        jnp.zeros((groups,), jnp.int32),
        jnp.zeros((groups, dim), jnp.int32),
        jnp.zeros((groups, dim, dim), jnp.int32),
    )


def add_moments(moments: Moments, x: jnp.ndarray, weight: jnp.ndarray) -> Moments:
    """Adds vectors `x[M, G, D]` (0/1, already zero where `weight[M, G]` is 0) to the moments.

    `outer[g] += sum_m x[m, g]^T x[m, g]`, `total[g] += sum_m x[m, g]`, `count[g] += sum_m weight`.
    """

    def exact(v):  # f32 holding integers -> int32
        return jnp.round(v).astype(jnp.int32)

    return Moments(
        moments.count + weight.astype(jnp.int32).sum(0),
        moments.total + exact(x.sum(0)),
        moments.outer + exact(jnp.einsum("mgp,mgq->gpq", x, x)),
    )


@jax.jit
def covariance(moments: Moments):
    """Each group's patch covariance `outer/n - mean mean^T` `[G, D, D]` and mean `[G, D]` (f32).

    Its top eigenvectors are the principal directions (`lapseg.bases` takes them with a
    partial symmetric eigensolver on the host, which for D in the thousands is several times
    faster than a full `eigh`).
    """
    n = jnp.maximum(moments.count, 1).astype(jnp.float32)[:, None]
    mean = moments.total / n
    return moments.outer / n[..., None] - mean[:, :, None] * mean[:, None, :], mean


def one_hot(labels: jnp.ndarray, num_classes: int) -> jnp.ndarray:
    """`[N, H, W]` -> f32 `[N, H, W, C]`; ids outside `[0, C)` (the ignore label) give zero rows."""
    return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)


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
def lrr_update(
    moments, labels, first_image, seed, min_fraction, patches_per_class, *, num_classes, patch, crops_per_image
):
    """Adds the qualifying LRR patches of one batch to per-class moments (`Moments` of C groups).

    Crops are `lrr_crops(labels, ...)`; crop m qualifies for class c when c covers at least
    `min_fraction` of its pixels, and the first `patches_per_class` qualifying crops of each
    class in stream order are kept, as binary indicator patches `[label == c]` `[patch^2]`.
    `labels` int32 `[N, H, W]` is the batch at stream position `first_image`; the state is
    donated.
    """
    crops = _crops(labels, first_image, seed, patch=patch, crops_per_image=crops_per_image)
    crops = crops.reshape(-1, patch * patch)  # [M, D], in (image, crop) order
    indicator = (crops[:, None, :] == jnp.arange(num_classes)[None, :, None]).astype(jnp.float32)  # [M, C, D]
    qualifies = indicator.sum(-1) >= min_fraction * patch * patch  # [M, C]
    # Keep the first `patches_per_class` qualifying crops of each class in stream order.
    rank = moments.count + jnp.cumsum(qualifies, axis=0, dtype=jnp.int32)
    keep = qualifies & (rank <= patches_per_class)
    return add_moments(moments, indicator * keep[..., None], keep)


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
    x = dup.space_to_depth(one_hot(jnp.asarray(labels), num_classes), ratio)
    return x.reshape(-1, x.shape[-1])


@functools.partial(jax.jit, static_argnames=("num_classes", "ratio"), donate_argnums=0)
def dupsampling_update(moments, labels, *, num_classes, ratio):
    """Adds the `dupsampling_patches` of int32 labels `[N, H, W]` (H, W multiples of `ratio`)
    to one group's moments (state donated)."""
    x = dupsampling_patches(labels, num_classes, ratio)[:, None, :]  # [M, 1, r*r*C]: one group
    return add_moments(moments, x, jnp.ones(x.shape[:2], jnp.float32))
