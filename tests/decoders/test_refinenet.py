"""RefineNet: parity of the 4-cascade with DrSleep/refinenet-pytorch (`models/resnet.py`,
`utils/layer_factory.py`: RCU, CRP, fusion), the reference's x1.2 input enlargement, shapes
at OS 8/16/32, parameter counts, configs, and a loss that decreases on the 8-device mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lapseg import backbones, data, models
from lapseg.decoders.refinenet import RefineNet, scaled_size
from lapseg.ops import resize
from tests.decoders import matlab_reference
from tests.decoders.decoder_utils import (TINY, TinyBackbone, blocky_batch, filled_variables,
                                          load_config, output_shapes,
                                          output_dtypes, output_shapes_at_stride, param_count,
                                          rbg_prng)
from tests.training import loss_curve


def _torch_refinenet(widths, in_channels, classes, crp_order):
    """DrSleep's RefineNet decoder (l1..l4 = res2..res5 given) with widths scaled down.

    Module and attribute names are the port's, so the weight mapping below mirrors its
    state dict; `crp_order='conv_pool'` swaps pool and conv as guosheng/refinenet's
    `do_gen_block_convbeforepool` does.
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    def conv3x3(i, o, bias=False):
        return nn.Conv2d(i, o, 3, padding=1, bias=bias)

    class CRPBlock(nn.Module):
        def __init__(self, planes, n_stages):
            super().__init__()
            for i in range(n_stages):
                setattr(self, f"{i + 1}_outvar_dimred", conv3x3(planes, planes))
            self.n_stages = n_stages
            self.maxpool = nn.MaxPool2d(5, 1, 2)

        def forward(self, x):
            top = x
            for i in range(self.n_stages):
                conv = getattr(self, f"{i + 1}_outvar_dimred")
                top = conv(self.maxpool(top)) if crp_order == "pool_conv" else self.maxpool(conv(top))
                x = top + x
            return x

    class RCUBlock(nn.Module):
        suffixes = ("_conv", "_conv_relu_varout_dimred")

        def __init__(self, planes, n_blocks):
            super().__init__()
            for i in range(n_blocks):
                for j, suffix in enumerate(self.suffixes):
                    setattr(self, f"{i + 1}{suffix}", conv3x3(planes, planes, bias=j == 0))
            self.n_blocks = n_blocks

        def forward(self, x):
            for i in range(self.n_blocks):
                residual = x
                for suffix in self.suffixes:
                    x = getattr(self, f"{i + 1}{suffix}")(F.relu(x))
                x = x + residual
            return x

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            w1, w2, w3, w4 = widths
            c4, c3, c2, c1 = in_channels
            self.p_ims1d2_outl1_dimred = conv3x3(c4, w1)
            self.adapt_stage1_b = RCUBlock(w1, 2)
            self.mflow_conv_g1_pool = CRPBlock(w1, 4)
            self.mflow_conv_g1_b = RCUBlock(w1, 3)
            self.mflow_conv_g1_b3_joint_varout_dimred = conv3x3(w1, w2)
            for g, (c, w, w_next) in enumerate(((c3, w2, w3), (c2, w3, w4), (c1, w4, None)), start=2):
                setattr(self, f"p_ims1d2_outl{g}_dimred", conv3x3(c, w))
                setattr(self, f"adapt_stage{g}_b", RCUBlock(w, 2))
                setattr(self, f"adapt_stage{g}_b2_joint_varout_dimred", conv3x3(w, w))
                setattr(self, f"mflow_conv_g{g}_pool", CRPBlock(w, 4))
                setattr(self, f"mflow_conv_g{g}_b", RCUBlock(w, 3))
                if w_next:
                    setattr(self, f"mflow_conv_g{g}_b3_joint_varout_dimred", conv3x3(w, w_next))
            self.clf_conv = nn.Conv2d(w4, classes, 3, padding=1, bias=True)

        def forward(self, l1, l2, l3, l4):
            x = self.p_ims1d2_outl1_dimred(l4)
            x = self.mflow_conv_g1_pool(F.relu(self.adapt_stage1_b(x)))
            x = self.mflow_conv_g1_b3_joint_varout_dimred(self.mflow_conv_g1_b(x))
            for g, low in ((2, l3), (3, l2), (4, l1)):
                x = F.interpolate(x, size=low.shape[2:], mode="bilinear", align_corners=True)
                y = getattr(self, f"adapt_stage{g}_b")(getattr(self, f"p_ims1d2_outl{g}_dimred")(low))
                x = F.relu(getattr(self, f"adapt_stage{g}_b2_joint_varout_dimred")(y) + x)
                x = getattr(self, f"mflow_conv_g{g}_b")(getattr(self, f"mflow_conv_g{g}_pool")(x))
                if g < 4:
                    x = getattr(self, f"mflow_conv_g{g}_b3_joint_varout_dimred")(x)
            return self.clf_conv(x)

    torch.manual_seed(0)
    decoder = Decoder().eval()
    with torch.no_grad():  # non-zero biases, so that a dropped bias fails the test
        for module in decoder.modules():
            if isinstance(module, nn.Conv2d) and module.bias is not None:
                module.bias.normal_()
    return decoder


