"""DSRL: the learned SSSR upsampling module against PyTorch, feature-affinity loss against
numpy, outputs, inference cost, training, configs."""

import ast
import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

import lapseg
from lapseg import models
from lapseg.decoders.dsrl import DSRL, SSSRUpsample
from lapseg.decoders.dsrl import dsrl as dsrl_factory
from lapseg.decoders.pspnet import PSPNet
from lapseg.losses import dsrl as dsrl_loss
from lapseg.losses import segmentation
from lapseg.ops import resize
from tests.decoders.decoder_utils import TinyBackbone, blocky_batch, filled_variables, load_config
from tests.training import loss_curve

NUM_CLASSES = 4
# PSPNet on a five-conv stand-in for ResNet (same feature names; compiles in seconds).
SMALL = dict(num_classes=NUM_CLASSES, base="pspnet", backbone=TinyBackbone(output_stride=8),
             sisr_channels=16, espcn_channels=(32, 16))


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("scale", [2, 4])
def test_sssr_upsampling_matches_torch(scale, train):
    """The paper's SSSR upsampling module (Sec. 3.2: a stack of deconvolutions with BN and
    ReLU) written in PyTorch: log2(scale) x [ConvTranspose2d(k=2, s=2, no bias) + BatchNorm2d
    + ReLU], then a 1x1 Conv2d to the classes; random weights and BN statistics, eval
    (running statistics) and train (batch statistics) BN, odd input size."""
    torch = pytest.importorskip("torch")
    from torch import nn as tnn

    from tests.layers import torch_reference as ref

    classes, width, steps = NUM_CLASSES, 6, int(math.log2(scale))
    torch.manual_seed(0)
    layers, widths = [], [classes] + [width] * steps
    for step in range(steps):
        layers += [tnn.ConvTranspose2d(widths[step], width, 2, stride=2, bias=False),
                   tnn.BatchNorm2d(width), tnn.ReLU()]
    layers.append(tnn.Conv2d(width, classes, 1))
    reference = ref.randomize(tnn.Sequential(*layers))
    reference.train(train)
    x = np.random.default_rng(1).standard_normal((2, 7, 9, classes)).astype(np.float32)
    with torch.no_grad():
        want = ref.to_numpy(reference(ref.to_torch(x)))

    params, stats = {"classifier": ref.conv(layers[-1])}, {}
    for step in range(steps):
        deconv, bn = layers[3 * step], layers[3 * step + 1]
        params[f"deconv{step}"] = deconv.weight.detach().numpy().transpose(2, 3, 0, 1)  # IOhw->hwIO
        params[f"bn{step}"] = {"scale": bn.weight.detach().numpy(), "bias": bn.bias.detach().numpy()}
        stats[f"bn{step}"] = {"mean": bn.running_mean.numpy(), "var": bn.running_var.numpy()}
    module = SSSRUpsample(classes, scale=scale, channels=width)
    got, _ = module.apply({"params": params, "batch_stats": stats}, jnp.asarray(x), train,
                          mutable=["batch_stats"])
    assert got.shape == (2, 7 * scale, 9 * scale, classes)
    ref.assert_parity(got, want, f"SSSR x{scale} parity ({'train' if train else 'eval'})", 1e-4)


def numpy_affinity_loss(seg, sr, subsample, p, q, normalize=True):
    """Eq. 5 written out: pool, normalise each pixel (unless not `normalize`, as Dootmaan/DSRL
    `utils/fa_loss.py`), all pairwise dot products, mean |.|^q."""
    def affinity(f):
        n, height, width, c = f.shape
        h, w = height // subsample, width // subsample
        pooled = np.zeros((n, h, w, c))
        for i in range(h):
            for j in range(w):
                window = f[:, i * subsample:(i + 1) * subsample, j * subsample:(j + 1) * subsample]
                pooled[:, i, j] = window.mean(axis=(1, 2))
        pixels = pooled.reshape(n, h * w, c)
        norms = (np.abs(pixels) ** p).sum(-1, keepdims=True) ** (1 / p)
        unit = pixels / norms if normalize else pixels
        return np.stack([[[unit[b, a] @ unit[b, z] for z in range(h * w)] for a in range(h * w)]
                         for b in range(n)])

    return np.mean(np.abs(affinity(seg) - affinity(sr)) ** q)


@pytest.mark.parametrize("subsample, p, q, normalize",
                         [(8, 2.0, 1.0, True), (4, 1.0, 2.0, True), (8, 2.0, 1.0, False)])
