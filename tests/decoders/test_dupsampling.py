"""DUpsampling: parity of the fusion head + DUpsample with the PyTorch port's conv + reshape
(Tramac/awesome-semantic-segmentation-pytorch `core/models/dunet.py`), the fixed/trainable W and
attached PCA constants, decoder FLOPs against PSPNet, parameter counts, configs, and a loss that
decreases on the 8-device mesh."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lapseg import backbones, bases, data, models
from lapseg.decoders.dupsampling import DUpsampling
from lapseg.ops import dupsample
from lapseg.train import optim, recipes
from tests.decoders.decoder_utils import (TINY, TinyBackbone, blocky_batch, filled_variables,
                                          load_config, output_dtypes, output_shapes, param_count,
                                          rbg_prng)
from tests.training import loss_curve


def random_constants(num_classes, ratio, dim, seed=0):
    """A random `dupsampling_w [dim, r*r*C]` and `dupsampling_mean [r*r*C]`, as fitted constants."""
    rng = np.random.default_rng(seed)
    depth = ratio * ratio * num_classes
    w, mean = rng.standard_normal((dim, depth)) / np.sqrt(dim), rng.random(depth)
    return {"dupsampling_w": w.astype(np.float32), "dupsampling_mean": mean.astype(np.float32)}


def _torch_head(deep, lows, reduce, width, dim):
    """Tramac's `FeatureFused` + `_DUHead` (generalised to any low-level features), haochange's
    1x1 projection to L channels, and Tramac's `DUpsampling` (1x1 conv_w + reshape)."""
    from torch import nn

    fuse = nn.ModuleList(
        nn.Sequential(nn.Conv2d(c, reduce, 1, bias=False), nn.BatchNorm2d(reduce), nn.ReLU())
        for c in lows)
    block = nn.Sequential(
        nn.Conv2d(deep + reduce * len(lows), width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
    project = nn.Conv2d(width, dim, 1)
    return fuse, block, project


def _torch_dupsample(x, conv_w, scale):
    """Tramac `DUpsampling.forward` after its conv: N,C,H,W -> N,W,H,C -> ... -> N,C/s^2,Hs,Ws."""
    x = conv_w(x)
    n, c, h, w = x.size()
    x = x.permute(0, 3, 2, 1).contiguous().view(n, w, h * scale, c // scale)
    x = x.permute(0, 2, 1, 3).contiguous().view(n, h * scale, w * scale, c // (scale * scale))
    return x.permute(0, 3, 1, 2)


def test_head_matches_pytorch_port(tmp_path):
    """res5 4x4 (OS 16) + the default low-level pair, stem (stride 2) and res4 (stride 16,
    haochange's `x_13`, `x_46`), bilinearly resized, 1x1 -> 48, 3x3 convs, L = 8, r = 16,
    + mean, / T (T = exp(0.3)), cropped to a 61 x 59 input; eval mode, random BN statistics."""
    torch = pytest.importorskip("torch")
    from torch import nn
    from torch.nn import functional as F

    from tests.layers import torch_reference as ref

    classes, ratio, dim = 3, 16, 8
    channels = {"res5": 40, "stem": 8, "res4": 16}
    sizes = {"res5": (4, 4), "stem": (31, 30), "res4": (4, 4)}
    fitted = random_constants(classes, ratio, dim)
    w, mean = fitted["dupsampling_w"], fitted["dupsampling_mean"]
    torch.manual_seed(0)
    fuse, block, project = _torch_head(40, (8, 16), 12, 20, dim)
    for i, module in enumerate((fuse, block)):
        ref.randomize(module, seed=i)
    project.eval()
    conv_w = nn.Conv2d(dim, ratio * ratio * classes, 1, bias=False)
    with torch.no_grad():
        conv_w.weight.copy_(torch.from_numpy(w.T.copy())[:, :, None, None])
    rng = np.random.default_rng(0)
    features = {n: rng.standard_normal((2, *sizes[n], c)).astype(np.float32)
                for n, c in channels.items()}
    log_temperature = 0.3
    with torch.no_grad():
        deep = ref.to_torch(features["res5"])
        lows = [f(F.interpolate(ref.to_torch(features[n]), (4, 4), mode="bilinear", align_corners=True))
                for f, n in zip(fuse, ("stem", "res4"))]
        scores = _torch_dupsample(project(block(torch.cat([deep, *lows], 1))), conv_w, ratio)
        tile = torch.from_numpy(mean.reshape(ratio, ratio, classes)).permute(2, 0, 1).repeat(1, 4, 4)
        want = ((scores + tile) / np.exp(log_temperature))[:, :, :61, :59]

    params, stats = {"project": ref.conv(project), "log_temperature": np.float32(log_temperature)}, {}
    for j, f in enumerate(fuse):
        params[f"reduce{j}"], stats[f"reduce{j}"] = ref.conv_bn(f[0], f[1])
    for name, (conv, bn) in (("fuse1", (block[0], block[1])), ("fuse2", (block[3], block[4]))):
        params[name], stats[name] = ref.conv_bn(conv, bn)
    model = DUpsampling(backbones.create("resnet18", width=0.25, output_stride=16), classes, ratio=ratio,
                        dim=dim, reduce_channels=12, channels=20)
    assert tuple(model.features) == ("res5", "stem", "res4")
    constants = fitted
    decode = jax.jit(lambda v, f: model.apply(v, f, (61, 59), method=DUpsampling.decode))
    got = decode({"params": params, "batch_stats": stats, "constants": constants}, features)
    ref.assert_parity(got["logits"], ref.to_numpy(want),
                      "DUpsampling parity vs pytorch port (conv + reshape)", 1e-4)


@pytest.mark.parametrize("ratio", [8, 16, 32])
def test_ratios(ratio):
    model = models.create_model("dupsampling", num_classes=3, ratio=ratio, dim=8, **TINY)
    assert model.backbone.output_stride == ratio  # the factory's default
    assert output_shapes(model, (1, 45, 61, 3)) == {"logits": (1, 45, 61, 3)}


def test_bfloat16_compute():
    model = models.create_model("dupsampling", num_classes=3, ratio=32, dim=8, dtype=jnp.bfloat16,
                                **TINY)
    assert output_dtypes(model, (1, 64, 64, 3)) == {"logits": jnp.bfloat16}


def test_frozen_and_trainable_w():
    # Frozen or trainable, W is where attach finds it and gets the fitted values.
    x = jnp.zeros((1, 64, 64, 3))
    fitted = random_constants(3, 32, 8)
    for trainable in (False, True):
        model = models.create_model("dupsampling", num_classes=3, ratio=32, dim=8,
                                    trainable_w=trainable, **TINY)
        variables = model.init(jax.random.key(0), x)
        assert ("dupsampling_w" in variables["params"]) == trainable
        assert set(variables["constants"]) == (
            {"dupsampling_mean"} if trainable else {"dupsampling_w", "dupsampling_mean"})
        assert variables["params"]["log_temperature"].shape == ()
        attached = bases.attach(variables, fitted)
        where = attached["params"] if trainable else attached["constants"]
        np.testing.assert_array_equal(where["dupsampling_w"], fitted["dupsampling_w"])
        np.testing.assert_array_equal(attached["constants"]["dupsampling_mean"],
                                      fitted["dupsampling_mean"])
    model = models.create_model("dupsampling", num_classes=3, ratio=32, dim=8, add_mean=False, **TINY)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    assert set(variables["constants"]) == {"dupsampling_w"}


def _small(**fields):
    """DUpsampling on the five-conv stand-in backbone at OS 16, L = 8, 3 classes."""
    return models.create_model("dupsampling", num_classes=3, backbone=TinyBackbone(output_stride=16),
                               ratio=16, dim=8, reduce_channels=8, channels=16, **fields)


def test_dropout_after_each_fusion_conv_in_training_only():
    """haochange/DUpsampling `models/dunet.py` `Decoder.forward`: conv2 + bn2 + ReLU ->
    `dropout2` (nn.Dropout(0.5)) -> conv3 + bn3 + ReLU -> `dropout3` (nn.Dropout(0.1)) ->
    conv4 (the projection to L). Training outputs depend on the 'dropout' rng, evaluation
    does not need one and is deterministic; the masks sit after fuse1 / fuse2 and feed the
    projection."""
    model = _small(**recipes.DUPSAMPLING_REFERENCE)
    assert tuple(model.dropout_rates) == (0.5, 0.1) and model.trainable_w
    images = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
    variables = filled_variables(model, images.shape)

    @jax.jit
    def train(key):
        return model.apply(variables, images, train=True, rngs={"dropout": key},
                           mutable=["batch_stats", "intermediates"], capture_intermediates=True)

    (a, state), (b, _), (a_again, _) = (train(jax.random.key(k)) for k in (1, 2, 1))
    assert not np.allclose(a["logits"], b["logits"], atol=1e-3)
    np.testing.assert_array_equal(a["logits"], a_again["logits"])
    evaluate = jax.jit(lambda v: model.apply(v, images))  # no rng: dropout is off
    np.testing.assert_array_equal(evaluate(variables)["logits"], evaluate(variables)["logits"])

    seen = {k: v["__call__"][0] for k, v in state["intermediates"].items()
            if k in ("fuse1", "fuse2", "dropout1", "dropout2", "project")}
    for i, rate in ((1, 0.5), (2, 0.1)):
        before, after = np.asarray(seen[f"fuse{i}"]), np.asarray(seen[f"dropout{i}"])
        kept = after != 0
        np.testing.assert_allclose(after[kept], before[kept] / (1 - rate), rtol=1e-6)
        dropped = (before > 0) & ~kept  # element-wise, among the ReLU's non-zero outputs
        n = (before > 0).sum()
        assert abs(dropped.sum() / n - rate) < 4 * np.sqrt(rate * (1 - rate) / n)  # 4 sigma
    kernel = variables["params"]["project"]["kernel"][0, 0]
    bias = variables["params"]["project"]["bias"]
    np.testing.assert_allclose(seen["project"], np.asarray(seen["dropout2"]) @ kernel + bias,
                               rtol=1e-4, atol=1e-4)

    # Rates (0, 0), the default: training is deterministic too.
    plain = _small()
    plain_variables = filled_variables(plain, images.shape)
    outs = [plain.apply(plain_variables, images, train=True, rngs={"dropout": jax.random.key(k)},
                        mutable=["batch_stats"])[0]["logits"] for k in (1, 2)]
    np.testing.assert_array_equal(*outs)
    with pytest.raises(ValueError, match="dropout_rates"):
        _small(dropout_rates=(0.5,))


@pytest.mark.parametrize("trainable_w", [True, False])
def test_gradient_reaches_w_only_when_trainable(trainable_w):
    """LinZhuoChen/DUpsampling trains W with the network after pre-fitting it (`train.py`:
    `pre_compute_W`, then an SGD over every `requires_grad` parameter; `freeze_w` never
    called): `trainable_w=True` puts W in 'params', where the loss's gradient reaches it and
    an optimiser step moves it; frozen, it stays in 'constants', out of the optimiser."""
    model = _small(trainable_w=trainable_w)
    batch = blocky_batch(3, size=64)
    images, labels = jnp.asarray(batch["image"][:2]), jnp.asarray(batch["label"][:2])
    variables = filled_variables(model, images.shape)
    fitted = random_constants(3, 16, 8)
    variables = bases.attach(variables, fitted)

    def loss(params):
        out, _ = model.apply({**variables, "params": params}, images, train=True,
                             mutable=["batch_stats"])
        logp = jax.nn.log_softmax(out["logits"])
        return -jnp.take_along_axis(logp, labels[..., None], -1).mean()

    params = variables["params"]
    grads = jax.jit(jax.grad(loss))(params)
    assert ("dupsampling_w" in params) == trainable_w
    assert ("dupsampling_w" in variables["constants"]) != trainable_w
    if trainable_w:
        assert float(jnp.abs(grads["dupsampling_w"]).max()) > 0
        config = {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "warmup_steps": 0,
                  "lr_power": 0.9, "lr_multipliers": recipes.NEW_HEAD_10X}
        tx = optim.make_optimizer(ml_collections.ConfigDict(config), total_steps=10)
        updates, _ = tx.update(grads, tx.init(params), params)
        moved = params["dupsampling_w"] + updates["dupsampling_w"]
        assert float(jnp.abs(moved - fitted["dupsampling_w"]).max()) > 0


def test_default_constants_are_an_orthonormal_block_dct():
    # With nothing attached, W is the block-DCT code (orthonormal rows) and the mean is zero.
    model = models.create_model("dupsampling", num_classes=3, ratio=16, dim=24, **TINY)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    w = np.asarray(variables["constants"]["dupsampling_w"])
    np.testing.assert_array_equal(w, dupsample.cosine_matrix(16, 3, 24))
    np.testing.assert_allclose(w @ w.T, np.eye(24), atol=1e-5)
    assert not np.asarray(variables["constants"]["dupsampling_mean"]).any()


def test_clear_errors():
    def build(**kwargs):
        kwargs = {"num_classes": 3, "dim": 8, **TINY, **kwargs}
        return models.create_model("dupsampling", **kwargs)

    model = build(ratio=32)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    with pytest.raises(ValueError, match=r"needs \(8, 3072\)"):  # fitted for r = 16, model r = 32
        bases.attach(variables, random_constants(3, 16, 8))
    with pytest.raises(ValueError, match="output stride"):
        output_shapes(build(ratio=16, backbone_kwargs={"width": 0.25, "output_stride": 8}),
                      (1, 64, 64, 3))


def _flops(fn, *args):
    return jax.jit(fn).lower(*args).cost_analysis()["flops"]


def test_decoder_flops_far_below_pspnet():
    """At 512 x 512, ResNet-50, 21 classes: DUpsampling at OS 32 fuses res2/res3 at 16 x 16;
    PSPNet's head runs at 64 x 64 (OS 8). FLOPs of the lowered (not run) programs."""
    size, classes = (512, 512), 21
    counts = {}
    for name, kwargs in (("pspnet", {}), ("dupsampling", {"ratio": 32, "dim": 256})):
        model = models.create_model(name, num_classes=classes, backbone="resnet50", **kwargs)
        images = jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)
        zeros = jnp.zeros(images.shape)
        variables = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), zeros))
        backbone_variables = {k: variables[k]["backbone"] for k in ("params", "batch_stats")}
        features = jax.eval_shape(lambda v, m=model: m.backbone.apply(v, zeros, False),
                                  backbone_variables)
        total = _flops(lambda v, x, m=model: m.apply(v, x)["logits"], variables, images)
        decoder = _flops(lambda v, f, m=model: m.apply(v, f, size, method=type(m).decode)["logits"],
                         variables, features)
        counts[name] = (total, decoder)
        print(f"{name} ResNet-50 {size}: total {total / 1e9:.1f} GFLOP, "
              f"decoder {decoder / 1e9:.2f} GFLOP")
    print(f"decoder ratio PSPNet / DUpsampling: {counts['pspnet'][1] / counts['dupsampling'][1]:.1f}x, "
          f"total ratio {counts['pspnet'][0] / counts['dupsampling'][0]:.1f}x")
    assert counts["dupsampling"][1] < counts["pspnet"][1] / 10
    assert counts["dupsampling"][0] < counts["pspnet"][0] / 3


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
def test_parameter_count(backbone):
    model = models.create_model("dupsampling", num_classes=21, backbone=backbone, ratio=16, dim=256)
    count = param_count(model)
    print(f"DUpsampling {backbone} (OS 16, L = 256, W frozen), 21 classes: {count:,} parameters")
    # 1x1 reductions of the stem (64) and res4 (1024) -> 48 (+BN), 3x3 (2048+96) -> 256 and
    # 256 -> 256 (+BN), 1x1 256 -> 256 with bias, the temperature; backbone 23,508,032 / 42,500,160.
    decoder = ((64 + 1024) * 48 + 2 * 2 * 48 + 9 * 2144 * 256 + 9 * 256 * 256 + 2 * 2 * 256
               + 257 * 256 + 1)
    assert count == decoder + (23_508_032 if backbone == "resnet50" else 42_500_160)


