"""Streaming fits of the label-fitted decoder constants: LRR bases, the DUpsampling matrix.

Both are principal directions of label patches, fitted in one pass over any iterable of
integer label maps before training. An item of the stream is one map `[H, W]` or a batch
`[N, H, W]` of one size; sizes may differ from item to item (each new size compiles the
per-batch update once). The per-batch work is `lapseg.ops.pca` (exact integer moments);
this module iterates, checks the labels and handles sizes:

- LRR draws `patch x patch` crops inside each map; maps smaller than the patch give none.
- DUpsampling tiles each map with the `r x r` blocks that fit (the map is cut at the
  bottom/right to a multiple of r), so any map size works; maps smaller than r give none.
"""

import warnings
from typing import Iterable

import jax
import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from lapseg.ops import pca

LRR_PATCH = 32  # the paper's patch size (Sec. 3.1)


def _batches(label_maps: Iterable, num_classes: int, ignore_label: int, name: str):
    """Checked int32 numpy `[N, H, W]` batches from a stream of `[H, W]` / `[N, H, W]` maps."""
    if 0 <= ignore_label < num_classes:
        raise ValueError(f"{name}: ignore_label={ignore_label} is a class id (num_classes={num_classes})")
    for item in label_maps:
        labels = np.asarray(item)
        if labels.ndim == 2:
            labels = labels[None]
        if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{name}: label maps must be integer [H, W] or [N, H, W], "
                             f"got {labels.dtype} {labels.shape}")
        bad = ((labels < 0) | (labels >= num_classes)) & (labels != ignore_label)
        if bad.any():
            raise ValueError(
                f"{name}: labels {np.unique(labels[bad])[:8].tolist()} are neither a class id in "
                f"[0, {num_classes}) nor ignore_label={ignore_label}")
        yield labels.astype(np.int32)


def _top_eigenpairs(matrix: np.ndarray, k: int):
    """The k largest eigenpairs of a symmetric matrix, `(values [k], vectors [D, k])` ascending.

    Few of many (k <= D / 8, D >= 2048: DUpsampling at ratio 32 has D = 11264): Lanczos
    (ARPACK `eigsh`, from a fixed start vector), a few hundred matrix-vector products instead
    of a cubic decomposition. Otherwise LAPACK's partial solver (`syevr`, top k only).
    """
    dim = matrix.shape[-1]
    if dim >= 2048 and k <= dim // 8:
        return scipy.sparse.linalg.eigsh(matrix, k=k, which="LA", v0=np.ones(dim, matrix.dtype),
                                         tol=1e-7)
    return scipy.linalg.eigh(matrix, subset_by_index=[dim - k, dim - 1], driver="evr",
                             check_finite=False)


def principal_directions(moments: pca.Moments, k: int):
    """Top-k eigenpairs of each group's covariance (`ops.pca.covariance`), on the host.

    Eigenvectors are sign-fixed so that each one's largest-magnitude entry is positive, so the
    output is deterministic up to ties in that entry.

    Returns:
      `(eigenvalues [G, k] descending, directions [G, k, D] orthonormal rows, mean [G, D])`,
      float32 numpy.
    """
    covariance, mean = jax.device_get(pca.covariance(moments))
    values, directions = [], []
    for matrix in np.asarray(covariance, np.float64):
        vals, vecs = _top_eigenpairs(matrix, k)
        order = np.argsort(vals)[::-1]  # descending
        vals, vecs = vals[order], vecs[:, order].T  # rows
        largest = np.argmax(np.abs(vecs), axis=-1)
        vecs = vecs * np.sign(vecs[np.arange(k), largest])[:, None]
        values.append(vals)
        directions.append(vecs)
    return (np.stack(values).astype(np.float32), np.stack(directions).astype(np.float32),
            np.asarray(mean, np.float32))


