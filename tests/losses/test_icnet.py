"""ICNet's cascade label guidance loss against numpy: each branch output is scored against the
labels resized to its own size as hellochick/ICNet-tensorflow `train.py` resizes them
(`prepare_label`: TF1 `tf.image.resize_nearest_neighbor`, align_corners=False), with the
paper's weights (Sec. 5: 0.4, 0.4, 1)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lapseg import losses, models
from lapseg.train import recipes

NUM_CLASSES, IGNORE = 5, 255


def tf1_resize_nearest(labels, size):
    """TF1 `resize_nearest_neighbor(align_corners=False)` (`resize_nearest_neighbor_op.cc`,
    legacy scaler): `in = min(floor(out * (in_size / out_size)), in_size - 1)`, the scale in
    float32."""
    (in_h, in_w), (out_h, out_w) = labels.shape[1:3], size
    rows = np.minimum(np.floor(np.arange(out_h, dtype=np.float32) * np.float32(in_h / out_h)),
                      in_h - 1).astype(int)
    cols = np.minimum(np.floor(np.arange(out_w, dtype=np.float32) * np.float32(in_w / out_w)),
                      in_w - 1).astype(int)
    return labels[:, rows][:, :, cols]


def numpy_branch_loss(logits, labels):
    """hellochick `create_loss`: softmax cross-entropy averaged over the non-ignored pixels of
    the resized labels (`get_mask`)."""
    resized = tf1_resize_nearest(labels, logits.shape[1:3])
    valid = resized != IGNORE
    z = logits.astype(np.float64)
    log_probs = z - z.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, np.where(valid, resized, 0)[..., None], -1)[..., 0]
    return -(picked * valid).sum() / valid.sum()


@pytest.mark.parametrize("size", [(97, 131), (128, 192)])
def test_cascade_loss_matches_numpy(size):
    """Random logits of ICNet's training output shapes for a `size` input (odd sizes: the
    branches are ceil-sized and the resize ratios are not integers)."""
    model = models.create_model("icnet", num_classes=NUM_CLASSES, backbone="resnet18",
                                backbone_kwargs={"width": 0.25, "deep_stem": True, "output_stride": 8},
                                branch_channels=8, channels=8)
    shapes = jax.eval_shape(lambda: model.init_with_output(
        jax.random.key(0), jnp.zeros((2, *size, 3)), train=True, mutable=True)[0])
    assert set(recipes.ICNET_LOSS_WEIGHTS) <= set(shapes)
    rng = np.random.default_rng(0)
    outputs = {key: rng.standard_normal(value.shape).astype(np.float32) for key, value in shapes.items()}
    labels = rng.integers(0, NUM_CLASSES, (2, *size)).astype(np.int32)
    labels[:, : size[0] // 5] = IGNORE  # an ignored band
    config = ml_collections.ConfigDict({"weights": dict(recipes.ICNET_LOSS_WEIGHTS)})
    loss_fn = losses.for_model("icnet", config, ignore_label=IGNORE)
    total, metrics = loss_fn({k: jnp.asarray(v) for k, v in outputs.items()}, jnp.asarray(labels),
                             {"label": labels})
    expected = {key: numpy_branch_loss(outputs[key], labels) for key in recipes.ICNET_LOSS_WEIGHTS}
    for key, value in expected.items():
        print(f"ICNet {size} {key} {outputs[key].shape[1:3]}: {float(metrics[f'loss/{key}']):.6f} "
              f"numpy {value:.6f}")
        np.testing.assert_allclose(float(metrics[f"loss/{key}"]), value, rtol=1e-5)
    want = sum(recipes.ICNET_LOSS_WEIGHTS[key] * value for key, value in expected.items())
    np.testing.assert_allclose(float(total), want, rtol=1e-5)
    assert "loss/logits" not in metrics  # the x4-upsampled map is not scored


def test_weights_are_the_papers():
    """0.4 / 0.4 / 1 on the 1/16, 1/8 and 1/4 outputs (not hellochick's LAMBDA1 = 0.16)."""
    assert recipes.ICNET_LOSS_WEIGHTS == {"aux_sub4": 0.4, "aux_sub24": 0.4, "coarse_logits": 1.0}