@pytest.mark.parametrize("name", ["cityscapes_dupsampling_resnet50", "camvid_dupsampling_resnet50"])
def test_config_builds(name):
    config = load_config(name)
    assert config.model == "dupsampling"
    assert tuple(config.model_kwargs.features) == ("res5", "stem", "res4")
    info = data.dataset_info(config.data.dataset)
    model = models.from_config(config, info.num_classes)
    assert output_shapes(model, (1, 64, 64, 3))["logits"][:3] == (1, 64, 64)


def test_loss_decreases():
    """W and mean fitted by PCA on the batch's own labels (r = 16, L = 16).

    lr 0.2: reconstructions through the orthonormal W are unit-scale one-hot patches, so at
    T = 1 the softmax starts nearly flat (the paper's reason for the learned temperature);
    at the helper's default 0.01, 20 steps barely move T (1.386 -> 1.343)."""
    batch = blocky_batch(4)
    w, mean = bases.dupsampling_matrix([batch["label"]], 4, ratio=16, dim=16)
    model = models.create_model("dupsampling", num_classes=4, backbone=TinyBackbone(output_stride=16),
                                ratio=16, dim=16)
    with rbg_prng():
        curve = loss_curve(model, batch, model_name="dupsampling", loss_weights={"logits": 1.0},
                           learning_rate=0.2, fitted={"dupsampling_w": w, "dupsampling_mean": mean})
    print("DUpsampling loss curve:", np.round(curve, 3))
    assert curve[-5:].mean() < 0.8 * curve[0]
