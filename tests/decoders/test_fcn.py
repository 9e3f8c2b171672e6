"""Tests for lapseg.decoders.fcn: parity with pytorch-fcn on VGG-16, bilinear init, crop-free
geometry on ResNet, parameter count, a sharded train step, the config.

The PyTorch reference (`PytorchFCN`) is wkentaro/pytorch-fcn's `FCN32s`/`FCN16s`/`FCN8s`/
`FCN8sAtOnce` (torchfcn/models/fcn*.py) written out with its layer names, forward code and
crop offsets, and a channel multiplier so that the test runs at a quarter width; pytorch-fcn
is the reference port of the Caffe nets, whose crops and score layers it reproduces.
"""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax import lax

from lapseg import models
from lapseg.decoders import fcn
from lapseg.ops import basis as basis_ops
from tests.references import upsample_filt
from tests.training import loss_curve

torch = pytest.importorskip("torch")
tnn = torch.nn

WIDTH = 0.25
NUM_CLASSES = 5
VARIANTS = ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce")
CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def get_upsampling_weight(in_channels, out_channels, kernel_size):
    """pytorch-fcn fcn32s.py (= fcn.berkeleyvision.org surgery.py `upsample_filt` on the diagonal)."""
    filt = upsample_filt(kernel_size)
    weight = np.zeros((in_channels, out_channels, kernel_size, kernel_size), dtype=np.float64)
    weight[range(in_channels), range(out_channels), :, :] = filt
    return weight


class PytorchFCN(tnn.Module):
    """pytorch-fcn's FCN32s / FCN16s / FCN8s / FCN8sAtOnce, channels times `width`."""

    def __init__(self, variant, n_class, width):
        super().__init__()
        self.variant = variant
        c = lambda n: max(1, round(n * width))  # noqa: E731
        blocks = ((3, c(64), 2), (c(64), c(128), 2), (c(128), c(256), 3), (c(256), c(512), 3), (c(512), c(512), 3))
        for b, (cin, cout, convs) in enumerate(blocks, start=1):
            for i in range(1, convs + 1):
                pad = 100 if (b, i) == (1, 1) else 1
                setattr(self, f"conv{b}_{i}", tnn.Conv2d(cin if i == 1 else cout, cout, 3, padding=pad))
            setattr(self, f"pool{b}", tnn.MaxPool2d(2, stride=2, ceil_mode=True))
        self.fc6 = tnn.Conv2d(c(512), c(4096), 7)
        self.drop6 = tnn.Dropout2d()
        self.fc7 = tnn.Conv2d(c(4096), c(4096), 1)
        self.drop7 = tnn.Dropout2d()
        self.score_fr = tnn.Conv2d(c(4096), n_class, 1)
        if variant == "fcn32s":
            self.upscore = tnn.ConvTranspose2d(n_class, n_class, 64, stride=32, bias=False)
        else:
            self.score_pool4 = tnn.Conv2d(c(512), n_class, 1)
            self.upscore2 = tnn.ConvTranspose2d(n_class, n_class, 4, stride=2, bias=False)
        if variant == "fcn16s":
            self.upscore16 = tnn.ConvTranspose2d(n_class, n_class, 32, stride=16, bias=False)
        if variant in ("fcn8s", "fcn8s_atonce"):
            self.score_pool3 = tnn.Conv2d(c(256), n_class, 1)
            self.upscore_pool4 = tnn.ConvTranspose2d(n_class, n_class, 4, stride=2, bias=False)
            self.upscore8 = tnn.ConvTranspose2d(n_class, n_class, 16, stride=8, bias=False)

    def forward(self, x):
        h = x
        pools = {}
        for b, convs in enumerate((2, 2, 3, 3, 3), start=1):
            for i in range(1, convs + 1):
                h = torch.relu(getattr(self, f"conv{b}_{i}")(h))
            h = getattr(self, f"pool{b}")(h)
            pools[b] = h
        pool3, pool4 = pools[3], pools[4]
        h = self.drop6(torch.relu(self.fc6(h)))
        h = self.drop7(torch.relu(self.fc7(h)))
        h = self.score_fr(h)
        if self.variant == "fcn32s":
            return _crop(self.upscore(h), 19, x).contiguous()
        h = self._add_skip(self.upscore2(h), self.score_pool4, pool4, 0.01, 5)  # 1/16
        if self.variant == "fcn16s":
            return _crop(self.upscore16(h), 27, x).contiguous()
        h = self._add_skip(self.upscore_pool4(h), self.score_pool3, pool3, 0.0001, 9)  # 1/8
        return _crop(self.upscore8(h), 31, x).contiguous()

    def _add_skip(self, upscored, score, pool, atonce_scale, offset):
        """pytorch-fcn's skip: the scored pool (FCN8sAtOnce scales the pool first, "XXX:
        scaling to train at once"), cropped at `offset` to the upsampled scores, added."""
        h = score(pool * atonce_scale if self.variant == "fcn8s_atonce" else pool)
        return upscored + _crop(h, offset, upscored)


