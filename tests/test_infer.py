"""Inference (`lapseg.infer`): prediction, `restore_model`, and the numbers of the
`lapseg predict` / `lapseg eval` commands.

Tiling, flips and scales are checked against direct computations: model.apply on the
whole image, numpy averages of tile outputs at hand-listed tile positions, and views
built with explicit flips and resizes. `restore_model` and the commands run on a toy
model trained for a few steps on the embedded shapes data (the commands' flags and errors:
tests/cli/).
"""

import importlib.util
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from lapseg import cli, infer, metrics, models, visualize
from lapseg import data as data_lib
from lapseg.ops import resize
from lapseg.ops.normalize import normalize
from lapseg.train import checkpoint as checkpoint_lib
from lapseg.train import loop, optim
from tests.train import toy


def _toy_variables(model, shape, seed=0):
    variables = model.init(jax.random.key(seed), jnp.zeros(shape), train=False)
    # Non-trivial BatchNorm statistics, so that eval mode is not the identity.
    stats = jax.tree.map(lambda x: x + 0.3, variables["batch_stats"])
    return {**variables, "batch_stats": stats}


def _images(shape, seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


def test_sliding_window_with_one_tile_equals_whole_image():
    model = toy.toy(num_classes=5, width=6)
    images = _images((2, 40, 56, 3))
    variables = _toy_variables(model, images.shape)
    whole = jax.jit(infer.make_predict_fn(model))(variables, images)
    tiled = jax.jit(infer.make_predict_fn(model, tile_size=(40, 56)))(variables, images)
    direct = jax.nn.softmax(model.apply(variables, images, train=False)["logits"], -1)
    np.testing.assert_allclose(whole, direct, atol=1e-6)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def _tile_mean(tiles):
    """A 'model' whose logits are the tile's mean colour everywhere: sees the whole tile."""
    return jnp.broadcast_to(tiles.mean((1, 2), keepdims=True), tiles.shape)


@pytest.mark.parametrize("image_size, tile_size, starts", [
    # stride ceil(6 * 2/3) = 4 rows, ceil(8 * 2/3) = 6 columns; last tiles flush with the edge.
    ((10, 13), (6, 8), [(0, 0), (0, 5), (4, 0), (4, 5)]),
    ((14, 8), (6, 8), [(0, 0), (4, 0), (8, 0)]),
    # Image smaller than the tile: zero-padded to one tile.
    ((5, 7), (6, 8), [(0, 0)]),
])
def test_sliding_window_averages_overlapping_tiles(image_size, tile_size, starts):
    images = np.asarray(_images((2, *image_size, 3)))
    stride = tuple(int(np.ceil(t * 2 / 3)) for t in tile_size)
    got = infer.sliding_window_logits(_tile_mean, jnp.asarray(images), tile_size, stride)

    padded_size = np.maximum(image_size, tile_size)
    padded = np.zeros((2, *padded_size, 3), np.float32)
    padded[:, :image_size[0], :image_size[1]] = images
    total = np.zeros_like(padded)
    count = np.zeros(padded_size)
    for y, x in starts:
        window = (slice(None), slice(y, y + tile_size[0]), slice(x, x + tile_size[1]))
        total[window] += padded[window].mean((1, 2), keepdims=True)
        count[window[1:]] += 1
    want = (total / count[None, :, :, None])[:, :image_size[0], :image_size[1]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


class _MirrorSymmetric(nn.Module):
    """Convolutions with left-right symmetric kernels: flipping the input flips the output."""

    num_classes: int = 4

    @nn.compact
    def __call__(self, images, train=False):
        x = images
        for features in (8, self.num_classes):
            kernel = self.param(f"kernel_{features}", nn.initializers.lecun_normal(),
                                (3, 3, x.shape[-1], features))
            kernel = (kernel + kernel[:, ::-1]) / 2
            x = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            x = x + self.param(f"bias_{features}", nn.initializers.normal(1.0), (features,))
            x = nn.relu(x) if features != self.num_classes else x
        return {"logits": x}


def test_flip_tta_of_a_mirror_symmetric_model_equals_plain_prediction():
    images = _images((2, 32, 64, 3))  # multiples of 32: no padding, which would break symmetry
    model = _MirrorSymmetric()
    variables = model.init(jax.random.key(0), images)
    plain = jax.jit(infer.make_predict_fn(model))(variables, images)
    flipped = jax.jit(infer.make_predict_fn(model, flip=True))(variables, images)
    np.testing.assert_allclose(flipped, plain, atol=1e-5)
    # The flip is real: a model without the symmetry gets a different average.
    asymmetric = toy.toy(num_classes=4)
    variables = _toy_variables(asymmetric, images.shape)
    plain = infer.make_predict_fn(asymmetric)(variables, images)
    flipped = infer.make_predict_fn(asymmetric, flip=True)(variables, images)
    assert np.abs(np.asarray(flipped) - np.asarray(plain)).max() > 1e-3


def test_multi_scale_flip_averages_the_views_probabilities():
    model = toy.toy(num_classes=3, width=4)
    images = _images((1, 64, 96, 3))
    variables = _toy_variables(model, images.shape)
    got = jax.jit(infer.make_predict_fn(model, scales=(0.5, 1.0), flip=True))(variables, images)

    def probs(x):
        return jax.nn.softmax(model.apply(variables, x, train=False)["logits"], -1)

    small = resize.resize_bilinear(images, (32, 48), align_corners=False)
    views = [probs(images), probs(images[:, :, ::-1])[:, :, ::-1]]
    for mirrored in (False, True):
        logits = model.apply(variables, small[:, :, ::-1] if mirrored else small,
                             train=False)["logits"]
        view = jax.nn.softmax(resize.resize_bilinear(logits, (64, 96), align_corners=False), -1)
        views.append(view[:, :, ::-1] if mirrored else view)
    np.testing.assert_allclose(got, sum(views) / 4, atol=1e-6)


def test_predictor_pads_to_buckets_and_compiles_once_per_bucket():
    model = toy.toy(num_classes=5, width=6)
    variables = _toy_variables(model, (1, 32, 32, 3))
    traces = []

    class Counting(nn.Module):
        @nn.compact
        def __call__(self, images, train=False):
            traces.append(images.shape)
            return toy.ToySegmenter(num_classes=5, width=6, name="toy")(images, train)

    counting = Counting()
    predictor = infer.Predictor(counting, {"params": {"toy": variables["params"]},
                                           "batch_stats": {"toy": variables["batch_stats"]}},
                                normalization="torch", bucket=64)
    rng = np.random.default_rng(0)
    for size in [(37, 50), (60, 41), (64, 64)]:
        image = rng.integers(0, 256, (*size, 3), np.uint8)
        pred = predictor(image)
        # Zero padding after normalisation is the toy's own conv padding: exact crop.
        logits = model.apply(variables, normalize(image, "torch")[None], train=False)
        np.testing.assert_array_equal(pred, np.argmax(logits["logits"][0], -1))
    assert traces == [(1, 64, 64, 3)]
    predictor(rng.integers(0, 256, (65, 20, 3), np.uint8))
    assert traces == [(1, 64, 64, 3), (1, 128, 64, 3)]


def test_make_predict_fn_rejects_bad_options():
    model = toy.toy(num_classes=3)
    with pytest.raises(ValueError, match="scales must be positive"):
        infer.make_predict_fn(model, scales=(0.0,))
    with pytest.raises(ValueError, match="tile_overlap"):
        infer.make_predict_fn(model, tile_size=(8, 8), tile_overlap=1.0)
    with pytest.raises(ValueError, match=r"images must be \[N, H, W, 3\]"):
        infer.make_predict_fn(model)({}, jnp.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="uint8 RGB"):
        infer.Predictor(model, {}, normalization="torch")(np.zeros((8, 8, 3), np.float32))


# --- the commands, on a toy model trained for a few steps -------------------------------


def _register_toy(patch):
    patch.setitem(models._MODELS, "toy", "tests.train.toy:toy")  # pylint: disable=protected-access


@pytest.fixture(autouse=True)
def toy_model(monkeypatch):
    _register_toy(monkeypatch)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config file, config, work dir, the loop's final evaluation) of a 3-step toy run."""
    root = tmp_path_factory.mktemp("infer")
    config_path = root / "toy_config.py"
    config_path.write_text(toy.config_file(data_dir=str(root / "tfds")))
    spec = importlib.util.spec_from_file_location("toy_config", config_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    with pytest.MonkeyPatch.context() as patch:
        _register_toy(patch)
        result = loop.train_and_evaluate(config, str(root / "workdir"))
    return str(config_path), config, str(root / "workdir"), result


def test_restore_model_reads_the_variables_without_an_optimiser(trained, monkeypatch):
    _, config, workdir, _ = trained

    def no_optimiser(*args, **kwargs):
        raise AssertionError("restore_model built an optimiser")

    monkeypatch.setattr(optim, "make_optimizer", no_optimiser)
    model, variables, info, step = infer.restore_model(config, workdir)
    assert step == 3 and info.num_classes == 5
    assert set(variables) == {"params", "batch_stats"}
    saved = checkpoint_lib.Checkpointer(f"{workdir}/checkpoints").read(step)
    want = {"params": saved["params"], **saved["model_state"]}
    assert jax.tree.structure(variables) == jax.tree.structure(want)
    for got, expected in zip(jax.tree.leaves(variables), jax.tree.leaves(want)):
        assert isinstance(got, jax.Array)
        np.testing.assert_array_equal(got, expected)
    images = jnp.zeros((1, 32, 32, 3))
    assert model.apply(variables, images, train=False)["logits"].shape == (1, 32, 32, 5)


def test_restore_model_refuses_a_checkpoint_of_another_model(trained, tmp_path):
    _, config, workdir, _ = trained
    other = config.copy_and_resolve_references()
    other.model = "toy2"  # the same network under another name
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(models._MODELS, "toy2", "tests.train.toy:toy")  # pylint: disable=protected-access
        with pytest.raises(checkpoint_lib.CheckpointError, match="model='toy'.*model='toy2'"):
            infer.restore_model(other, workdir)
    with pytest.raises(checkpoint_lib.CheckpointError, match="no checkpoint in"):
        infer.restore_model(config, tmp_path)


def test_eval_reports_the_loops_miou_and_trimap_accuracy(trained, capsys):
    config_path, config, workdir, trained_result = trained
    assert cli.main(["eval", f"--config={config_path}", f"--workdir={workdir}"]) == 0
    out = capsys.readouterr().out
    miou = float(re.search(r"^mIoU\s+([0-9.]+)$", out, re.M).group(1))
    assert abs(miou - trained_result["miou"]) < 2e-4

    # Trimap accuracy and mIoU of the whole split, from a direct batched forward pass.
    model, variables, info, _ = infer.restore_model(config, workdir)
    source = data_lib.load_source("shapes", "validation", data_dir=config.data.data_dir)
    images = np.stack([normalize(source[i]["image"], "torch") for i in range(len(source))])
    labels = np.stack([source[i]["label"] for i in range(len(source))])
    pred = np.argmax(model.apply(variables, images, train=False)["logits"], -1)
    confusion = metrics.confusion_matrix(pred, labels, info.num_classes, info.ignore_label)
    assert abs(miou - metrics.summarize(confusion)["miou"]) < 2e-4
    want = metrics.trimap_accuracy(pred, labels, ignore_label=info.ignore_label)
    for width, accuracy in zip(metrics.TRIMAP_WIDTHS, want):
        printed = re.search(rf"^{width}\s+([0-9.]+)\s+\d+$", out, re.M)
        assert abs(float(printed.group(1)) - accuracy) < 2e-4, out


def test_predict_writes_palette_pngs_of_the_argmax_and_overlays(trained, tmp_path):
    config_path, config, workdir, _ = trained
    source = data_lib.load_source("shapes", "validation", data_dir=config.data.data_dir)
    rng = np.random.default_rng(0)
    inputs = {"val0": source[0]["image"], "noise": rng.integers(0, 256, (50, 70, 3), np.uint8)}
    paths = []
    for stem, image in inputs.items():
        paths.append(str(tmp_path / f"{stem}.png"))
        PIL.Image.fromarray(image).save(paths[-1])
    out_dir = tmp_path / "out"
    assert cli.main(["predict", f"--config={config_path}", f"--workdir={workdir}", "--best",
                     f"--output_dir={out_dir}", *paths]) == 0

    model, variables, info, _ = infer.restore_model(config, workdir, best=True)
    for stem, image in inputs.items():
        logits = model.apply(variables, normalize(image, "torch")[None], train=False)
        want = np.argmax(logits["logits"][0], -1)
        with PIL.Image.open(out_dir / f"{stem}_label.png") as png:
            assert png.mode == "P"
            np.testing.assert_array_equal(np.asarray(png), want)
            colors = np.array(png.getpalette()[:3 * info.num_classes]).reshape(-1, 3)
            np.testing.assert_array_equal(colors, info.palette[:-1])
        scale = visualize.display_scale(*want.shape)
        big_image, big_want = visualize.enlarge(image, want, scale=scale)
        with PIL.Image.open(out_dir / f"{stem}_overlay.png") as png:
            assert png.mode == "RGB" and png.size == (image.shape[1] * scale,
                                                      image.shape[0] * scale)
            assert max(png.size) >= 512
            np.testing.assert_array_equal(
                np.asarray(png), visualize.overlay(big_image, big_want, info.palette,
                                                   ignore_label=info.ignore_label,
                                                   background=0))  # shapes' 'background'
        with PIL.Image.open(out_dir / f"{stem}_panels.png") as png:
            np.testing.assert_array_equal(np.asarray(png), visualize.side_by_side(
                image, want, info.palette, class_names=info.class_names,
                ignore_label=info.ignore_label))
