"""GCN (Large Kernel Matters): parity of GCN/BR and the top-down path with the PyTorch port
(ZijunDeng/pytorch-semantic-segmentation `models/gcn.py`), the learned deconvolution's
bilinear initialisation, shapes at OS 8/16/32, parameter counts, configs, and a loss that
decreases on the 8-device mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lapseg import backbones, data, models
from lapseg.decoders.gcn import GCN, Upsample
from lapseg.layers.gcn import GlobalConvolution
from lapseg.ops import basis
from tests.decoders.decoder_utils import (TINY, TinyBackbone, blocky_batch, load_config,
                                          output_dtypes, output_shapes, output_shapes_at_stride,
                                          param_count, rbg_prng)
from tests.training import loss_curve


def _torch_gcn(channels, classes, k):
    """The port's GCN head (num_levels=4) on given res2..res5, stride-2 and input sizes.

    `_GlobalConvModule` / `_BoundaryRefineModule` as in the port (biases on, integer
    padding), `F.upsample_bilinear` written as its equivalent `interpolate(align_corners=True)`.
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    class GCM(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            pad = (k - 1) // 2
            self.conv_l1 = nn.Conv2d(cin, cout, (k, 1), padding=(pad, 0))
            self.conv_l2 = nn.Conv2d(cout, cout, (1, k), padding=(0, pad))
            self.conv_r1 = nn.Conv2d(cin, cout, (1, k), padding=(0, pad))
            self.conv_r2 = nn.Conv2d(cout, cout, (k, 1), padding=(pad, 0))

        def forward(self, x):
            return self.conv_l2(self.conv_l1(x)) + self.conv_r2(self.conv_r1(x))

    class BRM(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
            self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)

        def forward(self, x):
            return x + self.conv2(F.relu(self.conv1(x)))

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.gcm = nn.ModuleList(GCM(c, classes) for c in channels)  # gcm1..gcm4: res5..res2
            self.brm = nn.ModuleList(BRM(classes) for _ in range(9))  # brm1..brm9

        def forward(self, fm4, fm3, fm2, fm1, size0, size):
            up = lambda x, s: F.interpolate(x, s, mode="bilinear", align_corners=True)  # noqa: E731
            g = [self.brm[i](self.gcm[i](fm)) for i, fm in enumerate((fm4, fm3, fm2, fm1))]
            fs = self.brm[4](up(g[0], fm3.shape[2:]) + g[1])
            fs = self.brm[5](up(fs, fm2.shape[2:]) + g[2])
            fs = self.brm[6](up(fs, fm1.shape[2:]) + g[3])
            fs = self.brm[7](up(fs, size0))
            return self.brm[8](up(fs, size))

    torch.manual_seed(0)
    head = Head().eval()
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0.0, 0.1)
    return head


def _flax_params(head):
    from tests.layers import torch_reference as ref

    params = {}
    for i, gcm in enumerate(head.gcm):
        params[f"gcn{i}"] = {"left1": ref.conv(gcm.conv_l1), "left2": ref.conv(gcm.conv_l2),
                             "right1": ref.conv(gcm.conv_r1), "right2": ref.conv(gcm.conv_r2)}
    names = ([f"br{i}" for i in range(4)] + [f"br_fuse{i}" for i in (1, 2, 3)]
             + ["br_final4", "br_final5"])
    for name, brm in zip(names, head.brm):
        params[name] = {"conv1": ref.conv(brm.conv1), "conv2": ref.conv(brm.conv2)}
    return params


@pytest.mark.parametrize("kernel_size", [7, 15])
def test_head_matches_pytorch_port(kernel_size):
    """res5..res2 of a 57 x 61 input (2x2, 4x4, 8x8, 15x16), bilinear upsampling, k = 7 and 15."""
    torch = pytest.importorskip("torch")
    from tests.layers import torch_reference as ref

    channels, classes = (40, 32, 24, 8), 5
    head = _torch_gcn(channels, classes, kernel_size)
    rng = np.random.default_rng(0)
    sizes = {"res5": (2, 2), "res4": (4, 4), "res3": (8, 8), "res2": (15, 16)}
    features = {name: rng.standard_normal((2, *hw, c)).astype(np.float32)
                for (name, hw), c in zip(sizes.items(), channels)}
    with torch.no_grad():
        want = head(*(ref.to_torch(features[n]) for n in sizes), (29, 31), (57, 61))
    model = GCN(backbones.create("resnet18", width=0.25), classes, kernel_size=kernel_size,
                upsampling="bilinear")
    decode = jax.jit(lambda v, f: model.apply(v, f, (57, 61), method=GCN.decode))
    got = decode({"params": _flax_params(head)}, features)["logits"]
    ref.assert_parity(got, ref.to_numpy(want), f"GCN (k={kernel_size}) parity vs pytorch port", 1e-4)


