"""`lapseg.infer.Predictor.from_workdir`: `lapseg predict`'s labels from Python, for a path,
a PIL image or an array, with probabilities and an overlay; and one padding rule, so that
`lapseg predict`, `lapseg eval` and the training loop's evaluation label an image alike.

The run is the session's `tiny_workdir` (tests/cli/conftest.py), a 40-step FCN-8s shapes job.
"""

import subprocess
import sys

import jax
import numpy as np
import PIL.Image
import pytest

from lapseg import data, infer, visualize
from lapseg.cli import common
from lapseg.cli import eval as eval_cli
from lapseg.cli import predict as predict_cli
from lapseg.ops import sizes
from lapseg.train import config as config_lib
from tests.cli import helpers
from tests.cli.helpers import run


def test_importing_infer_loads_no_input_pipeline():
    code = ("import lapseg.infer, sys; "
            "assert 'grain' not in sys.modules and 'tensorflow_datasets' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def _predicted(tmp_path, workdir, image, *flags):
    """`lapseg predict --workdir W [flags] image.png`: the label PNG's ids and the overlay."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(image).save(tmp_path / "image.png")
    assert run("predict", "--workdir", workdir, f"--output_dir={tmp_path / 'out'}", *flags,
               tmp_path / "image.png") == 0
    with PIL.Image.open(tmp_path / "out" / "image_label.png") as png:
        labels = np.asarray(png)
    with PIL.Image.open(tmp_path / "out" / "image_overlay.png") as png:
        return labels, np.asarray(png)


def test_from_workdir_gives_the_labels_of_predict(tiny_workdir, tmp_path):
    image = helpers.shapes_images(1, (70, 100), seed=3)[0]  # padded to 96 x 128
    want, want_overlay = _predicted(tmp_path, tiny_workdir, image)
    assert len(np.unique(want)) > 1  # not all background: the comparison means something

    predictor = infer.Predictor.from_workdir(tiny_workdir)
    assert predictor.step == 40 and predictor.info.name == "shapes" and predictor.bucket == 0
    np.testing.assert_array_equal(predictor(tmp_path / "image.png"), want)  # a path
    np.testing.assert_array_equal(predictor(str(tmp_path / "image.png")), want)
    with PIL.Image.open(tmp_path / "image.png") as opened:
        np.testing.assert_array_equal(predictor(opened), want)  # a PIL image
    out = predictor(image, probabilities=True, overlay=True)  # an array
    assert sorted(out) == ["labels", "overlay", "probabilities"]
    np.testing.assert_array_equal(out["labels"], want)
    assert out["labels"].dtype == np.int32
    assert out["probabilities"].shape == (70, 100, 5) and out["probabilities"].dtype == np.float32
    np.testing.assert_allclose(out["probabilities"].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out["probabilities"].argmax(-1), want)
    info = predictor.info
    scale = visualize.display_scale(70, 100)  # predict's overlay: enlarged, the same colours
    np.testing.assert_array_equal(want_overlay, visualize.overlay(
        *visualize.enlarge(image, want, scale=scale), info.palette,
        ignore_label=info.ignore_label, background=0))
    np.testing.assert_array_equal(out["overlay"], visualize.overlay(
        image, want, info.palette, ignore_label=info.ignore_label, background=0))
    only = predictor(image, overlay=True, alpha=1.0)
    assert sorted(only) == ["labels", "overlay"]
    colors = visualize.colorize(want, info.palette, ignore_label=info.ignore_label)
    background = want == 0  # shapes' class 0 is 'background': the photo shows through
    np.testing.assert_array_equal(only["overlay"][background], image[background])
    np.testing.assert_array_equal(only["overlay"][~background], colors[~background])


def test_from_workdir_best_and_options(tiny_workdir):
    predictor = infer.Predictor.from_workdir(tiny_workdir, best=True, bucket=32, flip=True)
    assert predictor.bucket == 32 and predictor.step is not None
    labels = predictor(helpers.shapes_images(1, (40, 56))[0])
    assert labels.shape == (40, 56)


def test_bad_inputs_are_one_line(tiny_workdir, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json does not exist"):
        infer.Predictor.from_workdir(tmp_path)
    predictor = infer.Predictor.from_workdir(tiny_workdir)
    with pytest.raises(ValueError, match=r"uint8 RGB \[H, W, 3\], a PIL image or a path"):
        predictor(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="cannot read image .*missing.png"):
        predictor(tmp_path / "missing.png")
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="cannot read image .*cut.png"):
        predictor(tmp_path / "cut.png")
    bare = infer.Predictor(*infer.restore_model(config_lib.load(tiny_workdir), tiny_workdir)[:2],
                           normalization="torch")
    with pytest.raises(ValueError, match="overlay=True needs the dataset's palette"):
        bare(np.zeros((8, 8, 3), np.uint8), overlay=True)


def _options(module, workdir):
    """The inference options `lapseg <module>` runs with when given only --workdir."""
    argv = [f"lapseg {module.__name__.rsplit('.', 1)[-1]}", f"--workdir={workdir}"]
    flag_values, _ = common.parse_run_flags(argv, module.__doc__,
                                            define=getattr(module, "_define", None))
    return common.inference_options(argv[0], flag_values)


def test_predict_gives_the_labels_of_eval(tiny_workdir, tmp_path):
    # One default for both commands: the training loop's evaluation sizes.
    assert _options(predict_cli, tiny_workdir) == _options(eval_cli, tiny_workdir)
    assert _options(predict_cli, tiny_workdir)["bucket"] == 0
    # The eval loop's batch of the first validation images (96 x 96, padded to
    # `eval_padded_size`, 96 x 96: the old default bucket of predict, 128, padded further).
    config = config_lib.load(tiny_workdir)
    assert sizes.eval_padded_size(96, 96) == (96, 96)
    batch = next(iter(data.create_loader(config.data, "validation", data_dir=config.data.data_dir,
                                         seed=0, train=False)))
    source = data.load_source("shapes", "validation", data_dir=config.data.data_dir)
    model, variables, _, _ = infer.restore_model(config, tiny_workdir)
    logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(
        variables, batch["image"])["logits"])
    for index in range(2):
        labels, _ = _predicted(tmp_path / str(index), tiny_workdir, source[index]["image"])
        assert len(np.unique(labels)) > 1
        # Two compilations (batch 8, batch 1) may differ in the last bits: only near-ties
        # (top-2 margin under 1e-4) could flip, and there must be next to none.
        top2 = np.sort(logits[index], -1)[..., -2:]
        decided = top2[..., 1] - top2[..., 0] > 1e-4
        assert decided.mean() > 0.99
        np.testing.assert_array_equal(labels[decided], logits[index].argmax(-1)[decided])
