"""`lapseg export`: the artifact of a tiny trained FCN-8s run gives `lapseg predict`'s labels,
at any batch size; its one-line errors.

The run is the session's `tiny_workdir` (tests/cli/conftest.py): the FCN-8s shapes job at
an eighth of the width, trained for 40 steps, so that equal labels mean something.
"""

import os

import jax
import numpy as np
import PIL.Image
import pytest

from lapseg.ops.normalize import normalize
from lapseg.train import config as config_lib
from tests.cli import helpers
from tests.cli.helpers import run

def test_the_artifact_gives_the_labels_of_predict(tiny_workdir, tmp_path, capsys):
    output = tmp_path / "out" / "fcn8s.jaxexport"
    assert run("export", "--workdir", tiny_workdir, "--output", output) == 0
    summary = capsys.readouterr().out.strip()
    # shapes' image size (96 x 96) by default; the summary names the normalisation.
    assert summary.startswith(f"{output}: f32[n,96,96,3] -> f32[n,96,96,5], ")
    assert " MB (fcn8s, step 40 latest; inputs normalised 'torch'; cpu,cuda,tpu)" in summary
    assert "\n" not in summary and os.listdir(output.parent) == ["fcn8s.jaxexport"]

    images = helpers.shapes_images(3, (96, 96))
    (tmp_path / "images").mkdir()
    for i, image in enumerate(images):
        PIL.Image.fromarray(image).save(tmp_path / "images" / f"im{i}.png")
    # --bucket=32: predict pads as the artifact does (96 is a multiple of 32: not at all).
    assert run("predict", "--workdir", tiny_workdir, "--bucket=32",
               f"--output_dir={tmp_path / 'pred'}", tmp_path / "images") == 0
    predicted = []
    for i in range(3):
        with PIL.Image.open(tmp_path / "pred" / f"im{i}_label.png") as png:
            predicted.append(np.asarray(png))

    with open(output, "rb") as file:
        exported = jax.export.deserialize(file.read())
    logits = np.asarray(exported.call(normalize(images, "torch")))  # one call, batch 3
    assert logits.shape == (3, 96, 96, 5)
    labels = logits.argmax(-1)
    assert len(np.unique(labels)) > 1  # not all background: the comparison means something
    # Two compilations of one computation may differ in the last bits: only near-ties
    # (top-2 margin under 1e-4) could flip, and there must be next to none.
    top2 = np.sort(logits, -1)[..., -2:]
    decided = top2[..., 1] - top2[..., 0] > 1e-4
    assert decided.mean() > 0.99
    np.testing.assert_array_equal(labels[decided], np.stack(predicted)[decided])
    # And one image alone (batch 1) gives the same logits.
    np.testing.assert_allclose(exported.call(normalize(images[1:2], "torch")), logits[1:2],
                               rtol=1e-4, atol=1e-4)


def test_size_platforms_and_best(tiny_workdir, tmp_path, capsys):
    output = tmp_path / "m.bin"
    assert run("export", f"--workdir={tiny_workdir}", f"--output={output}", "--size=40,56",
               "--platforms=cpu", "--best") == 0
    assert "f32[n,40,56,3] -> f32[n,40,56,5]" in capsys.readouterr().out
    exported = jax.export.deserialize(output.read_bytes())
    assert exported.platforms == ("cpu",)
    images = normalize(helpers.shapes_images(2, (40, 56), seed=1), "torch")
    assert exported.call(images).shape == (2, 40, 56, 5)


# --- one-line errors -----------------------------------------------------------------------

def _one_line(message, *patterns):
    helpers.one_line(message, 'lapseg export: ', *patterns)


def test_a_missing_work_dir_or_checkpoint(tmp_path):
    out = f"--output={tmp_path / 'm.bin'}"
    _one_line(run("export", "--workdir", tmp_path / "nowhere", out), "does not exist")
    config_lib.save(config_lib.base_config(), tmp_path / "w")
    _one_line(run("export", "--workdir", tmp_path / "w", out), "no checkpoint in",
              "lapseg train --workdir")
    _one_line(run("export", "--workdir", tmp_path / "w", out, "--best"), "no best checkpoint")
    assert not (tmp_path / "m.bin").exists()


@pytest.mark.parametrize("size", ["0,32", "96", "96,96,3", "a,b", "-8,8"])
def test_a_bad_size(tmp_path, size):
    config_lib.save(config_lib.base_config(), tmp_path / "w")
    _one_line(run("export", "--workdir", tmp_path / "w", f"--output={tmp_path / 'm'}",
                  f"--size={size}"), "--size takes 'H,W'", size)


def test_no_output_an_unknown_platform_and_stray_arguments(tmp_path):
    config_lib.save(config_lib.base_config(), tmp_path / "w")
    workdir = f"--workdir={tmp_path / 'w'}"
    _one_line(run("export", workdir), "no --output")
    _one_line(run("export", workdir, "--output=m", "--platforms=cpu,gpu"), "unknown gpu", "cuda")
    _one_line(run("export", workdir, "--output=m", "extra"), "unexpected arguments extra")