def test_global_convolution_keeps_size_and_rejects_even_kernels():
    x = jnp.ones((1, 5, 7, 3))
    module = GlobalConvolution(4, 15)
    y, variables = jax.eval_shape(lambda: module.init_with_output(jax.random.key(0), x))
    assert y.shape == (1, 5, 7, 4)
    assert variables["params"]["left1"]["kernel"].shape == (15, 1, 3, 4)
    assert variables["params"]["right1"]["kernel"].shape == (1, 15, 3, 4)
    with pytest.raises(ValueError, match="odd"):
        GlobalConvolution(4, 14)


def test_deconv_starts_as_bilinear_upsampling():
    """The learned x2 deconvolution (kernel 4, stride 2, pad 1) is initialised to the bilinear
    kernel: at init it equals `ops.basis.bilinear_upsample(x, 2)`, cropped to odd sizes."""
    x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
    up = Upsample(2)
    got, variables = jax.jit(lambda rng: up.init_with_output(rng, x, (9, 12)))(jax.random.key(1))
    np.testing.assert_allclose(got, basis.bilinear_upsample(x, 2)[:, :9], atol=1e-6)
    assert variables["params"]["deconv"]["kernel"].shape == (4, 4, 3, 3)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_strides(output_stride):
    assert output_shapes_at_stride("gcn", output_stride) == {"logits": (1, 45, 61, 3)}


@pytest.mark.parametrize("upsampling", ["deconv", "bilinear"])
def test_bfloat16_compute(upsampling):
    model = models.create_model("gcn", num_classes=3, dtype=jnp.bfloat16, upsampling=upsampling,
                                **TINY)
    assert output_dtypes(model, (1, 32, 32, 3)) == {"logits": jnp.bfloat16}


def test_bad_fields():
    with pytest.raises(ValueError, match="upsampling"):
        GCN(None, 3, upsampling="nearest")
    with pytest.raises(ValueError, match="needs backbone features"):
        model = models.create_model("gcn", num_classes=3, features=("res5", "fc7"), **TINY)
        output_shapes(model, (1, 32, 32, 3))


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
def test_parameter_count(backbone):
    count = param_count(models.create_model("gcn", num_classes=21, backbone=backbone))
    print(f"GCN {backbone} (k=15, learned deconvs), 21 classes: {count:,} parameters")
    # torchvision ResNet-50 / -101 without fc: 23,508,032 / 42,500,160. Decoder, C = 21, k = 15:
    # GCN 2 (k C_in C + C) + 2 (k C^2 + C) per stage, 9 BRs of 2 (9 C^2 + C), 5 deconvs of 16 C^2.
    c, k = 21, 15
    gcn = sum(2 * (k * c_in * c + c) + 2 * (k * c * c + c) for c_in in (2048, 1024, 512, 256))
    decoder = gcn + 9 * 2 * (9 * c * c + c) + 5 * 16 * c * c
    assert decoder == 2_579_556
    assert count == decoder + (23_508_032 if backbone == "resnet50" else 42_500_160)


@pytest.mark.parametrize("name, kernel_size", [("cityscapes_gcn_resnet101", 25),
                                               ("camvid_gcn_resnet50", 15)])
def test_config_builds(name, kernel_size):
    """The paper's k: 25 on Cityscapes (Sec. 4.3, 25 x 25 final map of 800 x 800 crops), 15 on
    VOC (Sec. 4.1) and, by the same rule, on CamVid (12 x 15 final map)."""
    config = load_config(name)
    assert config.model == "gcn" and config.model_kwargs.kernel_size == kernel_size
    model = models.from_config(config, data.dataset_info(config.data.dataset).num_classes)
    assert output_shapes(model, (1, 64, 64, 3))["logits"][:3] == (1, 64, 64)


def test_loss_decreases():
    model = models.create_model("gcn", num_classes=4, backbone=TinyBackbone(), kernel_size=7)
    with rbg_prng():
        curve = loss_curve(model, blocky_batch(4), model_name="gcn", loss_weights={"logits": 1.0})
    print("GCN loss curve:", np.round(curve, 3))
    assert curve[-5:].mean() < 0.8 * curve[0]