def _flax_params(decoder):
    """The port's state dict -> lapseg RefineNet params."""
    from tests.layers import torch_reference as ref

    def rcus(block, prefix, n):
        return {f"{prefix}{i}": {"conv1": ref.conv(getattr(block, f"{i + 1}_conv")),
                                 "conv2": ref.conv(getattr(block, f"{i + 1}_conv_relu_varout_dimred"))}
                for i in range(n)}

    def conv(name):
        return ref.conv(getattr(decoder, name))

    params = {"classifier": ref.conv(decoder.clf_conv)}
    for level in range(4):
        g = level + 1
        block = rcus(getattr(decoder, f"adapt_stage{g}_b"), "adapt_rcu", 2)
        block |= rcus(getattr(decoder, f"mflow_conv_g{g}_b"), "output_rcu", 3)
        crp = getattr(decoder, f"mflow_conv_g{g}_pool")
        block["crp"] = {f"conv{i}": ref.conv(getattr(crp, f"{i + 1}_outvar_dimred")) for i in range(4)}
        if level:
            block["mrf"] = {"conv0": conv(f"adapt_stage{g}_b2_joint_varout_dimred"),
                            "conv1": conv(f"mflow_conv_g{g - 1}_b3_joint_varout_dimred")}
        params[f"refine{level}"] = block
        params[f"adapt{level}"] = conv(f"p_ims1d2_outl{g}_dimred")
    return params


@pytest.mark.parametrize("crp_order", ["pool_conv", "conv_pool"])
def test_cascade_matches_refinenet_pytorch(crp_order):
    """res5..res2 of a 61 x 67 input (2x3, 4x5, 8x9, 16x17) through the cascade, eval mode."""
    torch = pytest.importorskip("torch")
    from tests.layers import torch_reference as ref

    widths, channels, classes = (24, 16, 16, 16), (40, 32, 24, 8), 5
    decoder = _torch_refinenet(widths, channels, classes, crp_order)
    rng = np.random.default_rng(0)
    sizes = {"res5": (2, 3), "res4": (4, 5), "res3": (8, 9), "res2": (16, 17)}
    features = {name: rng.standard_normal((2, *hw, c)).astype(np.float32)
                for (name, hw), c in zip(sizes.items(), channels)}
    with torch.no_grad():
        coarse = decoder(*(ref.to_torch(features[n]) for n in ("res2", "res3", "res4", "res5")))
        full = torch.nn.functional.interpolate(coarse, (61, 67), mode="bilinear", align_corners=True)
    model = RefineNet(backbones.create("resnet18", width=0.25), classes, channels=widths,
                      crp_order=crp_order)
    decode = jax.jit(lambda v, f: model.apply(v, f, (61, 67), method=RefineNet.decode))
    got = decode({"params": _flax_params(decoder)}, features)
    for key, want in (("coarse_logits", coarse), ("logits", full)):
        ref.assert_parity(got[key], ref.to_numpy(want),
                          f"RefineNet ({crp_order}) {key} parity vs refinenet-pytorch", 1e-4)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_strides(output_stride):
    shapes = output_shapes_at_stride("refinenet", output_stride)
    assert shapes == {"logits": (1, 45, 61, 3), "coarse_logits": (1, 12, 16, 3)}


def test_bfloat16_compute():
    model = models.create_model("refinenet", num_classes=3, dtype=jnp.bfloat16, **TINY)
    dtypes = output_dtypes(model, (1, 32, 32, 3))
    assert dtypes == {"logits": jnp.bfloat16, "coarse_logits": jnp.bfloat16}


