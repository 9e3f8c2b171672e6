"""ICNet: CFF parity with PyTorch, branch resolutions, summed pyramid vs numpy, eval-mode
outputs, FLOPs against PSPNet-50, training on the 8-device mesh, configs."""

import importlib.util
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lapseg import models
from lapseg.decoders import icnet as icnet_lib
from lapseg.layers.cff import CascadeFeatureFusion
from lapseg.layers.ppm import PyramidPooling
from tests.decoders.decoder_utils import CONFIGS, blocky_batch, filled_variables
from tests.training import loss_curve

NUM_CLASSES = 4
# ICNet on a quarter-width ResNet-18 (deep stem, output stride 8): same wiring, fast to compile.
SMALL = dict(num_classes=NUM_CLASSES, backbone="resnet18",
             backbone_kwargs={"width": 0.25, "deep_stem": True, "output_stride": 8},
             branch_channels=16, channels=32)
# Cascade label guidance: the paper's lambdas (Sec. 5), each branch at its own resolution.
LOSS_WEIGHTS = {"aux_sub4": 0.4, "aux_sub24": 0.4, "coarse_logits": 1.0}


# --- CFF -----------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("low_size, high_size", [((9, 17), (17, 33)), ((8, 16), (16, 32))])
def test_cff_matches_torch(train, low_size, high_size):
    """CFF written from the prototxt (`conv5_4_interp` -> `conv_sub4` 3x3 dilation 2 + BN;
    `conv3_1_sub2_proj` 1x1 + BN; sum; ReLU) and the paper's Fig. 3 classifier on the
    upsampled low branch, in PyTorch; random weights and BN statistics; eval (running
    statistics) and train (batch statistics) BN."""
    torch = pytest.importorskip("torch")
    from torch import nn as tnn
    from torch.nn import functional as F

    from tests.layers import torch_reference as ref

    low_c, high_c, features = 12, 6, 8
    torch.manual_seed(0)
    conv_low, bn_low = tnn.Conv2d(low_c, features, 3, padding=2, dilation=2, bias=False), tnn.BatchNorm2d(features)
    conv_high, bn_high = tnn.Conv2d(high_c, features, 1, bias=False), tnn.BatchNorm2d(features)
    classifier = tnn.Conv2d(low_c, NUM_CLASSES, 1)
    reference = ref.randomize(tnn.ModuleList([conv_low, bn_low, conv_high, bn_high, classifier]))
    reference.train(train)
    rng = np.random.default_rng(1)
    low = rng.standard_normal((2, *low_size, low_c)).astype(np.float32)
    high = rng.standard_normal((2, *high_size, high_c)).astype(np.float32)
    with torch.no_grad():
        up = F.interpolate(ref.to_torch(low), size=high_size, mode="bilinear", align_corners=True)
        want = F.relu(bn_low(conv_low(up)) + bn_high(conv_high(ref.to_torch(high))))
        want_aux = classifier(up)

    params, stats = {"classifier": ref.conv(classifier)}, {}
    params["conv_low"], stats["conv_low"] = ref.conv_bn(conv_low, bn_low)
    params["conv_high"], stats["conv_high"] = ref.conv_bn(conv_high, bn_high)
    cff = CascadeFeatureFusion(features, NUM_CLASSES)
    (fused, aux), _ = cff.apply({"params": params, "batch_stats": stats}, jnp.asarray(low), jnp.asarray(high),
                                train, mutable=["batch_stats"])
    ref.assert_parity(fused, ref.to_numpy(want),
                      f"CFF parity ({'train' if train else 'eval'}, {low_size}->{high_size})", 1e-4)
    if train:
        assert ref.max_abs_error(aux, ref.to_numpy(want_aux)) <= 1e-4
    else:
        assert aux is None  # inference skips the label-guidance classifier


# --- the whole network, small -------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return models.create_model("icnet", **SMALL)


@pytest.fixture(scope="module")
def variables(model):
    return filled_variables(model, (2, 128, 192, 3))