def _crop(h, offset, like):
    """pytorch-fcn's crop: `h[:, :, offset : offset + H, offset : offset + W]`, H x W of `like`."""
    return h[:, :, offset : offset + like.size()[2], offset : offset + like.size()[3]]


# lapseg name -> pytorch-fcn name, per variant.
_SCORE_NAMES = {"score_fc7": "score_fr", "score_pool4": "score_pool4", "score_pool3": "score_pool3"}
_UPSCORE_NAMES = {
    "fcn32s": {"upscore_fc7": "upscore"},
    "fcn16s": {"upscore_fc7": "upscore2", "upscore_pool4": "upscore16"},
    "fcn8s": {"upscore_fc7": "upscore2", "upscore_pool4": "upscore_pool4", "upscore_pool3": "upscore8"},
}
_UPSCORE_NAMES["fcn8s_atonce"] = _UPSCORE_NAMES["fcn8s"]


def _randomize(tree, seed):
    """Random values for every leaf: He-scaled kernels, small random biases (so that zero
    init and bias handling cannot pass by accident)."""
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(tree)
    out = {}
    for path, leaf in flat.items():
        if path[-1] == "kernel":
            fan_in = np.prod(leaf.shape[:-1])
            out[path] = rng.normal(0, np.sqrt(2.0 / fan_in), leaf.shape).astype(np.float32)
        else:
            out[path] = rng.normal(0, 0.3, leaf.shape).astype(np.float32)
    return traverse_util.unflatten_dict(out)


def _to_torch(reference, variables, variant):
    """Copies lapseg FCN variables into the PyTorch reference (HWIO -> OIHW, HWIO -> IOHW)."""
    state = {}
    params = variables["params"]
    for name, layer in params["backbone"].items():
        state[f"{name}.weight"] = np.transpose(layer["conv"]["kernel"], (3, 2, 0, 1))
        state[f"{name}.bias"] = layer["conv"]["bias"]
    for name, layer in params.items():
        if name.startswith("score_"):
            state[f"{_SCORE_NAMES[name]}.weight"] = np.transpose(layer["conv"]["kernel"], (3, 2, 0, 1))
            state[f"{_SCORE_NAMES[name]}.bias"] = layer["conv"]["bias"]
    kernels = {**variables.get("constants", {}), **{k: v for k, v in params.items() if k.startswith("upscore")}}
    for name, kernel in kernels.items():
        state[f"{_UPSCORE_NAMES[variant][name]}.weight"] = np.transpose(kernel, (2, 3, 0, 1))
    reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype(np.float32)


@pytest.mark.parametrize(
    "variant, trainable_upsampling",
    [*((v, False) for v in VARIANTS), ("fcn8s", True)],
)
def test_vgg16_pad100_matches_pytorch_fcn(variant, trainable_upsampling, images):
    model = models.create_model(variant, num_classes=NUM_CLASSES, backbone_kwargs={"width": WIDTH},
                                trainable_upsampling=trainable_upsampling)
    variables = model.init(jax.random.key(0), jnp.asarray(images))
    # Random weights everywhere, upsampling kernels included when trainable (not symmetric,
    # so the kernel layout is checked too); frozen ones stay bilinear.
    variables = {**variables, "params": _randomize(variables["params"], seed=1)}
    ours = np.asarray(model.apply(variables, jnp.asarray(images))["logits"])

    reference = PytorchFCN(variant, NUM_CLASSES, WIDTH).eval()
    _to_torch(reference, jax.device_get(variables), variant)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    assert ours.shape == theirs.shape == (1, 32, 32, NUM_CLASSES)
    assert np.abs(theirs).max() > 1.0  # a non-trivial output
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_init_is_pytorch_fcn_init(variant, images):
    """Score layers zero, upsampling kernels frozen and equal to `get_upsampling_weight`."""
    model = models.create_model(variant, num_classes=NUM_CLASSES, backbone_kwargs={"width": WIDTH})
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.asarray(images))
    assert set(variables["constants"]) == set(_UPSCORE_NAMES[variant])
    variables = model.init(jax.random.key(0), jnp.asarray(images))
    sizes = {"upscore": 64, "upscore2": 4, "upscore16": 32, "upscore_pool4": 4, "upscore8": 16}
    for name, kernel in variables["constants"].items():
        size = sizes[_UPSCORE_NAMES[variant][name]]
        expected = get_upsampling_weight(NUM_CLASSES, NUM_CLASSES, size).transpose(2, 3, 0, 1)
        np.testing.assert_array_equal(np.asarray(kernel), expected.astype(np.float32))
    for name, layer in variables["params"].items():
        if name.startswith("score_"):
            assert not np.any(layer["conv"]["kernel"]) and not np.any(layer["conv"]["bias"])


