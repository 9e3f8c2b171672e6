"""Boundary (trimap) accuracy against a direct numpy computation, one window at a time."""

import jax
import numpy as np
import pytest

from lapseg import metrics

IGNORE = 255


def _numpy_band(labels, width):
    """A pixel is in the band when its clipped (2w+1)-square window holds two label values."""
    n, h, w = labels.shape
    band = np.zeros(labels.shape, bool)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                window = labels[i, max(0, y - width):y + width + 1, max(0, x - width):x + width + 1]
                band[i, y, x] = np.unique(window).size > 1
    return band


def _numpy_trimap_accuracy(pred, labels, widths):
    result = []
    for width in widths:
        pixels = _numpy_band(labels, width) & (labels != IGNORE)
        result.append((pred[pixels] == labels[pixels]).mean() if pixels.any() else np.nan)
    return np.array(result)


def _labels(rng):
    """Random rectangles of 3 classes on background, with a void outline around one of them."""
    labels = np.zeros((2, 23, 31), np.int32)
    for i in range(2):
        for cls in (1, 2, 3):
            y, x = rng.integers(0, 18), rng.integers(0, 26)
            labels[i, y:y + rng.integers(3, 9), x:x + rng.integers(3, 12)] = cls
        labels[i, 4:12, 6:16] = IGNORE
        labels[i, 5:11, 7:15] = 1
    return labels


def test_trimap_accuracy_matches_numpy():
    rng = np.random.default_rng(0)
    labels = _labels(rng)
    # Predictions right on 80% of pixels, wrong elsewhere.
    pred = np.where(rng.random(labels.shape) < 0.8, labels, rng.integers(0, 4, labels.shape))
    pred = np.where(pred == IGNORE, 0, pred)
    widths = (1, 2, 4, 8, 16)
    got = metrics.trimap_accuracy(pred, labels, ignore_label=IGNORE, widths=widths)
    want = _numpy_trimap_accuracy(pred, labels, widths)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # The band grows with w until it holds nearly every pixel.
    assert np.all(np.diff([_numpy_band(labels, w).sum() for w in widths]) >= 0)


def test_trimap_counts_jit_and_sum_over_batches():
    rng = np.random.default_rng(1)
    labels = _labels(rng)
    pred = rng.integers(0, 4, labels.shape)
    counts = jax.jit(lambda p, l: metrics.trimap_counts(p, l, ignore_label=IGNORE))(pred, labels)
    split = sum(metrics.trimap_counts(pred[i:i + 1], labels[i:i + 1], ignore_label=IGNORE)
                for i in range(2))
    np.testing.assert_array_equal(counts, split)
    np.testing.assert_allclose(
        metrics.trimap_accuracy_from_counts(counts),
        _numpy_trimap_accuracy(pred, labels, metrics.TRIMAP_WIDTHS), rtol=1e-12)


def test_boundary_band_of_constant_labels_is_empty():
    labels = np.full((1, 8, 8), 3)
    assert not metrics.boundary_band(labels, 2).any()
    assert np.isnan(metrics.trimap_accuracy(labels, labels, ignore_label=IGNORE)).all()


def test_boundary_band_rejects_bad_width():
    with pytest.raises(ValueError, match="width must be >= 1"):
        metrics.boundary_band(np.zeros((1, 4, 4), np.int32), 0)


def test_confusion_matrix_rejects_ids_outside_the_classes_when_concrete():
    # -1 (with ignore label 255) and C are neither classes nor ignored: an error naming the id.
    pred = np.zeros((1, 2, 3), np.int32)
    labels = np.array([[[0, 1, 2], [255, 1, -1]]], np.int32)
    with pytest.raises(ValueError, match="labels hold id -1: expected class ids 0..2"):
        metrics.confusion_matrix(pred, labels, 3, 255)
    with pytest.raises(ValueError, match="hold id 3"):
        metrics.confusion_matrix(pred, np.where(labels < 0, 3, labels), 3, 255)
    good = np.where(labels < 0, 255, labels)
    np.testing.assert_array_equal(metrics.confusion_matrix(pred, good, 3, 255).sum(1), [1, 2, 1])
    # Under jit nothing is checked (no host sync); the bad pixels are not counted.
    jitted = jax.jit(lambda p, l: metrics.confusion_matrix(p, l, 3, 255))(pred, labels)
    np.testing.assert_array_equal(jitted.sum(1), [1, 2, 1])


def _numpy_confusion(pred, labels, num_classes):
    """M[t, p] over the pixels whose label and prediction are both class ids 0..C-1."""
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for t, p in zip(labels.ravel(), pred.ravel()):
        if 0 <= t < num_classes and 0 <= p < num_classes:
            confusion[t, p] += 1
    return confusion


@pytest.mark.parametrize("bad", [5, 3, -1])
def test_confusion_matrix_out_of_range_predictions_raise_or_are_not_counted(bad):
    """Issue #26: prediction 5 (of 3 classes) was counted in M[1, 2], -1 in M[0, 2]."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (2, 9, 11)).astype(np.int32)
    labels[:, :2] = IGNORE
    pred = rng.integers(0, 3, labels.shape).astype(np.int32)
    np.testing.assert_array_equal(metrics.confusion_matrix(pred, labels, 3, IGNORE),
                                  _numpy_confusion(pred, labels, 3))
    pred[:, 3:6, 2:7] = bad
    with pytest.raises(ValueError, match=rf"predictions hold id {bad}: expected class ids 0..2"):
        metrics.confusion_matrix(pred, labels, 3, IGNORE)
    # Under jit nothing is checked; those pixels are counted in no cell.
    jitted = jax.jit(lambda p, l: metrics.confusion_matrix(p, l, 3, IGNORE))(pred, labels)
    np.testing.assert_array_equal(jitted, _numpy_confusion(pred, labels, 3))