def test_feature_affinity_loss_matches_numpy(subsample, p, q, normalize):
    rng = np.random.default_rng(0)
    seg = rng.standard_normal((2, 36, 44, 3))  # not multiples of 8: the pool floors
    sr = rng.standard_normal((2, 36, 44, 3)) + 0.5
    expected = numpy_affinity_loss(seg, sr, subsample, p, q, normalize)
    got = dsrl_loss.feature_affinity_loss(jnp.asarray(seg, jnp.float32), jnp.asarray(sr, jnp.float32),
                                          subsample=subsample, p=p, q=q, normalize=normalize)
    print(f"FA loss subsample={subsample} p={p} q={q}: {float(got):.6f} numpy {expected:.6f}")
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_feature_affinity_has_finite_gradient_at_zero_pixels():
    seg = jnp.zeros((1, 16, 16, 3)).at[:, 8:].set(1.0)  # FTM ends in ReLU: zero pixels happen
    sr = jax.random.normal(jax.random.key(0), (1, 16, 16, 3))
    grad = jax.jit(jax.grad(lambda a, b: dsrl_loss.feature_affinity_loss(a, b), argnums=(0, 1)))(seg, sr)
    assert all(bool(jnp.isfinite(g).all()) for g in grad)


@pytest.fixture(scope="module")
def model():
    return lapseg.create_model("dsrl", **SMALL)


@pytest.fixture(scope="module")
def variables(model):
    """Random variables of `model.init`'s structure, filled by numpy (jitting `init` compiles
    a random kernel per parameter shape: tens of seconds on a loaded 2-core CPU)."""
    return filled_variables(model, (2, 64, 96, 3))


def test_outputs_and_the_shared_encoder(model, variables):
    """Train mode adds 'sisr' and 'ftm' (and the base's 'aux'); eval mode only upsamples the
    base's logits. SISR reads the base's backbone: its gradient reaches the backbone stages
    it reads, not the base's head."""
    images = jax.random.normal(jax.random.key(1), (2, 64, 96, 3))

    def sisr_energy(params):
        out, _ = model.apply({**variables, "params": params}, images, train=True,
                             mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)})
        return jnp.sum(out["sisr"] ** 2), out

    (_, train_out), grads = jax.jit(jax.value_and_grad(sisr_energy, has_aux=True))(variables["params"])
    assert {key: value.shape for key, value in train_out.items()} == {
        "logits": (2, 64, 96, NUM_CLASSES), "aux": (2, 32, 48, NUM_CLASSES),
        "sisr": (2, 64, 96, 3), "ftm": (2, 64, 96, 3)}
    eval_out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
    assert {key: value.shape for key, value in eval_out.items()} == {
        "logits": (2, 64, 96, NUM_CLASSES), "aux": (2, 32, 48, NUM_CLASSES)}
    # The shared encoder's params sit under 'backbone', once; the base's head under 'base'.
    assert sorted(variables["params"]) == ["backbone", "base", "ftm", "sisr", "sssr"]
    assert "backbone" not in variables["params"]["base"]
    flat = traverse_util.flatten_dict(grads["backbone"])
    for stage in ("res2", "res5"):  # the features SISR reads
        assert any(float(jnp.abs(g).max()) > 0 for path, g in flat.items() if path[0] == stage)
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads["base"]))
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads["sssr"]))


def _flops(fn, *args):
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]


def _eval_pruned(variables):
    """`variables` without SISR and FTM, which eval mode must not need."""
    params = {k: v for k, v in variables["params"].items() if k not in ("sisr", "ftm")}
    return {**variables, "params": params, "batch_stats": {
        k: v for k, v in variables["batch_stats"].items() if k != "ftm"}}


def _base_flops(model, pruned):
    params, stats = pruned["params"], pruned["batch_stats"]
    base_variables = {"params": {"backbone": params["backbone"], **params["base"]},
                      "batch_stats": {"backbone": stats["backbone"], **stats["base"]}}
    return _flops(lambda v, x: model.base.apply(v, x)["logits"], base_variables,
                  jnp.zeros((2, 32, 48, 3)))