def test_transposed_conv_is_lax_conv_transpose():
    """The 2 x 2-neighbour einsum equals the dilated-input transposed convolution."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 5, 7, 3)), jnp.float32)
    for stride in (2, 3, 8):
        kernel = jnp.asarray(rng.normal(size=(2 * stride, 2 * stride, 3, 4)), jnp.float32)
        expected = lax.conv_transpose(x, kernel, (stride, stride), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
        # lax without transpose_kernel correlates; PyTorch's scatter uses the kernel flipped.
        ours = fcn.transposed_conv(x, kernel[::-1, ::-1])
        np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_centred_geometry_is_bilinear_upsample():
    """Crop-free FCN: the frozen x2 step cut at f // 2 is `ops.basis.bilinear_upsample`."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 4, 6, 3)), jnp.float32)
    for factor in (2, 8):
        kernel = jnp.asarray(basis_ops.bilinear_deconv_weight(2 * factor, 3))
        crop = factor // 2
        ours = fcn.transposed_conv(x, kernel)[:, crop : crop + 4 * factor, crop : crop + 6 * factor]
        np.testing.assert_allclose(ours, basis_ops.bilinear_upsample(x, factor), atol=1e-6)


@pytest.fixture(scope="module")
def resnet_fcn8s():
    return models.create_model("fcn8s", num_classes=NUM_CLASSES, backbone="resnet18",
                               backbone_kwargs={"width": WIDTH})


def test_resnet_crop_free_odd_sizes(resnet_fcn8s):
    model = resnet_fcn8s
    assert model.features == ("res5", "res4", "res3") and model.crop_offsets is None
    images = jnp.zeros((2, 37, 45, 3))
    out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), images)[0])
    assert out["logits"].shape == (2, 37, 45, NUM_CLASSES)


def test_rejects_bad_features():
    with pytest.raises(ValueError, match="has no features"):
        model = models.create_model("fcn16s", num_classes=3, backbone="resnet18",
                                    backbone_kwargs={"width": WIDTH}, features=("res5", "pool4"))
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def _vgg16_fcn_parameter_count(num_classes, skips):
    """FCN on VGG-16 counted from the paper's layer table (conv 3x3 + bias, fc6 7x7, fc7 1x1,
    1x1 score layers with bias; upsampling kernels C x C x 2f x 2f)."""
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
             (256, 512)] + [(512, 512)] * 5
    total = sum(9 * i * o + o for i, o in convs) + 49 * 512 * 4096 + 4096 + 4096 * 4096 + 4096
    total += sum(c * num_classes + num_classes for c in (4096, 512, 256)[: skips + 1])
    upsampling = {0: (64,), 1: (4, 32), 2: (4, 4, 16)}[skips]
    return total, sum(k * k * num_classes * num_classes for k in upsampling)


@pytest.mark.parametrize("variant, skips", [("fcn32s", 0), ("fcn16s", 1), ("fcn8s", 2)])
def test_vgg16_parameter_count(variant, skips):
    model = models.create_model(variant, num_classes=21)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))  # noqa: E731
    assert (count(variables["params"]), count(variables["constants"])) == _vgg16_fcn_parameter_count(21, skips)


