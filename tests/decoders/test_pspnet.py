"""PSPNet: parity of the PPM + heads with semseg's `model/pspnet.py`, shapes at OS 8/16/32,
parameter counts, its configs, and a loss that decreases on the 8-device mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lapseg import backbones, data, models
from lapseg.decoders.pspnet import PSPNet
from tests.decoders.decoder_utils import (TINY, TinyBackbone, blocky_batch, load_config,
                                          output_dtypes, output_shapes, output_shapes_at_stride,
                                          param_count, rbg_prng)
from tests.training import loss_curve


def test_head_matches_semseg():
    """semseg PSPNet head on given res5/res4 (OS 8, 9 x 9): PPM(1,2,3,6) + cls + aux, eval mode,
    align-corners upsampling to 65 x 65 (semseg's (x-1)/8*8+1 size rule)."""
    torch = pytest.importorskip("torch")
    from torch import nn

    from tests.layers import torch_reference as ref

    c5, c4, classes, bins = 32, 24, 5, (1, 2, 3, 6)
    torch.manual_seed(0)
    ppm = nn.ModuleList(
        nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(c5, c5 // 4, 1, bias=False),
                      nn.BatchNorm2d(c5 // 4), nn.ReLU())
        for b in bins)
    cls = nn.Sequential(nn.Conv2d(2 * c5, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                        nn.ReLU(), nn.Dropout2d(0.1), nn.Conv2d(16, classes, 1))
    aux = nn.Sequential(nn.Conv2d(c4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                        nn.ReLU(), nn.Dropout2d(0.1), nn.Conv2d(8, classes, 1))
    for i, module in enumerate((ppm, cls, aux)):
        ref.randomize(module, seed=i)
    rng = np.random.default_rng(0)
    res5 = rng.standard_normal((2, 9, 9, c5)).astype(np.float32)
    res4 = rng.standard_normal((2, 9, 9, c4)).astype(np.float32)
    def up(t, size):
        return nn.functional.interpolate(t, size, mode="bilinear", align_corners=True)

    with torch.no_grad():
        x = ref.to_torch(res5)
        x = torch.cat([x] + [up(f(x), (9, 9)) for f in ppm], 1)
        want = {"logits": ref.to_numpy(up(cls(x), (65, 65))),
                "aux": ref.to_numpy(up(aux(ref.to_torch(res4)), (65, 65)))}

    params, stats = {"ppm": {}}, {"ppm": {}}
    for i, f in enumerate(ppm):
        params["ppm"][f"branch{i}"], stats["ppm"][f"branch{i}"] = ref.conv_bn(f[1], f[2])
    for name, seq in (("head", cls), ("aux", aux)):
        params[f"{name}_conv"], stats[f"{name}_conv"] = ref.conv_bn(seq[0], seq[1])
        params[f"{name}_classifier"] = ref.conv(seq[4])
    model = PSPNet(backbones.create("resnet18", width=0.25), classes, channels=16,
                   aux_channels=8)
    decode = jax.jit(lambda v, f: model.apply(v, f, (65, 65), method=PSPNet.decode))
    got = decode({"params": params, "batch_stats": stats}, {"res5": res5, "res4": res4})
    for key in ("logits", "aux"):
        ref.assert_parity(got[key], want[key], f"PSPNet {key} parity vs semseg", 1e-4)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_strides(output_stride):
    shapes = output_shapes_at_stride("pspnet", output_stride)
    assert shapes == {"logits": (1, 45, 61, 3), "aux": (1, 45, 61, 3)}


def test_single_feature_has_no_auxiliary_head():
    model = models.create_model("pspnet", num_classes=3, features=("res5",), **TINY)
    assert output_shapes(model, (1, 32, 32, 3)) == {"logits": (1, 32, 32, 3)}
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    assert not any(name.startswith("aux") for name in variables["params"])


def test_bfloat16_compute():
    model = models.create_model("pspnet", num_classes=3, dtype=jnp.bfloat16, **TINY)
    assert output_dtypes(model, (1, 32, 32, 3)) == {"logits": jnp.bfloat16, "aux": jnp.bfloat16}


def test_factory_defaults_and_errors():
    model = models.create_model("pspnet", num_classes=21)
    assert model.backbone.deep_stem and model.backbone.output_stride == 8
    assert model.backbone.depth == 50
    with pytest.raises(ValueError, match="needs backbone features"):
        model = models.create_model("pspnet", num_classes=3, features=("pool5",), **TINY)
        output_shapes(model, (1, 32, 32, 3))
    with pytest.raises(ValueError, match="features must be"):
        models.create_model("pspnet", num_classes=3, features="res5", **TINY)


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
def test_parameter_count(backbone):
    count = param_count(models.create_model("pspnet", num_classes=21, backbone=backbone))
    print(f"PSPNet {backbone} (deep stem, OS 8), 21 classes: {count:,} parameters")
    # Deep-stem ResNet-50 / -101: 23,631,808 / 42,623,936. Head, C = 21: PPM 4 x (1x1 2048 -> 512
    # + BN), 3x3 4096 -> 512 + BN, 1x1 512 -> C; aux 3x3 1024 -> 256 + BN, 1x1 256 -> C.
    c = 21
    head = 4 * (2048 * 512 + 2 * 512) + 9 * 4096 * 512 + 2 * 512 + 512 * c + c
    aux = 9 * 1024 * 256 + 2 * 256 + 256 * c + c
    assert count == head + aux + (23_631_808 if backbone == "resnet50" else 42_623_936)


@pytest.mark.parametrize("name", ["ade20k_pspnet_resnet50", "camvid_pspnet_resnet50",
                                  "cityscapes_pspnet_resnet50"])
def test_config_builds(name):
    config = load_config(name)
    assert config.model == "pspnet" and dict(config.loss.weights) == {"logits": 1.0, "aux": 0.4}
    model = models.from_config(config, data.dataset_info(config.data.dataset).num_classes)
    assert output_shapes(model, (1, 64, 64, 3))["logits"][:3] == (1, 64, 64)


def test_loss_decreases():
    model = models.create_model("pspnet", num_classes=4, backbone=TinyBackbone(output_stride=8))
    with rbg_prng():
        curve = loss_curve(model, blocky_batch(4), model_name="pspnet",
                           loss_weights={"logits": 1.0, "aux": 0.4})
    print("PSPNet loss curve:", np.round(curve, 3))
    assert curve[-5:].mean() < 0.8 * curve[0]


def test_cityscapes_config_is_semsegs():
    """hszhao/semseg `config/cityscapes/cityscapes_pspnet50.yaml`: 713 crops, scales 0.5-2,
    batch 16, lr 0.01 (head x10), poly 0.9, weight decay 1e-4, 200 epochs = 200 x 186 steps
    (ceil(2975 / 8) = 372 images per GPU at batch 2, drop_last), aux 0.4."""
    config = load_config("cityscapes_pspnet_resnet50")
    assert (config.data.crop_size, config.data.scale_range, config.data.batch_size) == (
        (713, 713), (0.5, 2.0), 16)
    assert (config.optimizer.learning_rate, config.optimizer.weight_decay,
            config.optimizer.lr_power, config.optimizer.warmup_steps) == (0.01, 1e-4, 0.9, 0)
    assert config.num_train_steps == 200 * (-(-2975 // 8) // 2) == 37_200
    assert config.model_kwargs.backbone_kwargs.deep_stem and config.model_kwargs.backbone_kwargs.output_stride == 8