def test_inference_cost_is_the_base_at_half_resolution(model, variables):
    """Eval mode traces neither SISR nor FTM: their params can be absent and the FLOPs
    equal the base's on the half-size image plus the input resize and the SSSR module."""
    images = jnp.zeros((2, 64, 96, 3))
    pruned = _eval_pruned(variables)
    dsrl_flops = _flops(lambda v, x: model.apply(v, x)["logits"], pruned, images)
    base_flops = _base_flops(model, pruned)
    down = _flops(lambda x: resize.resize_bilinear(x, (32, 48), align_corners=False), images)
    sssr = SSSRUpsample(NUM_CLASSES, scale=2, channels=model.sssr_channels)
    sssr_variables = {"params": pruned["params"]["sssr"], "batch_stats": pruned["batch_stats"]["sssr"]}
    up = _flops(lambda v, y: sssr.apply(v, y, False), sssr_variables,
                jnp.zeros((2, 32, 48, NUM_CLASSES)))
    print(f"DSRL eval FLOPs {dsrl_flops:.0f} = base(half) {base_flops:.0f} + down {down:.0f} "
          f"+ SSSR {up:.0f}")
    assert dsrl_flops == pytest.approx(base_flops + down + up, rel=1e-6)


def test_bilinear_ablation_costs_the_base_plus_two_resizes():
    """`sssr_upsampling='bilinear'` (Dootmaan/DSRL's SSSR): no 'sssr' params, and the eval
    FLOPs are the base's at half resolution plus the two resizes."""
    model = lapseg.create_model("dsrl", **SMALL, sssr_upsampling="bilinear")
    variables = filled_variables(model, (2, 64, 96, 3))
    assert "sssr" not in variables["params"]
    images = jnp.zeros((2, 64, 96, 3))
    pruned = _eval_pruned(variables)
    dsrl_flops = _flops(lambda v, x: model.apply(v, x)["logits"], pruned, images)
    base_flops = _base_flops(model, pruned)
    down = _flops(lambda x: resize.resize_bilinear(x, (32, 48), align_corners=False), images)
    up = _flops(lambda y: resize.resize_bilinear(y, (64, 96), align_corners=True),
                jnp.zeros((2, 32, 48, NUM_CLASSES)))
    assert dsrl_flops == pytest.approx(base_flops + down + up, rel=1e-6)


