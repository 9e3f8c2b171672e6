"""DFN (Discriminative Feature Network): parity of RRB, CAB and the whole decoder with a PyTorch
transcription of ycszen/TorchSeg (`furnace/seg_opr/seg_oprs.py`, `model/dfn/voc.dfn.R101_v1c/
network.py`) on identical weights; the border targets and the focal loss against numpy;
output shapes, the configs, and `lapseg train --config.model=dfn` on shapes."""

import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lapseg import data, losses, models
from lapseg.decoders.dfn import DFN
from lapseg.layers.dfn import ChannelAttention, RefinementResidual
from lapseg.losses.dfn import sigmoid_focal_loss
from lapseg.ops import edges
from tests.decoders.decoder_utils import (load_config, output_dtypes, output_shapes,
                                          output_shapes_at_stride, param_count)

STAGES = ("res5", "res4", "res3", "res2")


def _torch_modules():
    """TorchSeg's DFN blocks, transcribed (BN eps 1e-5; `norm_layer=nn.BatchNorm2d`)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ConvBnRelu(nn.Module):
        def __init__(self, cin, cout, k, has_relu=True):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, 1, k // 2, bias=False)
            self.bn = nn.BatchNorm2d(cout, eps=1e-5)
            self.has_relu = has_relu

        def forward(self, x):
            x = self.bn(self.conv(x))
            return F.relu(x) if self.has_relu else x

    class RefineResidual(nn.Module):
        def __init__(self, cin, cout, k=3, has_relu=False):
            super().__init__()
            self.conv_1x1 = nn.Conv2d(cin, cout, 1, bias=False)
            self.cbr = ConvBnRelu(cout, cout, k)
            self.conv_refine = nn.Conv2d(cout, cout, k, 1, k // 2, bias=False)
            self.has_relu = has_relu

        def forward(self, x):
            x = self.conv_1x1(x)
            t = self.conv_refine(self.cbr(x))
            return F.relu(t + x) if self.has_relu else t + x

    class SELayer(nn.Module):
        def __init__(self, cin, cout, reduction):
            super().__init__()
            self.fc = nn.Sequential(nn.Linear(cin, cout // reduction), nn.ReLU(),
                                    nn.Linear(cout // reduction, cout), nn.Sigmoid())
            self.out_planes = cout

        def forward(self, x):
            b, c = x.shape[:2]
            return self.fc(F.adaptive_avg_pool2d(x, 1).view(b, c)).view(b, self.out_planes, 1, 1)

    class ChannelAttentionT(nn.Module):
        def __init__(self, cin, cout, reduction):
            super().__init__()
            self.channel_attention = SELayer(cin, cout, reduction)

        def forward(self, x1, x2):
            return x1 * self.channel_attention(torch.cat([x1, x2], 1)) + x2

    class DFNHead(nn.Module):
        def __init__(self, cin, cout, scale):
            super().__init__()
            self.rrb = RefineResidual(cin, cout * 9, 3, has_relu=False)
            self.conv = nn.Conv2d(cout * 9, cout, 1)
            self.scale = scale

        def forward(self, x):
            return F.interpolate(self.conv(self.rrb(x)), scale_factor=self.scale, mode="bilinear",
                                 align_corners=True)

    class DFNDecoder(nn.Module):
        """`DFN` of network.py after the backbone (`blocks` = res2..res5), returning every head."""

        def __init__(self, stage, classes, inner, border_inner):
            super().__init__()
            self.global_context = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                                ConvBnRelu(stage[0], inner, 1))
            self.smooth_pre_rrbs = nn.ModuleList(RefineResidual(c, inner, 3, True) for c in stage)
            self.cabs = nn.ModuleList(ChannelAttentionT(inner * 2, inner, 1) for _ in stage)
            self.smooth_aft_rrbs = nn.ModuleList(RefineResidual(inner, inner, 3, True) for _ in stage)
            self.smooth_heads = nn.ModuleList(DFNHead(inner, classes, 2 ** (5 - i)) for i in range(4))
            rev = stage[::-1]
            self.border_pre_rrbs = nn.ModuleList(RefineResidual(c, border_inner, 3, True) for c in rev)
            self.border_aft_rrbs = nn.ModuleList(
                RefineResidual(border_inner, border_inner, 3, True) for _ in rev)
            self.border_heads = nn.ModuleList(DFNHead(border_inner, 1, 4) for _ in rev)

        def forward(self, blocks):
            blocks = list(blocks)
            blocks.reverse()
            global_context = F.interpolate(self.global_context(blocks[0]), size=blocks[0].size()[2:],
                                           mode="bilinear", align_corners=True)
            last_fm, pred_out = global_context, []
            for i, (fm, pre_rrb, cab, aft_rrb, head) in enumerate(zip(
                    blocks, self.smooth_pre_rrbs, self.cabs, self.smooth_aft_rrbs, self.smooth_heads)):
                fm = aft_rrb(cab(pre_rrb(fm), last_fm))
                pred_out.append(head(fm))
                if i != 3:
                    last_fm = F.interpolate(fm, scale_factor=2, mode="bilinear", align_corners=True)
            blocks.reverse()
            last_fm, border_out = None, []
            for i, (fm, pre_rrb, aft_rrb, head) in enumerate(zip(
                    blocks, self.border_pre_rrbs, self.border_aft_rrbs, self.border_heads)):
                fm = pre_rrb(fm)
                if last_fm is not None:
                    fm = F.interpolate(fm, scale_factor=2 ** i, mode="bilinear", align_corners=True)
                    last_fm = aft_rrb(last_fm + fm)
                else:
                    last_fm = fm
                border_out.append(head(last_fm))
            return pred_out, border_out

    return RefineResidual, ChannelAttentionT, DFNDecoder


def _randomized(module, seed=0):
    import torch

    from tests.layers import torch_reference as ref

    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape) / math.sqrt(max(1, p[0].numel())))
    return ref.randomize(module, seed)


def _rrb_variables(rrb):
    from tests.layers import torch_reference as ref

    cbr, stats = ref.conv_bn(rrb.cbr.conv, rrb.cbr.bn)
    params = {"conv_1x1": ref.conv(rrb.conv_1x1), "cbr": cbr, "conv_refine": ref.conv(rrb.conv_refine)}
    return params, {"cbr": stats}


def _linear(module):
    return {"kernel": module.weight.detach().numpy().T, "bias": module.bias.detach().numpy()}


def _cab_params(cab):
    fc = cab.channel_attention.fc
    return {"fc1": _linear(fc[0]), "fc2": _linear(fc[2])}


def _head_variables(head):
    from tests.layers import torch_reference as ref

    params, stats = _rrb_variables(head.rrb)
    return {"rrb": params, "conv": ref.conv(head.conv)}, {"rrb": stats}


def _decoder_variables(decoder):
    from tests.layers import torch_reference as ref

    params, stats = {}, {}

    def put(name, pair):
        params[name], stats[name] = pair

    put("global_context", ref.conv_bn(decoder.global_context[1].conv, decoder.global_context[1].bn))
    for i in range(4):
        put(f"smooth_pre{i}", _rrb_variables(decoder.smooth_pre_rrbs[i]))
        params[f"cab{i}"] = _cab_params(decoder.cabs[i])
        put(f"smooth_aft{i}", _rrb_variables(decoder.smooth_aft_rrbs[i]))
        put(f"smooth_head{i}", _head_variables(decoder.smooth_heads[i]))
        put(f"border_pre{i}", _rrb_variables(decoder.border_pre_rrbs[i]))
        if i:  # the reference never calls border_aft_rrbs[0]
            put(f"border_aft{i}", _rrb_variables(decoder.border_aft_rrbs[i]))
        put(f"border_head{i}", _head_variables(decoder.border_heads[i]))
    return {"params": params, "batch_stats": stats}


@pytest.mark.parametrize("activation", [True, False])
def test_rrb_matches_torchseg(activation):
    torch = pytest.importorskip("torch")
    from tests.layers import torch_reference as ref

    RefineResidual, _, _ = _torch_modules()
    rrb = _randomized(RefineResidual(6, 8, 3, has_relu=activation))
    x = np.random.default_rng(0).standard_normal((2, 7, 9, 6)).astype(np.float32)
    with torch.no_grad():
        want = ref.to_numpy(rrb(ref.to_torch(x)))
    params, stats = _rrb_variables(rrb)
    got = RefinementResidual(8, activation=activation).apply(
        {"params": params, "batch_stats": stats}, x, False)
    ref.assert_parity(got, want, f"RRB (relu={activation}) vs TorchSeg", 1e-5)


def test_cab_matches_torchseg():
    torch = pytest.importorskip("torch")
    from tests.layers import torch_reference as ref

    _, ChannelAttentionT, _ = _torch_modules()
    cab = _randomized(ChannelAttentionT(16, 8, 1))
    rng = np.random.default_rng(1)
    low, high = (rng.standard_normal((2, 5, 6, 8)).astype(np.float32) for _ in range(2))
    with torch.no_grad():
        want = ref.to_numpy(cab(ref.to_torch(low), ref.to_torch(high)))
    got = ChannelAttention().apply({"params": _cab_params(cab)}, low, high)
    ref.assert_parity(got, want, "CAB vs TorchSeg", 1e-5)


def test_decoder_matches_torchseg():
    """res2..res5 of a 64 x 96 input (16x24 .. 2x3), random BN statistics: every smooth and
    border head at the input size within 1e-4."""
    torch = pytest.importorskip("torch")
    from tests.layers import torch_reference as ref

    channels, classes, inner, border_inner = (40, 32, 24, 16), 5, 16, 6  # res5..res2
    _, _, DFNDecoder = _torch_modules()
    decoder = _randomized(DFNDecoder(channels, classes, inner, border_inner))
    rng = np.random.default_rng(2)
    sizes = {"res5": (2, 3), "res4": (4, 6), "res3": (8, 12), "res2": (16, 24)}
    features = {name: rng.standard_normal((2, *hw, c)).astype(np.float32)
                for (name, hw), c in zip(sizes.items(), channels)}
    with torch.no_grad():
        smooth, border = decoder([ref.to_torch(features[n]) for n in STAGES[::-1]])
    model = DFN(None, classes, channels=inner, border_channels=border_inner)
    got = jax.jit(lambda v, f: model.apply(v, f, (64, 96), method=DFN.decode))(
        _decoder_variables(decoder), features)
    for i, name in enumerate(STAGES):
        key = "logits" if name == "res2" else f"smooth_{name}"
        ref.assert_parity(got[key], ref.to_numpy(smooth[i]), f"DFN {key} vs TorchSeg", 1e-4)
        ref.assert_parity(got[f"border_{name}"], ref.to_numpy(border[3 - i]),
                          f"DFN border_{name} vs TorchSeg", 1e-4)


def _numpy_border_targets(labels, ignore_label, size):
    """Independent loops: ignore -> 0; a pixel is an edge when its right or lower neighbour
    differs; then a pixel is a target when any edge lies within `size // 2` in both axes."""
    labels = np.where(labels == ignore_label, 0, labels)
    n, h, w = labels.shape
    edge = np.zeros((n, h, w), bool)
    for b in range(n):
        for y in range(h):
            for x in range(w):
                if (x + 1 < w and labels[b, y, x] != labels[b, y, x + 1]) or (
                        y + 1 < h and labels[b, y, x] != labels[b, y + 1, x]):
                    edge[b, y, x] = True
    r, out = size // 2, np.zeros((n, h, w), np.int32)
    for b, y, x in zip(*np.nonzero(edge)):
        out[b, max(0, y - r): y + r + 1, max(0, x - r): x + r + 1] = 1
    return out


def test_border_targets_match_numpy():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.repeat(rng.integers(0, 4, (2, 5, 6)), 6, 1), 5, 2)  # 30 x 30 blocks
    labels[0, 10:14, 3:20] = 255  # an ignored band
    labels[1, 17, 22] = 3  # a one-pixel region
    for size in (7, 3):
        got = jax.jit(lambda l, s=size: edges.border_targets(l, ignore_label=255, size=s))(labels)
        np.testing.assert_array_equal(got, _numpy_border_targets(labels, 255, size))


def test_border_of_a_straight_boundary_is_canny_then_dilated():
    """Classes 1 | 2 split between columns 9 and 10: Canny keeps column 9 (OpenCV's
    `m > mag[j-1] && m >= mag[j+1]`), the 7x7 dilation columns 6..12; the image rim is no edge;
    an ignored region counts as class 0."""
    labels = np.ones((1, 12, 20), np.int32)
    labels[:, :, 10:] = 2
    got = np.asarray(edges.border_targets(labels, ignore_label=255))
    want = np.zeros_like(labels)
    want[:, :, 6:13] = 1
    np.testing.assert_array_equal(got, want)
    labels[:, 8:, :] = 255  # now rows 7 | 8 are a 1|0 and 2|0 boundary too
    got = np.asarray(edges.border_targets(labels, ignore_label=255))
    assert got[0, 4:11].all() and not got[0, :4, :6].any()


def test_focal_loss_matches_numpy():
    rng = np.random.default_rng(4)
    logits = (3 * rng.standard_normal((2, 9, 11, 1))).astype(np.float32)
    targets = rng.integers(0, 2, (2, 9, 11))
    for gamma, alpha in ((2.0, 0.25), (0.0, 0.5), (1.5, 0.9)):
        p = 1.0 / (1.0 + np.exp(-logits[..., 0].astype(np.float64)))
        want = np.mean(-alpha * targets * (1 - p) ** gamma * np.log(p)
                       - (1 - alpha) * (1 - targets) * p ** gamma * np.log(1 - p))
        got = sigmoid_focal_loss(logits, targets, gamma=gamma, alpha=alpha)
        np.testing.assert_allclose(got, want, rtol=1e-5)
    # It teaches borders: the gradient lowers the logit of a non-border, raises a border's
    # (TorchSeg's SigmoidFocalLoss raises both; lapseg/losses/dfn.py).
    grad = jax.grad(lambda x: sigmoid_focal_loss(x, jnp.array([[[0, 1]]])))(jnp.zeros((1, 1, 2, 1)))
    assert grad[0, 0, 0, 0] > 0 > grad[0, 0, 1, 0]
    # Finite far from zero.
    assert np.isfinite(float(sigmoid_focal_loss(jnp.full((1, 1, 2), 200.0), jnp.array([[[0, 1]]]))))


def test_loss_is_ce_on_smooth_heads_plus_a_tenth_of_the_border_focal_losses():
    rng = np.random.default_rng(5)
    labels = np.repeat(rng.integers(0, 3, (2, 4, 4)), 4, 1).repeat(4, 2)
    labels[0, :2] = 255
    outputs = {key: jnp.asarray(rng.standard_normal((2, 16, 16, 3)), jnp.float32)
               for key in ("logits", "smooth_res3")}
    outputs.update({f"border_{s}": jnp.asarray(rng.standard_normal((2, 16, 16, 1)), jnp.float32)
                    for s in ("res2", "res3")})
    config = ml_collections.ConfigDict({"weights": {"logits": 1.0, "smooth_res3": 0.5}})
    total, metrics = losses.for_model("dfn", config, ignore_label=255)(outputs, labels, {})
    ce = losses.masked_cross_entropy
    targets = _numpy_border_targets(labels, 255, 7)
    want = (ce(outputs["logits"], labels, ignore_label=255)
            + 0.5 * ce(outputs["smooth_res3"], labels, ignore_label=255)
            + 0.1 * sum(sigmoid_focal_loss(outputs[k], targets) for k in ("border_res2", "border_res3")))
    np.testing.assert_allclose(total, want, rtol=1e-6)
    assert set(metrics) >= {"loss/logits", "loss/border_res2", "loss/border"}
    with pytest.raises(ValueError, match="border"):
        losses.for_model("dfn", config, ignore_label=255)({"logits": outputs["logits"]}, labels, {})


@pytest.mark.parametrize("output_stride", [8, 32])
def test_outputs_at_odd_sizes_and_strides(output_stride):
    shapes = output_shapes_at_stride("dfn", output_stride)
    assert shapes["logits"] == (1, 45, 61, 3)
    assert {k for k in shapes if k.startswith("border_")} == {f"border_{s}" for s in STAGES}
    assert all(v[:3] == (1, 45, 61) for v in shapes.values())


def test_bfloat16_compute():
    model = models.create_model("dfn", num_classes=3, dtype=jnp.bfloat16,
                                **models.describe("dfn").tiny)
    dtypes = output_dtypes(model, (1, 32, 32, 3))
    assert set(dtypes.values()) == {jnp.dtype(jnp.bfloat16)} and len(dtypes) == 8


def test_parameter_count_equals_torchseg():
    """ResNet-101 DFN, 21 classes: the decoder has the transcribed TorchSeg decoder's
    parameters less the never-called `border_aft_rrbs[0]`."""
    pytest.importorskip("torch")
    _, _, DFNDecoder = _torch_modules()
    decoder = DFNDecoder((2048, 1024, 512, 256), 21, 512, 21)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    want = count(decoder) - count(decoder.border_aft_rrbs[0])
    model = models.create_model("dfn", num_classes=21)
    total = param_count(model)
    backbone = param_count(model.backbone)
    print(f"DFN ResNet-101 (deep stem), 21 classes: {total:,} parameters, decoder {total - backbone:,}")
    assert total - backbone == want


@pytest.mark.parametrize("name, classes, crop, steps", [
    ("voc_dfn_resnet101", 21, (512, 512), 120 * (10582 // 32)),
    ("cityscapes_dfn_resnet101", 19, (800, 800), 80_000)])
def test_config_builds(name, classes, crop, steps):
    config = load_config(name)
    assert config.model == "dfn" and config.model_kwargs.backbone == "resnet101"
    assert config.model_kwargs.backbone_kwargs.deep_stem
    assert config.data.crop_size == crop and config.num_train_steps == steps
    assert config.optimizer.weight_decay_mask == "kernels"  # no decay on BN or biases
    assert set(config.loss.weights) == {"logits", "smooth_res3", "smooth_res4", "smooth_res5"}
    assert config.loss.border_weight == 0.1
    num_classes = data.dataset_info(config.data.dataset).num_classes
    assert num_classes == classes
    model = models.from_config(config, num_classes)
    assert output_shapes(model, (1, 64, 64, 3))["logits"] == (1, 64, 64, classes)


def test_lapseg_train_runs_dfn_on_shapes(tmp_path):
    """`lapseg train --config.model=dfn` on shapes: 2 steps of a one-stage DFN (the loss, the
    border targets and the step through the command; the stages are tested above) on an
    eighth-width ResNet-18, 32 x 32 crops. ~40 s of CPU, most of it compiling."""
    from tests.cli.helpers import run

    config = tmp_path / "dfn_tiny.py"
    config.write_text(
        "from lapseg.train.config import base_config\n\n\n"
        "def get_config():\n"
        "    config = base_config()\n"
        "    config.model_kwargs = {'backbone': 'resnet18', 'backbone_kwargs': {'width': 0.125},\n"
        "                           'channels': 8, 'border_channels': 4, 'head_expansion': 1,\n"
        "                           'features': ('res2',)}\n"
        "    config.data.crop_size = (32, 32)\n"
        "    config.data.batch_size = 8\n"
        "    config.data.eval_size = (96, 96)\n"
        "    config.log_every_steps = 1\n"
        "    config.eval_every_steps = 1000\n"
        "    return config\n")
    code = run("train", f"--config={config}", "--config.model=dfn", "--workdir", tmp_path / "w",
               f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.num_train_steps=2")
    assert code == 0
    lines = (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()
    train = [json.loads(line) for line in lines if '"train"' in line]
    assert len(train) == 2 and all(math.isfinite(m["loss"]) for m in train)
    assert all(m["loss/border_res2"] > 0 and "loss/logits" in m for m in train)


@pytest.mark.parametrize("features", ["res5", ()])
def test_features_that_are_not_a_sequence_of_names_are_one_line(features):
    model = models.create_model("dfn", backbone="resnet18", num_classes=3,
                                backbone_kwargs={"width": 0.125}, features=features)
    with pytest.raises(ValueError, match="DFN needs backbone features deepest first"):
        model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