class Recorder:
    """Records the array inputs and the output of named module calls (as seen from outside
    the model, i.e. after ICNet's own interception)."""

    def __init__(self, names):
        self.names, self.calls = names, {}

    def __call__(self, next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        name = context.module.name
        if context.method_name == "__call__" and name in self.names:
            self.calls[name] = (tuple(a for a in args if isinstance(a, jax.Array)), out)
        return out


@pytest.fixture(scope="module")
def recorded(model, variables):
    """One jitted eval-mode run: (images, outputs, recorded calls of the branch modules)."""
    images = jax.random.normal(jax.random.key(0), (2, 128, 192, 3))

    def run(v, x):
        recorder = Recorder({"sub1_conv1", "backbone", "layer2_1", "ppm", "cff_sub24", "cff_sub12"})
        with nn.intercept_methods(recorder):
            out = model.apply(v, x, train=False)
        return out, recorder.calls

    out, calls = jax.jit(run)(variables, images)
    return images, out, calls


def test_branches_see_full_half_and_quarter_resolution(recorded):
    """sub1 reads the image itself, sub2 the x2-shrunk image up to conv3_1 (1/16), and the
    1/4 branch continues from conv3_1 shrunk by 2: the 1/32 map conv3_1 gives for a 1/4
    image (prototxt `conv3_1_sub4`)."""
    images, out, calls = recorded
    np.testing.assert_array_equal(calls["sub1_conv1"][0][0], images)                        # 1
    half = icnet_lib.resize.resize_bilinear(images, (64, 96), align_corners=True)
    np.testing.assert_allclose(calls["backbone"][0][0], half, atol=1e-6)                    # 1/2
    sub4, conv3_1 = calls["cff_sub24"][0][:2]
    assert conv3_1.shape[1:3] == (8, 12)                                                    # sub2: 1/16
    quarter = icnet_lib.resize.resize_bilinear(conv3_1, (4, 6), align_corners=True)
    np.testing.assert_allclose(calls["layer2_1"][0][0], quarter, atol=1e-6)                 # 1/4 branch
    assert calls["ppm"][0][0].shape[1:3] == sub4.shape[1:3] == (4, 6)                       # conv5_3: 1/32
    assert calls["cff_sub12"][0][1].shape[1:3] == (16, 24)                                  # sub1: 1/8
    assert {k: v.shape for k, v in out.items()} == {"logits": (2, 128, 192, NUM_CLASSES)}


def test_training_outputs_cascade_label_guidance(model, variables):
    """Training adds the three scored outputs at their own resolutions: 1/16, 1/8 and the 1/4
    `conv6_cls` map, whose x4 upsampling is 'logits' (test time only, in the paper)."""
    images = jax.random.normal(jax.random.key(3), (2, 128, 192, 3))
    out, _ = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, images)
    assert {k: v.shape for k, v in out.items()} == {
        "logits": (2, 128, 192, NUM_CLASSES), "aux_sub4": (2, 8, 12, NUM_CLASSES),
        "aux_sub24": (2, 16, 24, NUM_CLASSES), "coarse_logits": (2, 32, 48, NUM_CLASSES)}
    upsampled = icnet_lib.resize.resize_bilinear(out["coarse_logits"], (128, 192), align_corners=True)
    np.testing.assert_allclose(out["logits"], upsampled, atol=1e-5)


def test_inference_does_not_use_the_auxiliary_classifiers(model, variables):
    params = {k: dict(v) for k, v in variables["params"].items()}
    for name in ("cff_sub24", "cff_sub12"):
        del params[name]["classifier"]
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 64, 64, 3))), {**variables, "params": params})
    assert list(out) == ["logits"]


def numpy_align_corners(x, size):
    """Bilinear, align corners, written per output pixel: `[h, w, C] -> [H, W, C]`."""
    (h, w), (out_h, out_w) = x.shape[:2], size
    out = np.zeros((out_h, out_w, x.shape[2]))
    for p in range(out_h):
        for q in range(out_w):
            sy = p * (h - 1) / (out_h - 1) if out_h > 1 else 0.0
            sx = q * (w - 1) / (out_w - 1) if out_w > 1 else 0.0
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            dy, dx = sy - y0, sx - x0
            out[p, q] = ((1 - dy) * (1 - dx) * x[y0, x0] + (1 - dy) * dx * x[y0, x1]
                         + dy * (1 - dx) * x[y1, x0] + dy * dx * x[y1, x1])
    return out


def numpy_sum_pyramid(x, windows):
    """`x + sum_b upsample(avg_pool_b(x))` for one image `[H, W, C]`; `windows[b]` lists the
    (row range, column range) of every cell of bin b."""
    height, width, _ = x.shape
    total = x.astype(np.float64).copy()
    for rows, cols in windows:
        pooled = np.array([[x[r0:r1, c0:c1].mean(axis=(0, 1)) for c0, c1 in cols] for r0, r1 in rows])
        total += numpy_align_corners(pooled, (height, width))
    return total