def test_resnet_fcn8s_trains_on_8_devices(resnet_fcn8s):
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(0, NUM_CLASSES, (8, 4, 4)), np.ones((16, 16), np.int64)).astype(np.int32)
    batch = {"image": rng.normal(size=(8, 64, 64, 3)).astype(np.float32) + labels[..., None], "label": labels}
    curve = loss_curve(resnet_fcn8s, batch, model_name="fcn8s", loss_weights={"logits": 1.0}, steps=2)
    assert np.all(np.isfinite(curve))
    np.testing.assert_allclose(curve[0], np.log(NUM_CLASSES), rtol=1e-5)  # zero-initialised scores
    assert curve[-1] < curve[0]


def _load_config(name):
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_config_builds():
    config = _load_config("voc_fcn8s_vgg16")
    from lapseg import data  # pylint: disable=import-outside-toplevel

    num_classes = data.dataset_info(config.data.dataset).num_classes
    model = models.from_config(config, num_classes)
    out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))[0])
    assert out["logits"].shape == (1, 64, 64, num_classes)


def test_config_steps_as_the_caffe_solver_on_the_summed_loss():
    """`voc-fcn8s-atonce/solver.prototxt` (base_lr 1e-10, momentum 0.99, weight_decay 5e-4, on
    the loss summed over an image's pixels; `lr_mult` 2 and `decay_mult` 0 on biases), written
    as Caffe's SGD in numpy, against lapseg's optimiser from the config on the per-pixel mean
    loss (whose gradient is the summed loss's / pixels): two steps agree. With the config's
    weight decay at 5e-4 instead, the decay term would be 187,500x the reference's."""
    from lapseg.train import optim

    config = _load_config("voc_fcn8s_vgg16")
    pixels = 500 * 375  # a typical VOC image: the config's summed-loss scale
    assert tuple(config.data.crop_size) == (500, 500) and config.data.scale_range == (1.0, 1.0)
    rng = np.random.default_rng(0)
    params = {"score": {"kernel": rng.standard_normal((4, 3)), "bias": rng.standard_normal(3)}}
    # Summed-loss gradients of the decay's size (5e-4 w), so that a wrongly scaled decay shows.
    grads_sum = [{"score": {"kernel": rng.standard_normal((4, 3)) * 5e-4,
                            "bias": rng.standard_normal(3) * 5e-4}} for _ in range(2)]

    # Caffe SGDSolver: diff += decay_mult * wd * w; v = momentum v + lr_mult * base_lr * diff; w -= v.
    caffe = {k: v.copy() for k, v in params["score"].items()}
    history = {k: np.zeros_like(v) for k, v in caffe.items()}
    caffe_moved = {k: np.zeros_like(v) for k, v in caffe.items()}  # w + 1e-13 would round it off
    lr_mult, decay_mult = {"kernel": 1.0, "bias": 2.0}, {"kernel": 1.0, "bias": 0.0}
    for grads in grads_sum:
        for key, g in grads["score"].items():
            diff = g + decay_mult[key] * 5e-4 * caffe[key]
            history[key] = 0.99 * history[key] + lr_mult[key] * 1e-10 * diff
            caffe[key] = caffe[key] - history[key]
            caffe_moved[key] -= history[key]

    def lapseg_moves(optimizer_config):
        tx = optim.make_optimizer(optimizer_config, total_steps=config.num_train_steps)
        ours = jax.tree.map(jnp.asarray, params)
        moved = jax.tree.map(jnp.zeros_like, ours)  # summed updates (params would round them off)
        state = tx.init(ours)
        for grads in grads_sum:
            mean_grads = jax.tree.map(lambda g: jnp.asarray(g / pixels), grads)
            updates, state = tx.update(mean_grads, state, ours)
            moved = jax.tree.map(lambda m, u: m + u, moved, updates)
            ours = jax.tree.map(lambda p, u: p + u, ours, updates)
        return {k: np.asarray(v, np.float64) for k, v in moved["score"].items()}

    moved = lapseg_moves(config.optimizer)
    for key in ("kernel", "bias"):
        np.testing.assert_allclose(moved[key], caffe_moved[key], rtol=1e-4)
    unscaled = config.optimizer.copy_and_resolve_references()
    unscaled.weight_decay = 5e-4
    wrong = lapseg_moves(unscaled)["kernel"]
    assert np.abs(wrong).max() > 1000 * np.abs(caffe_moved["kernel"]).max()
    assert config.optimizer.weight_decay * config.optimizer.learning_rate == pytest.approx(5e-4 * 1e-10)