def test_bad_fields():
    with pytest.raises(ValueError, match="one width per feature"):
        RefineNet(None, 3, channels=(256,))
    with pytest.raises(ValueError, match="order"):
        model = models.create_model("refinenet", num_classes=3, crp_order="max", **TINY)
        output_shapes(model, (1, 32, 32, 3))


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
def test_parameter_count(backbone):
    count = param_count(models.create_model("refinenet", num_classes=21, backbone=backbone))
    print(f"RefineNet {backbone}, 21 classes: {count:,} parameters")
    # refinenet-pytorch rf101 (VOC, 21 classes): 118.0M.
    assert 99e6 < count < 100e6 if backbone == "resnet50" else 118e6 < count < 119e6


def test_scaled_size_rounds_half_away_from_zero():
    """MATLAB `round` (the reference's `round(org_img_size .* one_scale)`), not Python's."""
    assert scaled_size((5, 3), 2.5) == (13, 8) and scaled_size((45, 61), 1.2) == (54, 73)
    assert scaled_size((360, 480), 1.2) == (432, 576) and scaled_size((7, 9), 1.0) == (7, 9)


def test_input_scale_enlarges_the_image_before_the_backbone():
    """`input_scale=1.2` (guosheng/refinenet `gen_featnet_config_resnet_custom(..., 1.2, ...)`):
    the network at scale 1.2 on an image is the network at scale 1 on the image resized
    (bilinear, half-pixel) to `round(1.2 H) x round(1.2 W)`; 'coarse_logits' are a quarter of
    that, 'logits' come back at `H x W`."""
    kwargs = dict(num_classes=3, backbone=TinyBackbone(), channels=(16, 8, 8, 8), dropout_rate=0.0)
    scaled = models.create_model("refinenet", input_scale=1.2, **kwargs)
    plain = models.create_model("refinenet", **kwargs)
    images = jax.random.normal(jax.random.key(0), (2, 45, 61, 3))
    variables = filled_variables(scaled, images.shape)
    out = jax.jit(lambda v, x: scaled.apply(v, x))(variables, images)
    assert out["logits"].shape == (2, 45, 61, 3) and out["coarse_logits"].shape == (2, 14, 19, 3)
    enlarged = resize.resize_bilinear(images, (54, 73), align_corners=False)
    want = jax.jit(lambda v, x: plain.apply(v, x))(variables, enlarged)
    np.testing.assert_allclose(out["coarse_logits"], want["coarse_logits"], atol=1e-5)
    np.testing.assert_allclose(
        out["logits"], resize.resize_bilinear(want["coarse_logits"], (45, 61), align_corners=True),
        atol=1e-5)
    with pytest.raises(ValueError, match="input_scale"):
        models.create_model("refinenet", input_scale=0.0, **kwargs)


@pytest.mark.parametrize("bn_statistics", ["global", "batch"])
def test_global_bn_statistics_are_used_and_frozen_in_training(bn_statistics):
    """guosheng/refinenet trains with `bnorm_moment_type_trn='global'`
    (`main/gen_net_opts_model_type1.m`): BN normalises by the stored moments in training
    (`+dagnn/BatchNorm.m`) and the moments never change (`fix_batch_norm_resnet`). With
    'global', a training forward (mutable 'batch_stats') equals the eval forward, leaves
    batch_stats bit for bit as they were, and still gives the BN scales and offsets a
    gradient; 'batch' (the PyTorch practice) differs on all three counts but the gradient."""
    model = models.create_model("refinenet", num_classes=3, backbone=TinyBackbone(),
                                channels=(16, 8, 8, 8), dropout_rate=0.0,
                                bn_statistics=bn_statistics)
    images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    variables = filled_variables(model, images.shape)  # random running statistics
    assert jax.tree.leaves(variables["batch_stats"])

    def loss(params, train):
        out, state = model.apply({**variables, "params": params}, images, train=train,
                                 mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)})
        return jnp.mean(out["logits"] ** 2), (out, state["batch_stats"])

    (_, (train_out, stats)), grads = jax.jit(
        jax.value_and_grad(lambda p: loss(p, True), has_aux=True))(variables["params"])
    eval_out = jax.jit(lambda v: model.apply(v, images, train=False))(variables)
    same_stats = jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)),
                                           stats, variables["batch_stats"]))
    # Two compiled programs (with and without the gradient): equal up to float32 rounding.
    same_logits = bool(jnp.allclose(train_out["logits"], eval_out["logits"], rtol=1e-5, atol=1e-5))
    assert same_stats == same_logits == (bn_statistics == "global")
    for name in ("stem", "res5"):  # the backbone's BN parameters still train
        bn_grads = grads["backbone"][name]["bn"]
        assert all(float(jnp.abs(bn_grads[k]).max()) > 0 for k in ("scale", "bias"))
    with pytest.raises(ValueError, match="bn_statistics"):
        models.create_model("refinenet", num_classes=3, bn_statistics="frozen", **TINY)


