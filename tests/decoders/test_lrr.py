"""Tests for lapseg.decoders.lrr and lapseg.losses.lrr.

The pyramid test recomputes every level from the model's own coefficients with a direct
numpy implementation of the reference's layers (golnazghiasi/LRR `AddSubModel`,
`LRRAddMasking.m`): the grouped transposed convolution as an explicit scatter of basis
tiles, the fixed x2 bilinear deconvolution with FCN's `upsample_filt`, softmax, the 9x9
max/min filters (scipy, edge-clipped windows) and the gated sum. The loss tests compare
with per-level numpy cross-entropies and scipy's binary dilation/erosion.
"""

import importlib.util
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from lapseg import bases as bases_lib
from lapseg import metrics, models
from lapseg.backbones import FeatureInfo
from lapseg.losses import lrr as lrr_loss
from lapseg.ops import basis as basis_ops
from lapseg.ops import boundary
from lapseg.ops import pca
from tests.references import upsample_filt
from tests.training import loss_curve

NUM_CLASSES = 3
NUM_BASES = 2
BACKBONE = {"backbone": "resnet18", "backbone_kwargs": {"width": 0.125}}
CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


class TinyBackbone(nn.Module):
    """Strided convs giving 'res2'..'res5' at strides 4..32: the pyramid's maths does not
    depend on the backbone, and this one runs eagerly in a fraction of ResNet's time."""

    def feature_info(self):
        return {f"res{i}": FeatureInfo(2**i, 8) for i in (2, 3, 4, 5)}

    @nn.compact
    def __call__(self, x, train):
        features = {"res2": nn.relu(nn.Conv(8, (4, 4), strides=4, padding="VALID")(x))}
        for i in (3, 4, 5):
            features[f"res{i}"] = nn.relu(nn.Conv(8, (3, 3), strides=2, padding=1)(features[f"res{i - 1}"]))
        return features


def scatter_deconv(x, kernel, stride, crop):
    """Grouped transposed conv by scattering tiles: `x [h, w, K, C]`, `kernel [k, k, K, C]`
    -> `[stride h, stride w, C]`, cropped by `crop` at the top-left (MatConvNet `crop`)."""
    h, w = x.shape[:2]
    size = kernel.shape[0]
    out = np.zeros(((h - 1) * stride + size, (w - 1) * stride + size, kernel.shape[-1]))
    for q in range(h):
        for r in range(w):
            out[q * stride : q * stride + size, r * stride : r * stride + size] += np.einsum(
                "kc,abkc->abc", x[q, r], kernel)
    return out[crop : crop + stride * h, crop : crop + stride * w]


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def fitted_bases():
    """A known random basis set `[32, 32, K, C]`, as `lapseg.bases.fit` would return it."""
    return {"lrr_bases": np.random.default_rng(0).normal(
        size=(32, 32, NUM_BASES, NUM_CLASSES)).astype(np.float32)}


def _random_coefficient_convs(params, seed, scale=0.3):
    rng = np.random.default_rng(seed)
    params = dict(params)
    for name, layer in params.items():
        if "coefficients" in name:
            kernel = layer["conv"]["kernel"]
            params[name] = {"conv": {
                "kernel": rng.normal(0, scale / np.sqrt(np.prod(kernel.shape[:-1])), kernel.shape).astype(np.float32),
                "bias": rng.normal(0, scale, layer["conv"]["bias"].shape).astype(np.float32)}}
    return params


