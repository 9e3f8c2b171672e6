"""`config.loss.label_sampling` ('corner' | 'center' | 'matlab') through `losses.for_model`
into `deep_supervision` / `labels_like`: each samples the pixels its resize picks (the
numpy indices of `ops.resize`), and a loss refuses one it cannot honour."""

import ml_collections
import numpy as np
import pytest

from lapseg import losses
from lapseg.losses import segmentation
from lapseg.ops import resize

IGNORE = 255


def _labels(shape=(2, 24, 36), classes=5, seed=0):
    return np.random.default_rng(seed).integers(0, classes, shape).astype(np.int32)


@pytest.mark.parametrize("sampling", ["corner", "center", "matlab"])
def test_labels_like_picks_the_rows_and_columns_of_its_sampling(sampling):
    labels = _labels()
    # 24 x 36 -> 10 x 15: ties between two pixels (2.4 (i + 1/2) an integer at i = 2), which
    # 'center' and 'matlab' break differently.
    logits = np.zeros((2, 10, 15, 5), np.float32)
    rows, cols = {
        "corner": (resize.nearest_indices(24, 10), resize.nearest_indices(36, 15)),
        "center": (resize.nearest_indices(24, 10, centered=True),
                   resize.nearest_indices(36, 15, centered=True)),
        "matlab": (resize.matlab_nearest_indices(24, 10), resize.matlab_nearest_indices(36, 15)),
    }[sampling]
    got = segmentation.labels_like(labels, logits, sampling)
    np.testing.assert_array_equal(got, labels[:, rows][:, :, cols])


def test_the_three_samplings_differ_here():
    """So that the loss tests below can tell them apart."""
    labels, logits = _labels(), np.zeros((2, 10, 15, 5), np.float32)
    picked = {s: np.asarray(segmentation.labels_like(labels, logits, s))
              for s in segmentation.LABEL_SAMPLING}
    assert not np.array_equal(picked["corner"], picked["center"])
    assert not np.array_equal(picked["center"], picked["matlab"])


def _numpy_ce(logits, labels):
    logits = logits.astype(np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    return -picked.mean()


@pytest.mark.parametrize("sampling", [None, "corner", "center", "matlab"])
def test_for_model_passes_label_sampling(sampling):
    """A coarse output ('aux', 10 x 15) against 24 x 36 labels: the loss is the numpy CE
    against the labels sampled as configured (unset: 'corner')."""
    rng = np.random.default_rng(1)
    labels = _labels()
    outputs = {"logits": rng.standard_normal((2, 24, 36, 5)).astype(np.float32),
               "aux": rng.standard_normal((2, 10, 15, 5)).astype(np.float32)}
    loss_config = ml_collections.ConfigDict({"weights": {"logits": 1.0, "aux": 0.4}})
    if sampling is not None:
        loss_config.label_sampling = sampling
    loss_fn = losses.for_model("pspnet", loss_config, ignore_label=IGNORE)
    total, metrics = loss_fn(outputs, labels, {"label": labels})
    coarse = np.asarray(segmentation.labels_like(labels, outputs["aux"], sampling or "corner"))
    np.testing.assert_allclose(metrics["loss/aux"], _numpy_ce(outputs["aux"], coarse), rtol=1e-5)
    np.testing.assert_allclose(
        total, _numpy_ce(outputs["logits"], labels) + 0.4 * _numpy_ce(outputs["aux"], coarse),
        rtol=1e-5)


def test_unknown_or_unsupported_sampling_is_refused():
    with pytest.raises(ValueError, match="label sampling must be one of"):
        segmentation.labels_like(_labels(), np.zeros((2, 10, 15, 5)), "bicubic")
    for model, sampling in (("pspnet", "bicubic"), ("dsrl", "matlab"), ("lrr", "matlab")):
        config = ml_collections.ConfigDict({"weights": {"logits": 1.0}, "label_sampling": sampling})
        with pytest.raises(ValueError, match=f"config.loss.label_sampling = '{sampling}'"):
            losses.for_model(model, config, ignore_label=IGNORE)
    # What the special losses honour is accepted.
    for model, sampling in (("dsrl", "corner"), ("lrr", "center"), ("lrr", "corner")):
        config = ml_collections.ConfigDict({"weights": {"logits": 1.0}, "label_sampling": sampling})
        assert callable(losses.for_model(model, config, ignore_label=IGNORE))