def test_matlab_nearest_indices_match_imresize_nearest():
    """`resize.matlab_nearest_indices` against the numpy transcription of MATLAB's
    `imresize(A, [rows cols], 'nearest')` (`tests/decoders/matlab_reference.py`), down and up,
    every size pair up to 64 and the label maps of the RefineNet configs."""
    for in_size in range(1, 65):
        for out_size in range(1, 65):
            np.testing.assert_array_equal(resize.matlab_nearest_indices(in_size, out_size),
                                          matlab_reference.source_indices(in_size, out_size),
                                          err_msg=f"{in_size} -> {out_size}")
    rng = np.random.default_rng(0)
    # Labels at the crop size -> 'coarse_logits' at ceil(round(1.2 H) / 4) (CamVid 360 x 480 ->
    # 108 x 144, Cityscapes 600 x 600 -> 180 x 180), and an odd pair.
    for in_hw, out_hw in (((360, 480), (108, 144)), ((600, 600), (180, 180)), ((45, 61), (14, 16))):
        labels = rng.integers(0, 19, (2, *in_hw), dtype=np.uint8)
        got = np.asarray(resize.resize_nearest(labels, out_hw, matlab=True))
        want = np.stack([matlab_reference.imresize_nearest(x, out_hw) for x in labels])
        np.testing.assert_array_equal(got, want)
        # PyTorch's 'nearest-exact' (centered) agrees on these shapes; corners do not.
        np.testing.assert_array_equal(resize.resize_nearest(labels, out_hw, centered=True), want)
        assert (np.asarray(resize.resize_nearest(labels, out_hw)) != want).mean() > 0.5


def test_matlab_nearest_is_the_centre_formula_up_to_ties():
    """MATLAB's nearest takes `floor((i + 1/2) * in / out)` (0-based), the pixel under the output
    pixel's centre, except where that product is an integer (a tie between two pixels), which
    MATLAB's float64 `u = x/scale + 0.5 * (1 - 1/scale)` rounds its own way; integer factors
    and odd input sizes have no such ties. PyTorch's 'nearest-exact' (float32) likewise."""
    ties = 0
    for in_size in range(1, 97):
        for out_size in range(1, 97):
            i = np.arange(out_size)
            centre = (2 * i + 1) * in_size // (2 * out_size)
            tie = (2 * i + 1) * in_size % (2 * out_size) == 0
            matlab = matlab_reference.source_indices(in_size, out_size)
            torch_exact = resize.nearest_indices(in_size, out_size, centered=True)
            for got in (matlab, torch_exact):
                np.testing.assert_array_equal(got[~tie], centre[~tie])
                assert np.all(np.abs(got[tie] - centre[tie]) <= 1)
            if in_size % out_size == 0 or in_size % 2:
                np.testing.assert_array_equal(matlab, centre)
            ties += int((matlab != centre).sum())
    assert ties > 0  # they do occur: 6 -> 5 takes pixel 2 for output 2, the formula 3
    assert matlab_reference.source_indices(6, 5)[2] == 2 == resize.matlab_nearest_indices(6, 5)[2]


@pytest.mark.parametrize("name", ["cityscapes_refinenet_resnet101", "camvid_refinenet_resnet101"])
def test_config_builds(name):
    config = load_config(name)
    assert config.model == "refinenet" and dict(config.loss.weights) == {"coarse_logits": 1.0}
    assert config.model_kwargs.input_scale == 1.2  # the reference's enlargement
    assert config.model_kwargs.bn_statistics == "global"  # bnorm_moment_type_trn='global'
    model = models.from_config(config, data.dataset_info(config.data.dataset).num_classes)
    assert output_shapes(model, (1, 64, 64, 3))["logits"][:3] == (1, 64, 64)


def test_loss_decreases():
    """Dropout off: without BN in the decoder, 0.5 dropout on 16-channel toy features makes
    20 steps too noisy to compare; the test is about the gradient path."""
    model = models.create_model("refinenet", num_classes=4, channels=(32, 16, 16, 16),
                                dropout_rate=0.0, **TINY)
    with rbg_prng():
        curve = loss_curve(model, blocky_batch(4), model_name="refinenet",
                           loss_weights={"coarse_logits": 1.0})
    print("RefineNet loss curve:", np.round(curve, 3))
    assert curve[-5:].mean() < 0.8 * curve[0]