def _chunks(labels: np.ndarray, patches_per_image: int):
    """Splits a batch so that each part has fewer than `pca.MAX_PATCHES_PER_BATCH` patches."""
    step = max(1, (pca.MAX_PATCHES_PER_BATCH - 1) // max(patches_per_image, 1))
    for start in range(0, labels.shape[0], step):
        yield labels[start : start + step]


def lrr_bases(
    label_maps: Iterable,
    num_classes: int,
    *,
    patch: int = LRR_PATCH,
    num_bases: int = 10,
    min_fraction: float = 0.02,
    patches_per_class: int = 10000,
    crops_per_image: int = 100,
    ignore_label: int = 255,
    seed: int = 0,
) -> np.ndarray:
    """Per-class LRR reconstruction bases from label patches (Ghiasi & Fowlkes, ECCV 2016, Sec. 3.1).

    Follows golnazghiasi/LRR `deconvBases/ClassPatches.m` + `ComputeIniBases.m`: for each
    class c, random `patch x patch` crops (`ops.pca.lrr_crops`) in which c covers at least
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
      label_maps: iterable of integer `[H, W]` or `[N, H, W]` label maps of any size; maps
        smaller than `patch` are skipped.
      num_classes: C; labels are in `[0, C)` or `ignore_label`.
      patch: patch size (32 in the paper).
      num_bases: K bases per class (10 in the paper).
      min_fraction: minimum share of class pixels in a crop (0.02 in the reference).
      patches_per_class: patches kept per class (10000 in the reference).
      crops_per_image: random crops drawn per image (100 in the reference).
      ignore_label: void label, outside `[0, C)`.
      seed: crop-position seed; the crops of an image depend only on its position in the
        stream, not on the batching.

    Returns:
      f32 `[patch, patch, K, C]`: `bases[:, :, k, c]` is basis image k of class c.
    """
    name = "lrr_bases"
    dim = patch * patch
    if not 1 <= num_bases <= dim:
        raise ValueError(f"{name}: num_bases={num_bases} must be in [1, patch*patch={dim}]")
    moments = pca.zero_moments(num_classes, dim)
    seen = skipped = 0
    for labels in _batches(label_maps, num_classes, ignore_label, name):
        if min(labels.shape[1:]) < patch:
            skipped += labels.shape[0]
            continue
        for part in _chunks(labels, crops_per_image):
            moments = pca.lrr_update(moments, part, seen, seed, min_fraction, patches_per_class,
                                     num_classes=num_classes, patch=patch,
                                     crops_per_image=crops_per_image)
            seen += part.shape[0]
    if not seen:
        raise ValueError(f"{name}: no label map of at least {patch}x{patch} pixels "
                         f"({skipped} smaller maps skipped)")
    values, directions = _class_directions(moments, num_bases, name, seen)
    scale = (patches_per_class * np.maximum(values, 0.0)) ** 0.25  # sqrt of singular values
    bases = (directions * scale[..., None]).reshape(num_classes, num_bases, patch, patch)
    return np.asarray(bases.transpose(2, 3, 1, 0), np.float32)


def _class_directions(moments, num_bases: int, name: str, seen: int):
    """Each class's top `num_bases` covariance eigenvalues `[C, K]` and directions `[C, K, D]`;
    a class with at most `num_bases` patches gets those of all classes' patches pooled (with
    a warning), and ValueError if every class is that scarce."""
    counts = np.asarray(moments.count)
    scarce = counts <= num_bases
    if scarce.all():
        raise ValueError(
            f"{name}: no class has more than num_bases={num_bases} qualifying patches "
            f"(counts {counts.tolist()} from {seen} images)")
    values, directions, _ = principal_directions(moments, num_bases)
    if scarce.any():
        warnings.warn(
            f"{name}: classes {np.flatnonzero(scarce).tolist()} have <= {num_bases} qualifying "
            f"patches (counts {counts[scarce].tolist()}); they get the bases of all classes' "
            f"patches pooled", stacklevel=3)
        pooled = jax.tree.map(lambda m: m.sum(0, keepdims=True), moments)
        pooled_values, pooled_directions, _ = principal_directions(pooled, num_bases)
        values = np.where(scarce[:, None], pooled_values, values)
        directions = np.where(scarce[:, None, None], pooled_directions, directions)
    return values, directions


def dupsampling_matrix(
    label_maps: Iterable, num_classes: int, *, ratio: int, dim: int, ignore_label: int = 255
) -> tuple[np.ndarray, np.ndarray]:
    """DUpsampling matrix W by PCA of one-hot label patches (Tian et al., CVPR 2019, Sec. 3.1).

    Patches are `space_to_depth(one_hot(labels), r)` rows (`ops.pca.dupsampling_patches`),
    length `r*r*C` in (a, b, c) order, i.e. exactly what `ops.dupsample.dupsample(F, W, r)`
    produces; every `r x r` block that fits in a map is one patch (the map is cut at the
    bottom/right to a multiple of r). W's rows are the top-`dim` principal directions
    (orthonormal) of the patch covariance, so `F = (x - mean) @ W.T` and `x ~ F @ W + mean`.

    Centring: the paper minimises `||Y - W P Y||` (no mean; the public PyTorch ports learn
    W by SGD, also without one). The centred PCA with `mean` re-added is the best affine
    rank-`dim` reconstruction (never worse in squared error; in reconstruction mIoU the two
    differ by < 0.003 on CamVid); a decoder adds `mean` as a fixed bias of the DUpsample
    output, or drops it to follow the paper. Ignore pixels: all-zero one-hot rows (the block
    still counts).

    Args:
      label_maps: iterable of integer `[H, W]` or `[N, H, W]` label maps of any size.
      num_classes: C.
      ratio: r, the upsampling factor.
      dim: number of directions L, `<= r*r*C`.
      ignore_label: void label, outside `[0, C)`.

    Returns:
      `(w, mean)`: f32 `w [dim, r*r*C]` with orthonormal rows, f32 `mean [r*r*C]`.
    """
    name = "dupsampling_matrix"
    depth = ratio * ratio * num_classes
    if not 1 <= dim <= depth:
        raise ValueError(f"{name}: dim={dim} must be in [1, ratio*ratio*num_classes={depth}]")
    moments = pca.zero_moments(1, depth)
    for labels in _batches(label_maps, num_classes, ignore_label, name):
        height, width = (s - s % ratio for s in labels.shape[1:])
        if not height or not width:
            continue
        labels = labels[:, :height, :width]
        for part in _chunks(labels, (height // ratio) * (width // ratio)):
            moments = pca.dupsampling_update(moments, part, num_classes=num_classes, ratio=ratio)
    if int(moments.count[0]) <= dim:
        raise ValueError(f"{name}: {int(moments.count[0])} {ratio}x{ratio} patches cannot give "
                         f"dim={dim} directions; give more (or larger) label maps")
    _, directions, mean = principal_directions(moments, dim)
    return np.asarray(directions[0], np.float32), np.asarray(mean[0], np.float32)
