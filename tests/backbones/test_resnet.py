"""ResNet: parity with a torchvision-layout PyTorch reference, sizes, counts, bf16, sharding."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lapseg import backbones

from backbone_utils import assert_feature_shapes, assert_features_match  # tests/backbones/

# torchvision's parameter counts, classifier (fc) included.
TORCHVISION_PARAMS = {
    18: 11_689_512,
    34: 21_797_672,
    50: 25_557_032,
    101: 44_549_160,
    152: 60_192_808,
}


def abstract_variables(model, shape=(1, 64, 64, 3)):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


def count(tree):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMS))
def test_param_count_equals_torchvision(depth):
    variables = abstract_variables(backbones.create(f"resnet{depth}"))
    features = 512 * (1 if depth < 50 else 4)
    total = count(variables["params"]) + features * 1000 + 1000  # + the ImageNet fc layer
    print(f"resnet{depth}: {total:,} parameters with fc, torchvision {TORCHVISION_PARAMS[depth]:,}")
    assert total == TORCHVISION_PARAMS[depth]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(depth=18),
        dict(depth=34, deep_stem=True, output_stride=8),
        dict(depth=50, output_stride=16, dilation_mode="torchvision"),
        dict(depth=50, deep_stem=True, output_stride=8, width=0.5),
        dict(depth=101, output_stride=8, multi_grid=(1, 2, 4)),
    ],
)
def test_feature_info_describes_outputs(kwargs):
    model = backbones.ResNet(**kwargs)
    height, width = 361, 481
    out = jax.eval_shape(
        lambda v: model.apply(v, jnp.zeros((1, height, width, 3)), train=False),
        abstract_variables(model),
    )
    info = model.feature_info()
    assert list(info) == ["stem", "res2", "res3", "res4", "res5"]
    assert info["res5"].stride == kwargs.get("output_stride", 32)
    for name, (stride, channels) in info.items():
        expected = (1, math.ceil(height / stride), math.ceil(width / stride), channels)
        assert out[name].shape == expected, name


def test_half_width_channels():
    info = backbones.create("resnet50", deep_stem=True, width=0.5).feature_info()
    assert [c for _, c in info.values()] == [64, 128, 256, 512, 1024]  # ICNet's PSPNet50/2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(depth=20), "depth"),
        (dict(output_stride=4), "output_stride"),
        (dict(multi_grid=(1, 2)), "multi_grid"),
        (dict(output_stride=8, multi_grid=(1, 2, 4), dilation_mode="torchvision"), "multi_grid"),
        (dict(dilation_mode="caffe"), "dilation_mode"),
        (dict(width=0.0), "width"),
    ],
)
def test_bad_configuration_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        backbones.ResNet(**kwargs)


def test_bad_input_rank_raises():
    model = backbones.create("resnet18")
    with pytest.raises(ValueError, match="rank 4"):
        model.init(jax.random.key(0), jnp.zeros((64, 64, 3)), train=False)


# ---------------------------------------------------------------- parity with PyTorch

PARITY_CASES = [
    # depth, deep_stem, output_stride, dilation_mode, multi_grid
    (18, False, 32, "deeplab", None),
    (18, True, 8, "deeplab", None),
    (50, False, 16, "torchvision", None),
    (50, True, 8, "deeplab", (1, 2, 4)),
    (101, True, 8, "deeplab", None),  # PSPNet's backbone
]


@pytest.mark.parametrize("case", PARITY_CASES, ids=lambda c: "-".join(map(str, c)))
def test_matches_torch_reference(case):
    """Random torch weights + BN statistics in torchvision's layout, converted, same features.

    The reference copies torchvision's resnet.py and semseg's deep stem/dilation
    (tests/backbones/torch_backbones.py); eval mode; max error relative to the
    feature's max magnitude.
    """
    torch = pytest.importorskip("torch")
    from torch_backbones import ResNet, randomize_, state_dict_numpy

    depth, deep_stem, output_stride, dilation_mode, multi_grid = case
    shape = (1, 65, 97, 3)
    calibration = torch.from_numpy(np.random.RandomState(1).randn(2, 3, 65, 97).astype(np.float32))
    reference = randomize_(
        ResNet(depth, deep_stem, output_stride, dilation_mode, multi_grid), calibration
    )
    images = np.random.RandomState(0).randn(*shape).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(images).permute(0, 3, 1, 2))

    model = backbones.create(
        f"resnet{depth}",
        deep_stem=deep_stem,
        output_stride=output_stride,
        dilation_mode=dilation_mode,
        multi_grid=multi_grid,
    )
    variables = backbones.load_torch_weights(
        abstract_variables(model, shape), state_dict_numpy(reference), f"resnet{depth}"
    )
    got = model.apply(variables, jnp.asarray(images), train=False)
    assert list(got) == list(expected)
    assert_features_match(got, expected, f"resnet{depth} {case[1:]}")


@pytest.mark.parametrize(
    "depth, deep_stem, output_stride, dilation_mode",
    [(18, False, 32, "deeplab"), (34, True, 8, "deeplab"), (50, False, 16, "torchvision"),
     (101, True, 8, "deeplab")],
)  # fmt: skip
def test_odd_input_sizes_match_torch(depth, deep_stem, output_stride, dilation_mode):
    """361 x 481 feature sizes equal the reference's (shapes only: torch 'meta' tensors)."""
    torch = pytest.importorskip("torch")
    from torch_backbones import ResNet

    with torch.device("meta"):
        reference = ResNet(depth, deep_stem, output_stride, dilation_mode).eval()
        expected = reference(torch.empty(1, 3, 361, 481))
    model = backbones.create(
        f"resnet{depth}", deep_stem=deep_stem, output_stride=output_stride,
        dilation_mode=dilation_mode,
    )  # fmt: skip
    assert_feature_shapes(model, abstract_variables(model), expected, (361, 481))