def test_pyramid_matches_numpy_refinement(fitted_bases):
    bases = fitted_bases["lrr_bases"]
    model = models.create_model("lrr", num_classes=NUM_CLASSES, num_bases=NUM_BASES, backbone=TinyBackbone())
    images = jnp.asarray(np.random.default_rng(1).normal(size=(1, 64, 64, 3)), jnp.float32)
    variables = bases_lib.attach(model.init(jax.random.key(0), images), fitted_bases)
    variables = {**variables, "params": _random_coefficient_convs(variables["params"], seed=2, scale=3.0)}
    out, state = model.apply(
        variables, images, capture_intermediates=lambda m, _: (m.name or "").startswith("coefficients_"),
        mutable=["intermediates"])

    basis8 = bases.reshape(8, 4, 8, 4, NUM_BASES, NUM_CLASSES).mean((1, 3))  # 32 -> 8 block average
    bilinear = np.broadcast_to(upsample_filt(4)[:, :, None, None], (4, 4, 1, NUM_CLASSES))
    prediction, mask_means = None, []
    for name, stride in (("res5", 32), ("res4", 16), ("res3", 8), ("res2", 4)):
        coefficients = np.asarray(state["intermediates"][f"coefficients_{name}"]["__call__"][0])[0]
        h, w, _ = coefficients.shape
        coefficients = coefficients.reshape(h, w, NUM_CLASSES, NUM_BASES).swapaxes(2, 3)  # channel c*K + k
        reconstruction = scatter_deconv(coefficients, basis8, stride=4, crop=2)
        if prediction is None:
            prediction = reconstruction
        else:
            coarse = scatter_deconv(prediction[:, :, None, :], bilinear, stride=2, crop=1)
            p = softmax(coarse)
            mask = ndimage.maximum_filter(p, size=(9, 9, 1), mode="nearest") - ndimage.minimum_filter(
                p, size=(9, 9, 1), mode="nearest")
            mask_means.append(mask.mean())
            prediction = coarse + mask * reconstruction
        assert out[f"level_{stride}"].shape == (1, 256 // stride, 256 // stride, NUM_CLASSES)
        np.testing.assert_allclose(out[f"level_{stride}"][0], prediction, atol=1e-4)
    np.testing.assert_allclose(out["logits"][0], prediction, atol=1e-4)
    assert np.abs(prediction).max() > 1.0
    assert all(0.05 < m < 0.95 for m in mask_means)  # the gating is neither all-on nor all-off


def test_bilinear_basis_is_bilinear_upsampling():
    """basis='bilinear': one coefficient per class, upsampled x4 by the bilinear kernel."""
    model = models.create_model("lrr", num_classes=NUM_CLASSES, basis="bilinear", backbone=TinyBackbone())
    images = jnp.asarray(np.random.default_rng(1).normal(size=(1, 64, 64, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), images)
    assert variables["constants"]["bilinear_basis"].shape == (8, 8, 1, NUM_CLASSES)
    variables = {**variables, "params": _random_coefficient_convs(variables["params"], seed=3)}
    out, state = model.apply(variables, images, capture_intermediates=lambda m, _: m.name == "coefficients_res5",
                             mutable=["intermediates"])
    coefficients = state["intermediates"]["coefficients_res5"]["__call__"][0]
    np.testing.assert_allclose(out["level_32"], basis_ops.bilinear_upsample(coefficients, 4), atol=1e-5)


def test_outputs_at_odd_sizes_and_bfloat16():
    model = models.create_model("lrr", num_classes=NUM_CLASSES, num_bases=NUM_BASES,
                                dilation_erosion=True, dtype=jnp.bfloat16, **BACKBONE)
    variables, out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros((2, 50, 70, 3)))[::-1])
    shapes = {k: v.shape for k, v in out.items()}
    assert shapes == {"level_32": (2, 8, 12, 3), "level_16": (2, 16, 20, 3), "level_8": (2, 28, 36, 3),
                      "level_4": (2, 52, 72, 3), "dilation_32": (2, 8, 12, 3), "erosion_32": (2, 8, 12, 3),
                      "logits": (2, 50, 70, 3)}
    assert out["logits"].dtype == jnp.bfloat16
    assert variables["constants"]["lrr_bases"].dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables["params"]))