def adaptive_cells(size, bins):
    return [(i * size // bins, -(-(i + 1) * size // bins)) for i in range(bins)]


def caffe_cells(size, kernel, stride):
    count = -(-max(size - kernel, 0) // stride) + 1
    return [(i * stride, min(i * stride + kernel, size)) for i in range(count)]


def test_summed_pyramid_in_icnet_matches_numpy(recorded):
    """The PPM inside ICNet (adaptive bins 1, 2, 3, 6, summed with its input, no convs)."""
    (x,), y = recorded[2]["ppm"]
    x, y = np.asarray(x), np.asarray(y)
    for n in range(2):
        windows = [(adaptive_cells(x.shape[1], b), adaptive_cells(x.shape[2], b)) for b in (1, 2, 3, 6)]
        np.testing.assert_allclose(y[n], numpy_sum_pyramid(x[n], windows), atol=1e-4)


@pytest.mark.parametrize("size", [(33, 65), (32, 64)])
def test_summed_pyramid_with_the_prototxt_kernels_matches_numpy(size):
    """`conv5_3_sum` with the prototxt's pooling kernels/strides, at its 33 x 65 (1025 x 2049
    input) and at 32 x 64 (1024 x 2048): 1, 2, 3 and 6 cells per side at both."""
    kernels, strides = icnet_lib.CITYSCAPES_POOLING["pool_kernels"], icnet_lib.CITYSCAPES_POOLING["pool_strides"]
    ppm = PyramidPooling((1, 2, 3, 6), "fixed", kernels, strides, branch_conv=False, fusion="sum")
    x = np.random.default_rng(0).standard_normal((1, *size, 4)).astype(np.float32)
    y = ppm.apply({}, jnp.asarray(x), False)
    windows = [(caffe_cells(size[0], k[0], s[0]), caffe_cells(size[1], k[1], s[1]))
               for k, s in zip(kernels, strides)]
    assert [(len(r), len(c)) for r, c in windows] == [(1, 1), (2, 2), (3, 3), (6, 6)]
    np.testing.assert_allclose(np.asarray(y[0]), numpy_sum_pyramid(x[0], windows), atol=1e-4)


def test_rejects_an_undilated_backbone():
    with pytest.raises(ValueError, match="output_stride=8"):
        models.create_model("icnet", num_classes=3, backbone="resnet18", backbone_kwargs={"output_stride": 32})
    with pytest.raises(ValueError, match="ResNet"):  # no ResNet defaults for VGG, no 'res5'
        models.create_model("icnet", num_classes=3, backbone="vgg16")


# --- cost, training, configs --------------------------------------------------------------


def eval_flops(model, size):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
    images = jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)
    compiled = jax.jit(lambda v, x: model.apply(v, x)["logits"]).lower(variables, images).compile()
    cost = compiled.cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]


def test_inference_flops_against_pspnet50_at_1024x2048():
    icnet_flops = eval_flops(models.create_model("icnet", num_classes=19), (1024, 2048))
    pspnet_flops = eval_flops(models.create_model("pspnet", num_classes=19), (1024, 2048))
    print(f"eval FLOPs at 1024x2048: ICNet {icnet_flops / 1e9:.1f} G, PSPNet-50 {pspnet_flops / 1e9:.1f} G, "
          f"ratio {pspnet_flops / icnet_flops:.1f}x")
    assert pspnet_flops > 5 * icnet_flops  # the paper: ICNet needs a fraction of PSPNet-50's cost


def test_loss_decreases_on_8_device_mesh(model):
    curve = loss_curve(model, blocky_batch(NUM_CLASSES, size=64, block=8), model_name="icnet",
                       loss_weights=LOSS_WEIGHTS, learning_rate=0.02)
    print("ICNet loss curve:", np.round(curve, 3))
    assert np.all(np.isfinite(curve))
    assert curve[-5:].mean() < 0.8 * curve[0]


@pytest.mark.parametrize("name, arg, size", [
    ("cityscapes_icnet_resnet50", None, (1024, 2048)),
    ("camvid_icnet_resnet50", None, (360, 480)),
    ("camvid_icnet_resnet50", "720x960", (720, 960)),
])
def test_config_builds(name, arg, size):
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config() if arg is None else module.get_config(arg)
    assert config.model == "icnet" and dict(config.loss.weights) == LOSS_WEIGHTS
    assert tuple(config.data.crop_size) == size
    model = models.create_model(config.model, num_classes=19, **config.model_kwargs)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, *size, 3)), train=True, mutable=["batch_stats"])[0],
                         variables)
    assert set(out) == {*LOSS_WEIGHTS, "logits"} and out["logits"].shape == (1, *size, 19)
    assert out["coarse_logits"].shape == (1, size[0] // 4, size[1] // 4, 19)
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(variables["params"]))
    print(f"{name} {arg or ''}: {params:,} params")


def test_a_pspnet50_run_fills_the_icnet_backbone():
    """The warm start (`config.init.checkpoint`, copied by path and shape): a PSPNet-50 built
    with the ICNet config's backbone kwargs has every ICNet backbone variable, same shape."""
    from flax import traverse_util

    from lapseg.train import recipes

    def flat(name, **kwargs):
        model = models.create_model(name, num_classes=19, **kwargs)
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
        return {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(variables).items()}

    backbone = {"backbone": "resnet50", "backbone_kwargs": recipes.ICNET50["backbone_kwargs"]}
    icnet = {k: v for k, v in flat("icnet", **{**recipes.ICNET50, **backbone}).items()
             if k.split("/")[1] == "backbone"}
    pspnet = flat("pspnet", **backbone)
    assert icnet and all(pspnet.get(path) == shape for path, shape in icnet.items())