@pytest.mark.parametrize("depth", [50, 101])
def test_deep_stem_param_count_equals_reference(depth):
    torch = pytest.importorskip("torch")
    from torch_backbones import ResNet

    with torch.device("meta"):
        reference = ResNet(depth, deep_stem=True)
    expected = sum(p.numel() for n, p in reference.named_parameters() if not n.startswith("fc."))
    got = count(abstract_variables(backbones.create(f"resnet{depth}", deep_stem=True))["params"])
    print(f"resnet{depth} deep stem: {got:,} backbone parameters")
    assert got == expected


# ---------------------------------------------------------------- precision, sharding


def test_bfloat16_forward_close_to_float32_and_params_stay_float32(random_variables):
    """bf16 compute, f32 params: relative L2 error of every feature <= 2e-2.

    ResNet-50's depth (the error grows with depth), a quarter of its width (cheaper).
    """
    images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    f32 = backbones.create("resnet50", output_stride=16, width=0.25)
    bf16 = backbones.create("resnet50", output_stride=16, width=0.25, dtype=jnp.bfloat16)
    abstract = abstract_variables(bf16, images.shape)
    assert {leaf.dtype for leaf in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.float32)}
    variables = random_variables(bf16, images.shape)
    want, got = jax.jit(  # one compilation instead of one per op
        lambda v, x: (f32.apply(v, x, train=False), bf16.apply(v, x, train=False))
    )(variables, images)
    for name in want:
        assert got[name].dtype == jnp.bfloat16
        error = jnp.linalg.norm(got[name].astype(jnp.float32) - want[name]) / jnp.linalg.norm(
            want[name]
        )
        print(f"bf16 {name}: relative L2 error {float(error):.1e}")
        assert error <= 2e-2, name


def test_sharded_batch_matches_unsharded(random_variables):
    """8-device mesh, batch over 'data', params replicated: same features and BN statistics.

    Train mode: its forward has every op of the eval forward plus the BatchNorm batch
    reductions; equal features and running statistics mean those were reduced over
    all 8 shards, not per device.
    """
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (tests/conftest.py sets XLA_FLAGS)")
    model = backbones.create("resnet18", output_stride=16, width=0.25)
    images = jax.random.normal(jax.random.key(1), (8, 32, 32, 3))
    variables = random_variables(model, images.shape)

    def forward(variables, images):
        return model.apply(variables, images, train=True, mutable=["batch_stats"])

    want = jax.jit(forward)(variables, images)
    mesh = jax.make_mesh((8,), ("data",))  # Explicit axes (the jax 0.10 default) work as is
    with jax.set_mesh(mesh):
        sharded_images = jax.device_put(images, NamedSharding(mesh, P("data")))
        sharded_variables = jax.device_put(variables, NamedSharding(mesh, P()))
        got = jax.jit(forward)(sharded_variables, sharded_images)
    assert got[0]["res5"].sharding.spec[0] == "data"
    for got_leaf, want_leaf in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        scale = jnp.abs(want_leaf).max()
        assert jnp.abs(got_leaf - want_leaf).max() <= 1e-5 * scale
