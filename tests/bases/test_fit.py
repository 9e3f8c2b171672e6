"""Tests for lapseg.bases fits (streaming label-patch PCA: LRR bases, DUpsampling W) on top of
lapseg.ops.pca, and the reconstruction oracle.

The PCA references are numpy float64 SVDs of exactly the patches the library analyses
(`lrr_crops`, `dupsampling_patches`), compared by principal angles between subspaces.
"""

import numpy as np
import pytest
from PIL import Image

from lapseg import bases as bases_lib
from lapseg.ops import basis, pca

IGNORE = 255


def _synthetic_labels(seed, n, size, num_classes, ignore_label=IGNORE):
    """Background 0 with random rectangles, discs and triangles of classes 1..C-1, and a
    2-pixel void band per image: label maps with real region structure, no data needed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    labels = np.zeros((n, size, size), np.int32)
    for image in labels:
        for _ in range(rng.integers(4, 9)):
            cy, cx = rng.uniform(0, size, 2)
            radius = rng.uniform(size / 12, size / 4)
            kind = rng.integers(3)
            if kind == 0:
                mask = (np.abs(yy - cy) < radius) & (np.abs(xx - cx) < radius * rng.uniform(0.3, 1.5))
            elif kind == 1:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
            else:
                angle = rng.uniform(0, 2 * np.pi, 3)
                vy, vx = cy + radius * np.sin(angle), cx + radius * np.cos(angle)
                side = [
                    (vx[j] - vx[i]) * (yy - vy[i]) - (vy[j] - vy[i]) * (xx - vx[i]) for i, j in ((0, 1), (1, 2), (2, 0))
                ]
                mask = np.all([s >= 0 for s in side], 0) | np.all([s <= 0 for s in side], 0)
            image[mask] = rng.integers(1, num_classes)
        row = rng.integers(size - 1)
        image[row : row + 2] = ignore_label
    return labels


def _principal_angle(a, b):
    """Largest principal angle (radians) between the row spaces of a [k, D] and b [k, D]."""
    qa, _ = np.linalg.qr(np.asarray(a, np.float64).T)
    qb, _ = np.linalg.qr(np.asarray(b, np.float64).T)
    cosines = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return float(np.arccos(np.clip(cosines.min(), -1.0, 1.0)))


def _numpy_pca(patches, k):
    """Top-k right singular vectors and singular values of the centred patch matrix (float64)."""
    patches = np.asarray(patches, np.float64)
    _, s, vt = np.linalg.svd(patches - patches.mean(0), full_matrices=False)
    assert s[k - 1] > 1.01 * s[k], "test data must have an eigengap at k for a stable subspace"
    return vt[:k], s[:k]


# --------------------------------------------------------------------------------------
# LRR bases


LRR = dict(patch=8, num_bases=4, min_fraction=0.1, crops_per_image=24, ignore_label=IGNORE, seed=3)


def _lrr_reference_patches(labels, num_classes, cap, *, patch, min_fraction, crops_per_image, seed, **_):
    """Per class, the indicator patches the reference keeps: qualifying crops in stream order, first `cap`."""
    crops = np.asarray(pca.lrr_crops(labels, patch=patch, crops_per_image=crops_per_image, seed=seed))
    crops = crops.reshape(-1, patch * patch)
    kept = []
    for c in range(num_classes):
        indicator = (crops == c).astype(np.float64)
        kept.append(indicator[indicator.sum(1) >= min_fraction * patch * patch][:cap])
    return kept


def test_lrr_crops_are_windows_of_the_labels():
    # Reference: every crop equals some patch x patch window of its own image (brute-force search).
    labels = _synthetic_labels(0, 2, 20, 4)
    crops = np.asarray(pca.lrr_crops(labels, patch=6, crops_per_image=5, seed=1))
    assert crops.shape == (2, 5, 6, 6)
    windows = np.lib.stride_tricks.sliding_window_view(labels, (6, 6), axis=(1, 2))  # [N, 15, 15, 6, 6]
    for n in range(2):
        for crop in crops[n]:
            assert (windows[n] == crop).all(axis=(-1, -2)).any()
    again = pca.lrr_crops(labels[1:], patch=6, crops_per_image=5, seed=1, first_image=1)
    np.testing.assert_array_equal(again[0], crops[1])  # crops depend on the image index, not the batch


@pytest.mark.parametrize("cap", [10**6, 40])
def test_lrr_bases_span_numpy_svd_of_the_same_patches(cap):
    # Reference: numpy float64 SVD of the centred indicator patches the reference would keep
    # (ClassPatches.m + ComputeIniBases.m), with and without the per-class cap biting.
    num_classes = 4
    labels = _synthetic_labels(1, 12, 32, num_classes)
    bases = np.asarray(bases_lib.lrr_bases([labels[:6], labels[6:]], num_classes, patches_per_class=cap, **LRR))
    k, patch = LRR["num_bases"], LRR["patch"]
    assert bases.shape == (patch, patch, k, num_classes)
    scale_count = cap
    for c, patches in enumerate(_lrr_reference_patches(labels, num_classes, cap, **LRR)):
        assert len(patches) > k
        directions, singular = _numpy_pca(patches, k)
        ours = bases[..., c].reshape(patch * patch, k).T  # row-major basis images, like the patches
        assert _principal_angle(ours, directions) < 1e-3
        # Reference scale: T = sqrt(S) V' with S of a `scale_count`-row matrix, S^2 = count * eigenvalue.
        want_norms = (scale_count * singular**2 / len(patches)) ** 0.25
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), want_norms, rtol=1e-3)
        largest = np.abs(ours).argmax(1)
        assert (ours[np.arange(k), largest] > 0).all()  # deterministic sign


def test_lrr_bases_do_not_depend_on_batching():
    # Exact integer moments and per-image crop keys: one image per batch gives bit-identical bases.
    labels = _synthetic_labels(2, 6, 32, 4)
    whole = bases_lib.lrr_bases([labels], 4, patches_per_class=50, **LRR)
    single = bases_lib.lrr_bases((image[None] for image in labels), 4, patches_per_class=50, **LRR)
    np.testing.assert_array_equal(whole, single)


def test_lrr_bases_fall_back_to_pooled_patches_for_a_missing_class():
    # Class 3 never occurs: it gets the PCA of all classes' kept patches pooled (numpy reference).
    labels = _synthetic_labels(4, 6, 32, 3)
    with pytest.warns(UserWarning, match=r"classes \[3\]"):
        bases = np.asarray(bases_lib.lrr_bases([labels], 4, **LRR))
    pooled = np.concatenate(_lrr_reference_patches(labels, 4, 10**6, **LRR))
    directions, _ = _numpy_pca(pooled, LRR["num_bases"])
    assert _principal_angle(bases[..., 3].reshape(64, -1).T, directions) < 1e-3


@pytest.mark.parametrize(
    "labels,num_classes,kwargs,match",
    [
        (np.full((1, 16, 16), IGNORE, np.int32), 3, {}, "no class has more than"),
        (np.full((1, 16, 16), 7, np.int32), 3, {}, r"labels \[7\]"),
        (np.zeros((1, 16, 16), np.float32), 3, {}, "integer"),
        (np.zeros((1, 4, 4), np.int32), 3, {}, "no label map of at least 8x8"),
        (np.zeros((1, 16, 16), np.int32), 3, {"ignore_label": 2}, "is a class id"),
    ],
)
def test_lrr_bases_bad_input_raises(labels, num_classes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        bases_lib.lrr_bases([labels], num_classes, **{**LRR, **kwargs})


def test_resize_bases_block_average_and_bilinear():
    torch = pytest.importorskip("torch")
    bases = np.random.default_rng(0).standard_normal((32, 32, 3, 2)).astype(np.float32)
    # Reference for an integer factor: the 4x4 block mean in numpy.
    want = bases.reshape(8, 4, 8, 4, 3, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(pca.resize_bases(bases, 8), want, atol=1e-6, rtol=0)
    # Reference otherwise: torch F.interpolate(bilinear, align_corners=False) of each basis image.
    images = torch.from_numpy(bases.reshape(32, 32, 6).transpose(2, 0, 1)[:, None].copy())
    want = torch.nn.functional.interpolate(images, size=(12, 12), mode="bilinear", align_corners=False)
    want = want[:, 0].numpy().transpose(1, 2, 0).reshape(12, 12, 3, 2)
    np.testing.assert_allclose(pca.resize_bases(bases, 12), want, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------
# DUpsampling matrix


def test_dupsampling_patches_order_and_ignore_rows():
    # Reference: the one-hot block flattened by hand in (a, b, c) order; void pixels give zero rows.
    labels = np.array([[[0, 2, 1, IGNORE], [1, 1, 0, 2]]], np.int32)  # [1, 2, 4], r = 2
    patches = np.asarray(pca.dupsampling_patches(labels, 3, 2))
    want = np.zeros((2, 12), np.float32)
    for j in range(2):
        for a in range(2):
            for b in range(2):
                label = labels[0, a, 2 * j + b]
                if label != IGNORE:
                    want[j, (a * 2 + b) * 3 + label] = 1
    np.testing.assert_array_equal(patches, want)


@pytest.mark.parametrize("ratio,dim", [(2, 6), (4, 12)])
def test_dupsampling_matrix_spans_numpy_svd(ratio, dim):
    # Reference: numpy float64 SVD of the centred space_to_depth(one_hot) rows of the same labels.
    labels = _synthetic_labels(5, 6, 32, 3)
    w, mean = bases_lib.dupsampling_matrix([labels[:4], labels[4:]], 3, ratio=ratio, dim=dim, ignore_label=IGNORE)
    patches = np.asarray(pca.dupsampling_patches(labels, 3, ratio), np.float64)
    directions, _ = _numpy_pca(patches, dim)
    assert w.shape == (dim, ratio * ratio * 3) and mean.shape == (ratio * ratio * 3,)
    assert _principal_angle(w, directions) < 1e-3
    np.testing.assert_allclose(mean, patches.mean(0), atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.asarray(w) @ np.asarray(w).T, np.eye(dim), atol=1e-5, rtol=0)


def test_dupsampling_matrix_takes_any_size_blocks_that_fit():
    # A 6x9 map at ratio 4 holds one 4x8 strip of two whole blocks; the fit equals that of the
    # map cut to 4x8 (and a 1x3 map, smaller than a block, adds nothing).
    labels = _synthetic_labels(3, 4, 32, 3)[:, :6, :9]
    cut = labels[:, :4, :8]
    tiny = np.zeros((2, 1, 3), np.int32)
    w, mean = bases_lib.dupsampling_matrix([labels, tiny], 3, ratio=2, dim=4)
    w_cut, mean_cut = bases_lib.dupsampling_matrix([labels[:, :6, :8]], 3, ratio=2, dim=4)
    np.testing.assert_allclose(w, w_cut, atol=1e-6)
    np.testing.assert_allclose(mean, mean_cut, atol=1e-6)
    w4, mean4 = bases_lib.dupsampling_matrix(list(labels), 3, ratio=4, dim=2)  # [H, W] items
    w4_cut, mean4_cut = bases_lib.dupsampling_matrix([cut], 3, ratio=4, dim=2)
    np.testing.assert_allclose(w4, w4_cut, atol=1e-6)
    np.testing.assert_allclose(mean4, mean4_cut, atol=1e-6)


def test_dupsampling_matrix_bad_input_raises():
    labels = np.zeros((1, 6, 8), np.int32)
    with pytest.raises(ValueError, match="dim=49"):
        bases_lib.dupsampling_matrix([labels], 3, ratio=2, dim=49)
    with pytest.raises(ValueError, match="patches cannot give dim=12"):
        bases_lib.dupsampling_matrix([labels], 3, ratio=2, dim=12)


# --------------------------------------------------------------------------------------
# Reconstruction mIoU


def test_full_rank_dupsampling_and_unit_ratio_reconstruct_exactly():
    labels = _synthetic_labels(6, 4, 16, 3)
    w, mean = bases_lib.dupsampling_matrix([labels], 3, ratio=2, dim=12)  # dim = r*r*C: exact code
    assert float(bases_lib.reconstruction_miou(labels, w, 2, num_classes=3, ignore_label=IGNORE, mean=mean)) == 1.0
    assert float(bases_lib.bilinear_reconstruction_miou(labels, 1, num_classes=3, ignore_label=IGNORE)) == 1.0
    assert float(bases_lib.bilinear_reconstruction_miou(labels, 4, num_classes=3, ignore_label=IGNORE)) < 1.0


def _reconstruction_table(train, held_out, num_classes, ignore_label, ratios, dims):
    """W fitted on `train`, mIoU on `held_out`: rows (ratio, dim, DUpsampling, bilinear); printed."""
    rows = []
    for ratio in ratios:
        w, mean = bases_lib.dupsampling_matrix(
            [train[i : i + 8] for i in range(0, len(train), 8)],
            num_classes,
            ratio=ratio,
            dim=max(dims),
            ignore_label=ignore_label,
        )
        bilinear = float(
            bases_lib.bilinear_reconstruction_miou(held_out, ratio, num_classes=num_classes, ignore_label=ignore_label)
        )
        for dim in dims:  # the top-dim rows of the largest PCA are the dim-PCA
            dupsampling = float(
                bases_lib.reconstruction_miou(
                    held_out, w[:dim], ratio, num_classes=num_classes, ignore_label=ignore_label, mean=mean
                )
            )
            rows.append((ratio, dim, dupsampling, bilinear))
    print("\nratio  dim  DUpsampling mIoU  bilinear mIoU")
    for row in rows:
        print("%5d %4d %17.4f %14.4f" % row)
    return rows


def test_dupsampling_beats_bilinear_on_synthetic_shapes():
    # Property from the DUpsampling paper (Sec. 3.1, Table 1): labels reconstructed from a
    # stride-r code through PCA's W beat bilinear upsampling of the stride-r block averages.
    # W is fitted on one set of shapes and evaluated on another.
    num_classes = 5
    train, held_out = _synthetic_labels(7, 16, 96, num_classes), _synthetic_labels(8, 8, 96, num_classes)
    for ratio, dim, dupsampling, bilinear in _reconstruction_table(
        train, held_out, num_classes, IGNORE, ratios=(8, 16), dims=(32,)
    ):
        assert dupsampling > bilinear + 0.05, (ratio, dim)


def _camvid_labels(directory, step):
    """Every `step`-th CamVid label map, uncut (360 x 480; the fits and the oracle take the
    blocks that fit)."""
    files = sorted(directory.glob("*.png"))[::step]
    return np.stack([np.asarray(Image.open(f)) for f in files]).astype(np.int32)


def test_dupsampling_beats_bilinear_on_camvid(camvid_dir):
    # Same property on real street scenes: W from 8 training label maps (every 46th of 367),
    # mIoU on 6 validation maps (every 17th of 101); CamVid's void label is 11. The dim = C
    # rows are printed for the record: with as many numbers per block as bilinear has,
    # DUpsampling is worse; it wins once dim is a few times C.
    train = _camvid_labels(camvid_dir / "trainannot", 46)
    held_out = _camvid_labels(camvid_dir / "valannot", 17)
    for ratio, dim, dupsampling, bilinear in _reconstruction_table(
        train, held_out, 11, 11, ratios=(8, 16), dims=(11, 64)
    ):
        if dim == 64:
            assert dupsampling > bilinear + 0.05, (ratio, dim)


@pytest.mark.parametrize("ratio", [8, 16, 32])
def test_fits_take_camvid_360x480_maps(camvid_dir, ratio):
    # CamVid's 360 x 480 maps are divisible by 8 but not by 16 or 32 in height: both fits take
    # them as they are, one map at a time ([H, W] items) or batched.
    labels = _camvid_labels(camvid_dir / "trainannot", 60)
    assert labels.shape[1:] == (360, 480)
    w, mean = bases_lib.dupsampling_matrix(list(labels), 11, ratio=ratio, dim=16, ignore_label=11)
    assert w.shape == (16, ratio * ratio * 11) and np.isfinite(w).all()
    assert bases_lib.reconstruction_miou(labels, w, ratio, num_classes=11, ignore_label=11, mean=mean) > 0.3
    lrr = bases_lib.lrr_bases([labels], 11, num_bases=4, crops_per_image=20, ignore_label=11)
    assert lrr.shape == (32, 32, 4, 11) and np.isfinite(lrr).all()


def test_span_gain_survives_an_odd_first_basis():
    # CamVid's pole class: its first principal direction is odd (flat-field gain ~1e-4), and
    # dividing by that gain alone blew its bases up 1e4-fold. The span's gain is set by the
    # even basis; a class with no flat-field response at all keeps its bases (divisor 1).
    ramp = np.linspace(-1, 1, 8)
    odd = np.broadcast_to(ramp[None, :], (8, 8))  # sums to 0
    even = np.full((8, 8), 0.5)  # gain 4 * 32 / 64 = 2
    bases = np.zeros((8, 8, 2, 2))
    bases[:, :, 0, 0], bases[:, :, 1, 0] = odd, even
    bases[:, :, 0, 1], bases[:, :, 1, 1] = odd, -odd
    np.testing.assert_allclose(basis.flat_field_gain(bases)[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(bases_lib.span_gain(bases), [2.0, 1.0], rtol=1e-6)


def test_large_dupsampling_matrix_spans_numpy_svd():
    # D = 16*16*8 = 2048 with dim 16 takes the Lanczos path (few of many eigenpairs); the
    # reference is the same float64 numpy SVD as for the small cases.
    labels = _synthetic_labels(9, 12, 64, 8)
    w, mean = bases_lib.dupsampling_matrix([labels], 8, ratio=16, dim=16, ignore_label=IGNORE)
    patches = np.asarray(pca.dupsampling_patches(labels, 8, 16), np.float64)
    directions, _ = _numpy_pca(patches, 16)
    assert _principal_angle(w, directions) < 1e-3
    np.testing.assert_allclose(mean, patches.mean(0), atol=1e-6, rtol=0)
    np.testing.assert_allclose(w @ w.T, np.eye(16), atol=1e-5, rtol=0)


def test_flat_field_scaling_gives_unit_gain_and_records_the_divisor():
    # fit(lrr_scale='flat_field') = the reference-scaled bases divided, per class, by the flat-field
    # gain of their span; that divisor is kept as lrr_bases_gain (and attach skips it).
    labels = _synthetic_labels(2, 8, 48, 4)
    need = {"lrr_bases": (8, 8, 3, 4)}
    scaled = bases_lib.fit_required(need, [labels], num_classes=4, ignore_label=IGNORE)
    reference = bases_lib.fit_required(need, [labels], num_classes=4, ignore_label=IGNORE,
                                       lrr_scale="reference")
    gains = basis.flat_field_gain(reference["lrr_bases"]).astype(np.float64)  # [K, C]
    dominant = gains[np.abs(gains).argmax(0), np.arange(4)]
    span = np.sign(dominant) * np.sqrt((gains**2).sum(0))
    assert np.abs(span - 1).max() > 1  # the reference scale is not unit gain
    np.testing.assert_allclose(scaled["lrr_bases_gain"], span, rtol=1e-5)
    np.testing.assert_allclose(scaled["lrr_bases"], reference["lrr_bases"] / span, rtol=1e-5, atol=1e-7)
    unit = basis.flat_field_gain(scaled["lrr_bases"]).astype(np.float64)
    np.testing.assert_allclose(np.sqrt((unit**2).sum(0)), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(reference["lrr_bases_gain"], 1.0)
    with pytest.raises(ValueError, match="lrr_scale"):
        bases_lib.fit_required(need, [labels], num_classes=4, lrr_scale="unit")
