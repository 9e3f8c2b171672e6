"""LRR's class-plane cross-entropy (`lapseg.losses.lrr.planes_cross_entropy`) against
`segmentation.masked_cross_entropy`: values, gradients in both modes, class weights, ignored
and out-of-range labels, and the loss through `loss_for_config` against deep supervision."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lapseg.losses import lrr as lrr_loss
from lapseg.losses import segmentation

IGNORE = 255


def _batch(seed, shape=(2, 9, 11, 5)):
    rng = np.random.default_rng(seed)
    logits = jnp.asarray(2 * rng.standard_normal(shape), jnp.float32)
    labels = rng.integers(0, shape[-1], shape[:3]).astype(np.int32)
    labels[0, :3] = IGNORE
    return logits, labels


@pytest.mark.parametrize("class_weights", [None, [1.0, 2.0, 0.5, 1.0, 3.0]])
def test_planes_cross_entropy_is_masked_cross_entropy(class_weights):
    logits, labels = _batch(0)
    ours = lambda z: lrr_loss.planes_cross_entropy(z, labels, ignore_label=IGNORE,  # noqa: E731
                                                   class_weights=class_weights)
    ref = lambda z: segmentation.masked_cross_entropy(z, labels, ignore_label=IGNORE,  # noqa: E731
                                                      class_weights=class_weights)
    np.testing.assert_allclose(ours(logits), ref(logits), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(ours)(logits), ref(logits), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(ours)(logits), jax.grad(ref)(logits), atol=1e-8, rtol=1e-5)
    t = jnp.asarray(np.random.default_rng(1).standard_normal(logits.shape), jnp.float32)
    np.testing.assert_allclose(jax.jvp(ours, (logits,), (t,))[1], jax.jvp(ref, (logits,), (t,))[1],
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jax.jvp(jax.grad(ours), (logits,), (t,))[1],
                               jax.jvp(jax.grad(ref), (logits,), (t,))[1], atol=1e-7, rtol=1e-4)


def test_out_of_range_labels_are_left_out_under_jit_and_raise_eagerly():
    logits, labels = _batch(2)
    bad = labels.copy()
    bad[1, 0, 0] = 7
    with pytest.raises(ValueError):
        lrr_loss.planes_cross_entropy(logits, bad, ignore_label=IGNORE)
    jitted = jax.jit(lambda z, y: lrr_loss.planes_cross_entropy(z, y, ignore_label=IGNORE))
    dropped = labels.copy()
    dropped[1, 0, 0] = IGNORE
    np.testing.assert_allclose(jitted(logits, bad), jitted(logits, dropped), rtol=1e-6)
    all_ignored = np.full(labels.shape, IGNORE, np.int32)
    assert float(jitted(logits, all_ignored)) == 0.0


def test_lrr_loss_is_deep_supervision_with_class_planes():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, (2, 32, 32)).astype(np.int32)
    outputs = {f"level_{s}": jnp.asarray(rng.standard_normal((2, 128 // s, 128 // s, 5)), jnp.float32)
               for s in (32, 16, 8, 4)}
    for sampling in ("center", "corner"):
        config = ml_collections.ConfigDict({"weights": {"level_32": 0.5, "level_4": 2.0},
                                            "label_sampling": sampling})
        loss, parts = lrr_loss.loss_for_config(config, ignore_label=IGNORE)(outputs, labels, None)
        want, want_parts = segmentation.deep_supervision(
            outputs, labels, weights=config.weights, ignore_label=IGNORE, label_sampling=sampling)
        np.testing.assert_allclose(loss, want, rtol=1e-6)
        assert set(parts) == set(want_parts)
    with pytest.raises(ValueError, match="level_2"):
        lrr_loss.loss_for_config(ml_collections.ConfigDict({"weights": {"level_2": 1.0}}),
                                 ignore_label=IGNORE)(outputs, labels, None)
