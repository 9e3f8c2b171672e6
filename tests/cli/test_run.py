"""`lapseg train`, then `lapseg eval` / `lapseg predict` given the work dir alone (the run's
config.json), and the commands' one-line errors.

A toy model (tests/train/toy.py) trains for 2 steps on 32x32 crops of the shapes data,
so the run takes seconds; the dataset is built once per session (`data_dir`).
"""

import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from lapseg.train import config as config_lib
from tests.cli import helpers
from tests.cli.helpers import run

EVAL_KEYS = {"miou", "per_class_iou", "pixel_accuracy", "trimap_accuracy", "step", "split",
             "checkpoint", "num_images", "class_pixels"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, data_dir):
    """A work dir trained by `lapseg train` (config file + command-line overrides)."""
    root = tmp_path_factory.mktemp("run")
    (root / "toy.py").write_text(helpers.TOY_CONFIG)
    with pytest.MonkeyPatch.context() as patch:
        helpers.register_toy(patch)
        code = run("train", f"--config={root / 'toy.py'}", "--workdir", root / "w",
                   f"--config.data.data_dir={data_dir}", "--config.num_train_steps=2")
    assert code == 0
    return root / "w"


def test_train_saves_the_resolved_config(workdir):
    saved = config_lib.load(workdir / "config.json")
    assert saved.model == "toy" and saved.num_train_steps == 2  # the override is in it
    assert saved.data.crop_size == (32, 32)


def test_eval_without_config_reads_the_run_config_and_writes_json(workdir, capsys):
    assert run("eval", "--workdir", workdir) == 0
    out = capsys.readouterr().out
    result = json.loads((workdir / "eval_val.json").read_text())
    assert EVAL_KEYS <= set(result)
    assert (result["step"], result["split"], result["checkpoint"], result["num_images"]) == (
        2, "val", "latest", 200)
    assert len(result["class_pixels"]) == 5 and all(v > 0 for v in result["class_pixels"])
    assert list(result["trimap_accuracy"]) == ["1", "2", "4", "8", "16"]
    assert all(0 <= a <= 1 for a in result["trimap_accuracy"].values())
    assert len(result["per_class_iou"]) == 5  # shapes: background + 4 shapes
    assert all(v is None or 0 <= v <= 1 for v in result["per_class_iou"])
    assert f"{result['miou']:.4f}" in out and "trimap" in out


def test_eval_overrides_apply_to_the_saved_config(workdir):
    # 'toy2' builds the same network under another name: the checkpoint's identity check
    # refuses it, which shows the override reached the saved config.
    message = run("eval", f"--workdir={workdir}", "--config.model=toy2")
    assert isinstance(message, str) and "\n" not in message
    assert "model='toy'" in message and "model='toy2'" in message


def test_eval_of_a_split_slice_best_checkpoint(workdir):
    assert run("eval", f"--workdir={workdir}", "--best", "--split=validation[:4]") == 0
    result = json.loads((workdir / "eval_validation_4_.json").read_text())
    assert result["checkpoint"] == "best" and result["num_images"] == 4


def test_predict_without_config(workdir, tmp_path, capsys):
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), np.uint8)
    PIL.Image.fromarray(image).save(tmp_path / "noise.png")
    assert run("predict", "--workdir", workdir, f"--output_dir={tmp_path / 'out'}",
               tmp_path / "noise.png") == 0
    with PIL.Image.open(tmp_path / "out" / "noise_label.png") as png:
        assert png.mode == "P" and png.size == (50, 40)
        assert np.asarray(png).max() < 5
    assert (tmp_path / "out" / "noise_overlay.png").is_file()
    assert "noise_label.png" in capsys.readouterr().out


def test_predict_of_a_16_bit_png_equals_its_8_bit_version(workdir, tmp_path):
    # PIL's convert('RGB') clips 16-bit gray at 255 (a white image, wrong labels).
    gray = np.random.default_rng(1).integers(0, 256, (40, 50), np.uint8)
    PIL.Image.fromarray(gray).save(tmp_path / "eight.png")
    PIL.Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    assert run("predict", "--workdir", workdir, f"--output_dir={tmp_path / 'out'}",
               tmp_path / "eight.png", tmp_path / "sixteen.png") == 0
    for kind in ("label", "overlay"):  # the overlay shows the image the model was given
        eight, sixteen = (np.asarray(PIL.Image.open(tmp_path / "out" / f"{n}_{kind}.png"))
                          for n in ("eight", "sixteen"))
        np.testing.assert_array_equal(eight, sixteen)


# --- one-line errors -----------------------------------------------------------------------

def _one_line(message, *patterns):
    helpers.one_line(message, 'lapseg ', *patterns)


def test_eval_of_a_work_dir_without_checkpoints(tmp_path):
    config_lib.save(config_lib.base_config(), tmp_path / "w")
    _one_line(run("eval", "--workdir", tmp_path / "w"), "lapseg eval: no checkpoint in",
              "lapseg train --workdir")
    _one_line(run("eval", "--workdir", tmp_path / "nowhere"), "does not exist")


def test_eval_without_config_json_nor_config(tmp_path):
    (tmp_path / "w").mkdir()
    _one_line(run("eval", "--workdir", tmp_path / "w"), "config.json does not exist",
              "pass --config")


def test_predict_of_a_missing_image(workdir, tmp_path):
    _one_line(run("predict", "--workdir", workdir, tmp_path / "nope.png"),
              "no such image file", "nope.png")


def test_eval_of_an_unknown_split(workdir):
    _one_line(run("eval", "--workdir", workdir, "--split=nosuch"), "no split 'nosuch'")


def test_misspelt_config_field_and_missing_config_file(tmp_path):
    _one_line(run("train", "--config.data.batchsize=4", f"--workdir={tmp_path}"),
              "--config.data.batchsize: the config has no field data.batchsize", "batch_size")
    _one_line(run("train", "--config.model_kwargs.foo.width=0.5", f"--workdir={tmp_path}"),
              "--config.model_kwargs.foo.width: the config has no field model_kwargs.foo")
    _one_line(run("train", f"--config={tmp_path / 'nope.py'}"), "nope.py", "does not exist")
    assert not os.listdir(tmp_path)  # nothing trained


def test_the_installed_command_prints_one_line_without_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "lapseg.cli", "eval", "--workdir", str(tmp_path / "nowhere")],
        capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