def test_rejects_bad_wiring(model):
    other = TinyBackbone()
    with pytest.raises(ValueError, match="backbone"):
        DSRL(backbone=other, base=model.base)
    wrong = DSRL(backbone=model.backbone, base=model.base, sisr_features=("res9",))
    with pytest.raises(ValueError, match="res9"):
        jax.eval_shape(lambda: wrong.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    with pytest.raises(ValueError, match="sssr_upsampling"):
        DSRL(backbone=model.backbone, base=model.base, sssr_upsampling="nearest")
    odd = DSRL(backbone=model.backbone, base=model.base, scale=3)
    with pytest.raises(ValueError, match="power-of-2"):
        jax.eval_shape(lambda: odd.init(jax.random.key(0), jnp.zeros((1, 48, 48, 3))))


def test_registry_builds_the_base_by_name():
    """`create_model('dsrl', base=<name>, ...)` builds the base with its own factory (its
    backbone defaults apply), `num_classes` / `backbone*` go to the base, dtype to both."""
    model = lapseg.create_model("dsrl", num_classes=3, base="pspnet", backbone="resnet18",
                                backbone_kwargs={"width": 0.25}, base_kwargs={"channels": 8},
                                dtype=jnp.bfloat16, sisr_channels=4)
    assert isinstance(model.base, PSPNet) and model.backbone is model.base.backbone
    assert (model.base.num_classes, model.base.channels, model.sisr_channels) == (3, 8, 4)
    assert model.backbone.depth == 18 and model.backbone.deep_stem  # PSPNet's default
    assert model.dtype == model.base.dtype == model.backbone.dtype == jnp.bfloat16
    default = models.create_model("dsrl", num_classes=3)
    assert isinstance(default.base, PSPNet) and default.backbone.depth == 50


def test_registry_takes_a_built_base_and_rejects_bad_arguments():
    base = models.create_model("pspnet", num_classes=NUM_CLASSES, backbone=TinyBackbone(output_stride=8))
    model = models.create_model("dsrl", base=base, num_classes=NUM_CLASSES, scale=2)
    assert model.base is base and model.backbone is base.backbone
    with pytest.raises(ValueError, match="num_classes"):
        models.create_model("dsrl", base=base, num_classes=NUM_CLASSES + 1)
    assert dsrl_factory(base=base).base is base
    with pytest.raises(ValueError, match="backbone"):
        models.create_model("dsrl", base=base, backbone="resnet18")
    with pytest.raises(ValueError, match="wrapper"):
        models.create_model("dsrl", num_classes=3, base="dsrl")
    with pytest.raises(ValueError, match="dtype"):
        models.create_model("dsrl", num_classes=3, base_kwargs={"dtype": jnp.bfloat16})
    with pytest.raises(ValueError, match="backbone"):
        dsrl_factory(base=TinyBackbone())


def test_decoders_import_no_registry_nor_each_other():
    """Layering: ops -> layers -> backbones -> decoders -> models -> ...; a decoder file
    imports neither what sits above it nor another decoder."""
    above = ("lapseg.models", "lapseg.losses", "lapseg.train", "lapseg.infer", "lapseg.cli")
    decoder_dir = pathlib.Path(lapseg.__file__).parent / "decoders"
    decoders = {f"lapseg.decoders.{p.stem}" for p in decoder_dir.glob("*.py") if p.stem != "__init__"}
    for path in sorted(decoder_dir.glob("*.py")):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        bad = sorted(name for name in imported
                     if name.startswith(above) or (name in decoders and name != f"lapseg.decoders.{path.stem}"))
        assert not bad, f"{path.name} imports {bad}"


def test_loss_is_ce_plus_weighted_mse_and_fa():
    rng = np.random.default_rng(0)
    outputs = {"logits": jnp.asarray(rng.standard_normal((2, 16, 16, NUM_CLASSES)), jnp.float32),
               "aux": jnp.asarray(rng.standard_normal((2, 8, 8, NUM_CLASSES)), jnp.float32),
               "sisr": jnp.asarray(rng.standard_normal((2, 16, 16, 3)), jnp.float32),
               "ftm": jnp.asarray(rng.random((2, 16, 16, 3)), jnp.float32)}
    labels = jnp.asarray(rng.integers(0, NUM_CLASSES, (2, 16, 16)), jnp.int32)
    image = rng.standard_normal((2, 16, 16, 3)).astype(np.float32)
    config = ml_collections.ConfigDict({"weights": {"logits": 1.0, "aux": 0.4}, "mse_weight": 0.3,
                                        "fa_weight": 2.0, "fa_subsample": 4})
    loss_fn = lapseg.losses.for_model("dsrl", config, ignore_label=255)
    total, metrics = loss_fn(outputs, labels, {"image": jnp.asarray(image), "label": labels})
    ce, _ = segmentation.deep_supervision(outputs, labels, weights={"logits": 1.0, "aux": 0.4},
                                          ignore_label=255)
    mse = np.mean((np.asarray(outputs["sisr"]) - image) ** 2)
    fa = numpy_affinity_loss(np.asarray(outputs["ftm"], np.float64), np.asarray(outputs["sisr"], np.float64),
                             4, 2.0, 1.0)
    np.testing.assert_allclose(float(total), float(ce) + 0.3 * mse + 2.0 * fa, rtol=1e-5)
    assert {"loss/logits", "loss/aux", "loss/ce", "loss/mse", "loss/fa"} <= set(metrics)


def test_loss_decreases_on_8_device_mesh(model):
    curve = loss_curve(model, blocky_batch(), model_name="dsrl",
                       loss_weights={"logits": 1.0, "aux": 0.4}, learning_rate=0.02,
                       loss_config={"mse_weight": 0.1, "fa_weight": 1.0})
    print("DSRL loss curve:", np.round(curve, 3))
    assert np.all(np.isfinite(curve))
    assert curve[-5:].mean() < 0.8 * curve[0]


@pytest.mark.parametrize("name", ["cityscapes_dsrl_pspnet", "camvid_dsrl_pspnet"])
def test_config_builds(name):
    config = load_config(name)
    assert config.model == "dsrl"
    # The paper's learned SSSR module; the reference's FA subsampling (Dootmaan/DSRL FALoss).
    assert config.model_kwargs.sssr_upsampling == "deconv" and config.loss.fa_subsample == 16
    assert config.loss.fa_normalize is False  # Dootmaan/DSRL utils/fa_loss.py
    assert (config.loss.mse_weight, config.loss.fa_weight) == (0.1, 1.0)
    model = lapseg.create_model(config.model, num_classes=11, **config.model_kwargs)
    images = jnp.zeros((1, 64, 64, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
    out = jax.eval_shape(lambda v: model.apply(v, images), variables)
    assert out["logits"].shape == (1, 64, 64, 11)
    assert set(config.loss.weights) <= {"logits", "aux"}
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(variables["params"]))
    print(f"{name}: {params:,} params")
