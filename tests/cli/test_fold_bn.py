"""`--fold_bn` of `lapseg predict`, `lapseg eval` and `lapseg export`: folding BatchNorm
(the default) gives the labels, the mIoU and the logits of the model as trained, to float
rounding, and the exported artifact holds the folded variables, without `batch_stats`.

The run is the session's `tiny_workdir` (tests/cli/conftest.py): FCN-8s on a ResNet-18,
whose every conv of the backbone has a BatchNorm, trained for 40 steps (so its running
statistics are no longer the identity's).
"""

import json
import shutil

import jax
import numpy as np
import PIL.Image

from lapseg import export as export_lib
from lapseg import infer
from lapseg.ops.normalize import normalize
from tests.cli import helpers
from tests.cli.helpers import run


def _decided(logits, margin=1e-4):
    """Pixels whose top-2 logits differ by more than `margin`: rounding cannot flip them."""
    top2 = np.sort(logits, -1)[..., -2:]
    return top2[..., 1] - top2[..., 0] > margin


def test_predict_gives_the_same_labels_folded(tiny_workdir, tmp_path):
    images = helpers.shapes_images(2, (96, 96), seed=3)
    (tmp_path / "images").mkdir()
    for i, image in enumerate(images):
        PIL.Image.fromarray(image).save(tmp_path / "images" / f"im{i}.png")
    labels = {}
    for fold_bn in ("true", "false"):
        out = tmp_path / fold_bn
        assert run("predict", "--workdir", tiny_workdir, f"--fold_bn={fold_bn}",
                   f"--output_dir={out}", tmp_path / "images") == 0
        labels[fold_bn] = []
        for i in range(2):
            with PIL.Image.open(out / f"im{i}_label.png") as png:
                labels[fold_bn].append(np.asarray(png))
    folded = infer.Predictor.from_workdir(tiny_workdir)
    unfolded = infer.Predictor.from_workdir(tiny_workdir, fold_bn=False)
    assert "batch_stats" not in folded.variables and "batch_stats" in unfolded.variables
    for i, image in enumerate(images):
        got = folded(image, probabilities=True)["probabilities"]
        want = unfolded(image, probabilities=True)["probabilities"]
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert len(np.unique(labels["false"][i])) > 1  # the comparison means something
        decided = _decided(np.log(want))
        assert decided.mean() > 0.99
        np.testing.assert_array_equal(labels["true"][i][decided], labels["false"][i][decided])


def test_eval_gives_the_same_miou_folded(tiny_workdir, tmp_path):
    workdir = tmp_path / "w"  # eval writes into the work dir: a copy of the shared one
    shutil.copytree(tiny_workdir, workdir)
    results = {}
    for fold_bn in ("true", "false"):
        assert run("eval", "--workdir", workdir, f"--fold_bn={fold_bn}", "--split=val[:8]") == 0
        results[fold_bn] = json.loads(next(workdir.glob("eval_val*.json")).read_text())
    assert results["false"]["miou"] > 0
    for key in ("miou", "pixel_accuracy"):
        assert abs(results["true"][key] - results["false"][key]) < 1e-3, key


def test_export_carries_the_folded_variables(tiny_workdir, tmp_path, monkeypatch, capsys):
    exported_variables = {}
    export_model = export_lib.export_model

    def recording(model, variables, size, **kwargs):
        exported_variables[len(exported_variables)] = variables
        return export_model(model, variables, size, **kwargs)

    monkeypatch.setattr(export_lib, "export_model", recording)
    paths = [tmp_path / "folded.jaxexport", tmp_path / "unfolded.jaxexport"]
    assert run("export", "--workdir", tiny_workdir, "--output", paths[0],
               "--platforms=cpu") == 0
    assert run("export", "--workdir", tiny_workdir, "--output", paths[1], "--fold_bn=false",
               "--platforms=cpu") == 0
    capsys.readouterr()
    folded, unfolded = exported_variables[0], exported_variables[1]
    assert "batch_stats" not in folded and "batch_stats" in unfolded
    assert len(jax.tree.leaves(folded)) < len(jax.tree.leaves(unfolded))
    assert paths[0].stat().st_size < paths[1].stat().st_size

    images = normalize(helpers.shapes_images(2, (96, 96), seed=4), "torch")
    got, want = (np.asarray(export_lib.load(path).call(images)) for path in paths)
    np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, np.abs(want).max()))
    decided = _decided(want)
    assert decided.mean() > 0.99
    np.testing.assert_array_equal(got.argmax(-1)[decided], want.argmax(-1)[decided])