def test_default_bases_and_attach(fitted_bases):
    # With no fitted bases the model holds the cosine defaults (basis 0 bilinear); attach
    # replaces them (resized 32 -> 8 by block averages) without touching anything else, and
    # refuses bases of another K.
    images = jnp.zeros((1, 64, 64, 3))
    model = models.create_model("lrr", num_classes=NUM_CLASSES, num_bases=NUM_BASES, **BACKBONE)
    variables = model.init(jax.random.key(0), images)
    np.testing.assert_array_equal(variables["constants"]["lrr_bases"],
                                  basis_ops.cosine_bases(8, NUM_BASES, NUM_CLASSES))
    assert bases_lib.required(variables) == {"lrr_bases": (8, 8, NUM_BASES, NUM_CLASSES)}
    attached = bases_lib.attach(variables, fitted_bases)
    want = fitted_bases["lrr_bases"].reshape(8, 4, 8, 4, NUM_BASES, NUM_CLASSES).mean((1, 3))
    np.testing.assert_allclose(attached["constants"]["lrr_bases"], want, atol=1e-6)
    assert jax.tree.all(jax.tree.map(np.array_equal, attached["params"], variables["params"]))
    np.testing.assert_array_equal(variables["constants"]["lrr_bases"],  # inputs untouched
                                  basis_ops.cosine_bases(8, NUM_BASES, NUM_CLASSES))
    other_k = {"lrr_bases": np.zeros((32, 32, NUM_BASES + 1, NUM_CLASSES), np.float32)}
    with pytest.raises(ValueError, match="the model needs"):
        bases_lib.attach(variables, other_k)
    with pytest.raises(ValueError, match="no dupsampling_w"):
        bases_lib.attach(variables, {"dupsampling_w": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="halve"):
        model = models.create_model("lrr", num_classes=NUM_CLASSES, basis="bilinear", backbone="resnet18",
                                    backbone_kwargs={"width": 0.125, "output_stride": 16})
        jax.eval_shape(model.init, jax.random.key(0), images)


def _nearest(labels, size, centered=True):
    """Numpy reference: an f x f block's centre pixel `f i + f // 2` (centered), or its top-left
    pixel `f i`, for integer factors f."""
    factor = labels.shape[1] // size[0]
    assert labels.shape[1] == factor * size[0] and labels.shape[2] == factor * size[1]
    start = factor // 2 if centered else 0
    return labels[:, start::factor, start::factor]


def _numpy_cross_entropy(logits, labels, ignore):
    logits = np.asarray(logits, np.float64)
    log_p = logits - logits.max(-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
    valid = labels != ignore
    nll = -np.take_along_axis(log_p, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    return nll[valid].mean()


def test_loss_is_the_sum_of_level_cross_entropies_plus_dilation_erosion():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, NUM_CLASSES, (2, 64, 64)).astype(np.int32)
    labels[:, :5] = 255
    outputs = {f"level_{s}": jnp.asarray(rng.normal(size=(2, 256 // s, 256 // s, NUM_CLASSES)), jnp.float32)
               for s in (32, 16, 8, 4)}
    outputs["logits"] = outputs["level_4"]
    outputs["dilation_32"] = jnp.asarray(rng.normal(size=(2, 8, 8, NUM_CLASSES)), jnp.float32)
    outputs["erosion_32"] = jnp.asarray(rng.normal(size=(2, 8, 8, NUM_CLASSES)), jnp.float32)
    expected = {k: _numpy_cross_entropy(outputs[k], _nearest(labels, outputs[k].shape[1:3]), 255)
                for k in lrr_loss.DEFAULT_WEIGHTS}

    config = ml_collections.ConfigDict({"weights": {"level_32": 0.5, "level_16": 1.0, "level_8": 1.0, "level_4": 2.0}})
    loss, parts = lrr_loss.loss_for_config(config, ignore_label=255)(outputs, labels, None)
    for key, value in expected.items():
        np.testing.assert_allclose(parts[f"loss/{key}"], value, rtol=1e-5)
    np.testing.assert_allclose(loss, sum(config.weights[k] * v for k, v in expected.items()), rtol=1e-5)
    corner = ml_collections.ConfigDict({**config.to_dict(), "label_sampling": "corner"})
    _, corner_parts = lrr_loss.loss_for_config(corner, ignore_label=255)(outputs, labels, None)
    np.testing.assert_allclose(corner_parts["loss/level_32"], _numpy_cross_entropy(
        outputs["level_32"], _nearest(labels, (8, 8), centered=False), 255), rtol=1e-5)

    config.dilation_erosion, config.dilation_erosion_radius = True, 16  # 2 pixels at 1/8
    loss2, parts2 = lrr_loss.loss_for_config(config, ignore_label=255)(outputs, labels, None)
    dilated, eroded = lrr_loss.dilation_erosion_targets(labels, (8, 8), num_classes=NUM_CLASSES, radius=2)
    for key, targets in (("dilation_32", dilated), ("erosion_32", eroded)):
        x = np.asarray(outputs[key], np.float64)
        np.testing.assert_allclose(parts2[f"loss/{key}"], np.log1p(np.exp(-targets * x)).sum(-1).mean(), rtol=1e-5)
    np.testing.assert_allclose(loss2, loss + parts2["loss/dilation_32"] + parts2["loss/erosion_32"], rtol=1e-5)

    del outputs["erosion_32"]
    with pytest.raises(ValueError, match="dilation_erosion=True"):
        lrr_loss.loss_for_config(config, ignore_label=255)(outputs, labels, None)


def test_dilation_erosion_targets_match_scipy():
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(0, NUM_CLASSES, (2, 6, 6)), np.ones((4, 4), np.int64)).astype(np.int32)
    labels[0, 3:7, 3:9] = 255  # void belongs to no class
    labels[1][labels[1] == 2] = 0  # class 2 absent: -1 everywhere
    dilated, eroded = lrr_loss.dilation_erosion_targets(labels, (24, 24), num_classes=NUM_CLASSES, radius=3)
    y, x = np.mgrid[-3:4, -3:4]
    disk = y**2 + x**2 <= 9
    for n in range(2):
        for c in range(NUM_CLASSES):
            inside = labels[n] == c
            want_d = ndimage.binary_dilation(inside, disk, border_value=0)
            want_e = ndimage.binary_erosion(inside, disk, border_value=1)
            np.testing.assert_array_equal(dilated[n, ..., c], np.where(want_d, 1.0, -1.0))
            np.testing.assert_array_equal(eroded[n, ..., c], np.where(want_e, 1.0, -1.0))
    assert np.all(dilated[1, ..., 2] == -1) and np.all(eroded[1, ..., 2] == -1)


def _blocky_batch(seed):
    rng = np.random.default_rng(seed)
    labels = np.kron(rng.integers(0, NUM_CLASSES, (8, 4, 4)), np.ones((16, 16), np.int64)).astype(np.int32)
    images = rng.normal(size=(8, 64, 64, 3)).astype(np.float32) + labels[..., None]
    return {"image": images, "label": labels}


def test_lrr_loss_decreases_on_8_devices(tmp_path):
    batch = _blocky_batch(0)
    bases = bases_lib.lrr_bases([batch["label"]], NUM_CLASSES, num_bases=NUM_BASES, crops_per_image=20)
    model = models.create_model("lrr", num_classes=NUM_CLASSES, num_bases=NUM_BASES, **BACKBONE)
    # The reference-scaled bases make the coefficient convs ~16x "hotter" than a bilinear
    # head; the reference trains them at 0.1x (lapseg configs: head_lr_multiplier 0.1).
    # loss_curve has one rate for all parameters, hence a low one.
    curve = loss_curve(model, batch, model_name="lrr", loss_weights=lrr_loss.DEFAULT_WEIGHTS,
                       learning_rate=0.003, fitted={"lrr_bases": bases})
    assert np.all(np.isfinite(curve))
    np.testing.assert_allclose(curve[0], 4 * np.log(NUM_CLASSES), rtol=1e-5)  # zero coefficients
    assert curve[-5:].mean() < 0.8 * curve[0]


def _load_config(name):
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("name", ["camvid_lrr_resnet50", "voc_lrr_vgg16"])
def test_config_builds(name, tmp_path):
    from lapseg import data  # pylint: disable=import-outside-toplevel

    config = _load_config(name)
    num_classes = data.dataset_info(config.data.dataset).num_classes
    model = models.from_config(config, num_classes)
    out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))[0])
    assert out["logits"].shape == (1, 64, 64, num_classes)
    lrr_loss.loss_for_config(config.loss, ignore_label=255)  # the loss fields are understood
    assert set(config.loss.weights) == set(lrr_loss.DEFAULT_WEIGHTS)


# --------------------------------------------------------------------------------------
# The class-plane pyramid against the NHWC implementation it replaced: the decoder and its
# loss as they were at e33cf84, copied here on purpose and frozen, on the same coefficient
# convs. This copy is the reference the class-plane layout is checked against (the layout
# changed only how the same sums are arranged), not code to keep in step with the library.


def _old_overlapping_tiles(x, kernel, offset):
    """`lapseg.ops.basis._overlapping_tiles` at e33cf84 (NHWKC in, NHWC out)."""
    n, h, w, num_bases, channels = x.shape
    stride = kernel.shape[0] // 2
    x = jnp.transpose(x, (4, 0, 1, 2, 3))
    padded = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
    shifts = jnp.stack(
        [padded[:, :, 1 - u : 2 - u + h, 1 - v : 2 - v + w] for u in (0, 1) for v in (0, 1)], axis=4
    ).reshape(channels, n, h + 1, w + 1, 2, 2, num_bases)
    tiles = kernel.reshape(2, stride, 2, stride, num_bases, channels).transpose(5, 0, 2, 4, 1, 3)
    y = jnp.einsum("cnijuvk,cuvkab->cnijab", shifts, tiles)
    y = y.transpose(1, 2, 4, 3, 5, 0).reshape(n, (h + 1) * stride, (w + 1) * stride, channels)
    return y[:, offset : offset + stride * h, offset : offset + stride * w]


def _old_bilinear_upsample(x, factor):
    size = 2 * factor - factor % 2
    kernel = np.pad(basis_ops.bilinear_kernel(size), ((0, 2 * factor - size), (0, 2 * factor - size)))
    kernel = jnp.broadcast_to(jnp.asarray(kernel, x.dtype)[:, :, None, None], (*kernel.shape, 1, x.shape[-1]))
    return _old_overlapping_tiles(x[..., None, :], kernel, offset=factor // 2)


def _old_boundary_mask(prob, size):
    # The separable pools themselves are unchanged (boundary._max_pool_same); the old mask
    # pooled p and -p apart, NHWC.
    pool = lambda x: boundary._max_pool_same(x, size)  # noqa: E731
    return pool(prob) + pool(-prob)


def _old_decode(model, params, basis, features, size):
    """`LRR.decode` at e33cf84 (NHWC throughout), coefficient convs from `params`."""
    from lapseg.layers import ConvBN  # pylint: disable=import-outside-toplevel

    basis = jnp.asarray(basis)
    outputs, prediction = {}, None
    strides = [32 // 2**i for i in range(len(model.features))]

    def reconstruct(feature, name):
        num_bases = basis.shape[2]
        conv = ConvBN(num_bases * model.num_classes, model.coefficient_kernel, use_bias=True,
                      use_bn=False, activation=False)
        coefficients = conv.apply({"params": params[name]}, feature, False)
        n, h, w, _ = coefficients.shape
        coefficients = coefficients.reshape(n, h, w, model.num_classes, num_bases).swapaxes(3, 4)
        return _old_overlapping_tiles(coefficients, basis, offset=basis.shape[0] // 4)

    for name, stride in zip(model.features, strides):
        reconstruction = reconstruct(features[name], f"coefficients_{name}")
        if prediction is None:
            prediction = reconstruction
        else:
            coarse = _old_bilinear_upsample(prediction, 2)
            coarse = coarse[:, : reconstruction.shape[1], : reconstruction.shape[2]]
            mask = 1.0
            if model.boundary_masking:
                mask = _old_boundary_mask(jax.nn.softmax(coarse, axis=-1), 2 * model.upsample + 1)
            prediction = coarse + mask * reconstruction
        outputs[f"level_{stride}"] = prediction
    if model.dilation_erosion:
        for kind in ("dilation", "erosion"):
            logits = reconstruct(features[model.features[0]], f"{kind}_coefficients_{model.features[0]}")
            outputs[f"{kind}_32"] = logits + params[f"{kind}_bias"]
    outputs["logits"] = prediction[:, : size[0], : size[1]]
    return outputs


def _old_loss(outputs, labels):
    """`lapseg.losses.lrr` at e33cf84 (default weights, centre sampling): deep supervision."""
    from lapseg.losses.segmentation import deep_supervision  # pylint: disable=import-outside-toplevel

    return deep_supervision(outputs, labels, weights=lrr_loss.DEFAULT_WEIGHTS, ignore_label=255,
                            label_sampling="center")[0]


@pytest.mark.parametrize("fields", [{}, {"boundary_masking": False}, {"dilation_erosion": True},
                                    {"basis": "bilinear"}])
def test_class_planes_equal_the_nhwc_decoder(fitted_bases, fields):
    """Outputs within 1e-5 (relative to their largest value, when that exceeds 1: sums in
    another order round differently) and the loss within 1e-5 of the NHWC implementation's;
    gradients to float rounding (no ties in these random maps, where the masks' gradients
    could go to another argmax)."""
    num_classes, size = 5, (100, 68)  # no output stride divides 100 or 68: cut outputs
    model = models.create_model("lrr", num_classes=num_classes, num_bases=NUM_BASES, **BACKBONE, **fields)
    rng = np.random.default_rng(4)
    images = jnp.asarray(rng.normal(size=(2, *size, 3)), jnp.float32)
    labels = rng.integers(0, num_classes, (2, *size)).astype(np.int32)
    labels[:, :9] = 255
    variables = model.init(jax.random.key(0), images)
    if fields.get("basis") != "bilinear":
        bases = np.random.default_rng(0).normal(size=(32, 32, NUM_BASES, num_classes)).astype(np.float32)
        variables = bases_lib.attach(variables, {"lrr_bases": bases})
    params = _random_coefficient_convs(variables["params"], seed=5, scale=2.0)
    basis = variables["constants"]["bilinear_basis" if fields.get("basis") == "bilinear" else "lrr_bases"]
    features = model.apply(variables, images, method=lambda m, x: m.backbone(x, False))
    features = {k: features[k] for k in model.features}

    def new(params, features):
        return model.apply({**variables, "params": params}, features, size, method=model.decode)

    def old(params, features):
        return _old_decode(model, params, basis, features, size)

    got, want = jax.jit(new)(params, features), jax.jit(old)(params, features)
    assert set(got) == set(want)
    for key in want:
        assert got[key].shape == want[key].shape, key
        scale = float(np.abs(want[key]).max())
        assert scale > 0.5, key
        np.testing.assert_allclose(got[key], want[key], atol=1e-5 * max(1.0, scale), rtol=0, err_msg=key)

    config = ml_collections.ConfigDict({"weights": dict(lrr_loss.DEFAULT_WEIGHTS)})
    loss_fn = lrr_loss.loss_for_config(config, ignore_label=255)
    new_loss = lambda p, f: loss_fn(new(p, f), labels, None)[0]  # noqa: E731
    old_loss = lambda p, f: _old_loss(old(p, f), labels)  # noqa: E731
    (loss, grads), (loss_want, grads_want) = (jax.jit(jax.value_and_grad(f, (0, 1)))(params, features)
                                              for f in (new_loss, old_loss))
    np.testing.assert_allclose(loss, loss_want, rtol=1e-5, atol=1e-5)
    leaves, leaves_want = jax.tree.leaves(grads), jax.tree.leaves(grads_want)
    scale = max(float(np.abs(g).max()) for g in leaves_want)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(leaves, leaves_want))
    assert worst <= 1e-5 * scale, (worst, scale)


def test_refine_in_image_chunks_equals_the_whole_batch(monkeypatch):
    """On CPU the refinement runs over chunks of images (`lapseg.decoders.lrr._refine`); other
    platforms take the whole batch: the same values and gradients."""
    from lapseg.decoders import lrr as lrr_decoder  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(6)
    coarse = jnp.asarray(2 * rng.standard_normal((6, 4, 20, 18)), jnp.float32)
    reconstruction = jnp.asarray(rng.standard_normal(coarse.shape), jnp.float32)
    cotangent = jnp.asarray(rng.standard_normal(coarse.shape), jnp.float32)
    whole = jax.vjp(lambda c, r: lrr_decoder._refine_images(c, r, 9), coarse, reconstruction)
    for elements in (1, 2 * coarse[0].size, 10**9):  # 1, 2 and 3 images per chunk
        monkeypatch.setattr(lrr_decoder, "CHUNK_ELEMENTS", elements)
        got = jax.jit(lambda c, r, g: (lambda y, vjp: (y, vjp(g)))(
            *jax.vjp(lambda c, r: lrr_decoder._refine(c, r, 9), c, r)))(coarse, reconstruction, cotangent)
        assert "while" in jax.jit(lambda c, r: lrr_decoder._refine(c, r, 9)).lower(
            coarse, reconstruction).as_text()
        np.testing.assert_allclose(got[0], whole[0], atol=1e-6, rtol=0)
        for g, want in zip(got[1], whole[1](cotangent)):
            np.testing.assert_allclose(g, want, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------
# Real labels: PCA bases against bilinear upsampling (the paper's Sec. 3.1 / Fig. 3).

RATIO = 8
TRAIN_MAPS = 32
VAL_MAPS = 2


def _camvid_labels(directory, count, seed):
    files = sorted(directory.glob("*.png"))
    chosen = np.random.default_rng(seed).choice(len(files), count, replace=False)
    return np.stack([np.asarray(Image.open(files[i])) for i in sorted(chosen)]).astype(np.int32)


@jax.jit
def _least_squares_reconstruction(targets, basis):
    """Coefficients X minimising `||reconstruct(X, basis) - targets||^2` (per class) by
    conjugate gradients on the normal equations, then the reconstruction."""
    n, height, width, c = targets.shape
    shape = (n, height // RATIO, width // RATIO, basis.shape[2], c)
    forward = lambda x: basis_ops.reconstruct(x, basis)  # noqa: E731
    adjoint = jax.linear_transpose(forward, jax.ShapeDtypeStruct(shape, jnp.float32))
    normal = lambda x: adjoint(forward(x))[0]  # noqa: E731
    x, _ = jax.scipy.sparse.linalg.cg(normal, adjoint(targets)[0], maxiter=40)
    return forward(x)


def test_camvid_bases_beat_bilinear(camvid_dir):
    ignore, num_classes = 11, 11
    train = _camvid_labels(camvid_dir / "trainannot", TRAIN_MAPS, seed=0)
    val = _camvid_labels(camvid_dir / "valannot", VAL_MAPS, seed=0)
    bases = bases_lib.lrr_bases([train[i : i + 8] for i in range(0, TRAIN_MAPS, 8)], num_classes, num_bases=20,
                                ignore_label=ignore)
    targets = jax.nn.one_hot(val, num_classes, dtype=jnp.float32)  # void: all zero

    def miou(scores):
        confusion = metrics.confusion_matrix(jnp.argmax(scores, -1), val, num_classes, ignore)
        return metrics.summarize(np.asarray(confusion))["miou"]

    kernel = basis_ops.bilinear_kernel(2 * RATIO)[:, :, None, None]
    results = {
        "bilinear (block average, upsampled)": float(bases_lib.bilinear_reconstruction_miou(
            val, RATIO, num_classes=num_classes, ignore_label=ignore)),
        "bilinear kernel, least squares (K=1)": miou(_least_squares_reconstruction(
            targets, jnp.asarray(np.broadcast_to(kernel, (2 * RATIO, 2 * RATIO, 1, num_classes))))),
    }
    resized = pca.resize_bases(bases, 2 * RATIO)
    for k in (1, 3, 5, 10, 20):
        # The first k bases, zeros after them: one shape, one compilation for every k.
        first_k = resized * (jnp.arange(20) < k)[:, None]
        results[f"PCA bases, least squares (K={k})"] = miou(_least_squares_reconstruction(targets, first_k))
    print(f"\nCamVid, {VAL_MAPS} val maps reconstructed from 1/{RATIO} resolution "
          f"(bases from {TRAIN_MAPS} train maps):")
    for name, value in results.items():
        print(f"  {name:40s} mIoU {value:.4f}")
    assert results["PCA bases, least squares (K=10)"] > results["bilinear kernel, least squares (K=1)"]
    assert results["PCA bases, least squares (K=10)"] > results["bilinear (block average, upsampled)"]
    assert results["PCA bases, least squares (K=20)"] >= results["PCA bases, least squares (K=1)"]
