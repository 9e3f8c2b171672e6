"""`masked_cross_entropy` and `deep_supervision` against torch's CrossEntropyLoss formula
(numpy), and their input checks: ids outside the classes, labels of another shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lapseg.losses import segmentation

IGNORE = 255


def _numpy_ce(logits, labels, ignore):
    logits = logits.astype(np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    valid = labels != ignore
    picked = np.take_along_axis(log_probs, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    return -(picked * valid).sum() / max(valid.sum(), 1)


def test_masked_cross_entropy_matches_numpy_eager_and_jitted():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 5, 7, 4)).astype(np.float32)
    labels = rng.integers(0, 4, (2, 5, 7))
    labels[0, :2] = IGNORE
    want = _numpy_ce(logits, labels, IGNORE)
    got = segmentation.masked_cross_entropy(logits, labels, ignore_label=IGNORE)
    jitted = jax.jit(lambda z, y: segmentation.masked_cross_entropy(z, y, ignore_label=IGNORE))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(jitted(logits, labels), want, rtol=1e-5)


def test_ids_outside_the_classes_raise_eagerly_and_are_excluded_under_jit():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((1, 4, 6, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (1, 4, 6))
    bad = labels.copy()
    bad[0, 0, :3] = -1  # with ignore label 255: not a class, not ignored
    with pytest.raises(ValueError, match="labels hold id -1: expected class ids 0..2"):
        segmentation.masked_cross_entropy(logits, bad, ignore_label=IGNORE)
    with pytest.raises(ValueError, match="hold id 3"):
        segmentation.masked_cross_entropy(logits, np.where(bad < 0, 3, bad), ignore_label=IGNORE)
    # Under jit: -1 is left out (never read as the last class), like the ignore label.
    jitted = jax.jit(lambda z, y: segmentation.masked_cross_entropy(z, y, ignore_label=IGNORE))
    np.testing.assert_allclose(jitted(logits, bad),
                               _numpy_ce(logits, np.where(bad < 0, IGNORE, bad), IGNORE), rtol=1e-5)


def test_labels_of_another_shape_are_refused():
    # [1, 6, 4] labels against [1, 4, 6, C] logits (H and W transposed): an error, jitted too.
    logits = jnp.zeros((1, 4, 6, 3))
    labels = jnp.zeros((1, 6, 4), jnp.int32)
    loss = lambda z, y: segmentation.deep_supervision(  # noqa: E731
        {"logits": z}, y, weights={"logits": 1.0}, ignore_label=IGNORE)[0]
    for fn in (loss, jax.jit(loss)):
        with pytest.raises(ValueError, match=r"labels of shape \(1, 6, 4\) do not fit an output"):
            fn(logits, labels)
    with pytest.raises(ValueError, match="do not fit"):
        loss(logits, jnp.zeros((2, 4, 6), jnp.int32))  # another batch size
    # Coarser outputs are fine: labels are resized down to them.
    assert np.isfinite(loss(jnp.zeros((1, 2, 3, 3)), jnp.zeros((1, 4, 6), jnp.int32)))
