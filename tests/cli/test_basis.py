"""`lapseg basis`: fits a config's label-fitted constants through `lapseg.train.fitted.ensure`.

The command's own behaviour (config and work dir, messages, exit codes) is checked with
a stand-in `ensure`; one test runs the real fit of LRR bases on the shapes labels. The
fitting itself is tested with `lapseg.train.fitted` and `lapseg.bases`.
"""

import os
import pathlib
import sys
import types

import numpy as np
import PIL.Image
import pytest

from lapseg.train import config as config_lib
from tests.cli.helpers import run

LRR_CONFIG = """
from lapseg.train.config import base_config

def get_config():
    config = base_config()
    config.model = "lrr"
    config.basis.num_batches = 1
    return config
"""


@pytest.fixture
def ensure_calls(monkeypatch):
    """Replaces `lapseg.train.fitted` by a stand-in whose `ensure` writes an empty file
    (models 'lrr' and 'dupsampling') or returns None; records `(model, workdir)` per call."""
    calls = []

    def ensure(config, workdir):
        calls.append((config.model, str(workdir)))
        if config.model not in ("lrr", "dupsampling"):
            return None
        path = config.basis.path or os.path.join(workdir, "basis.npz")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            np.savez(path)
        return path

    fitted = types.ModuleType("lapseg.train.fitted")
    fitted.ensure = ensure
    monkeypatch.setitem(sys.modules, "lapseg.train.fitted", fitted)
    import lapseg.train  # pylint: disable=import-outside-toplevel
    monkeypatch.setattr(lapseg.train, "fitted", fitted, raising=False)
    return calls


def test_model_without_fitted_constants_has_nothing_to_do(ensure_calls, tmp_path, capsys):
    fcn8s = pathlib.Path(__file__).resolve().parents[2] / "configs" / "shapes_fcn8s.py"
    assert run("basis", f"--config={fcn8s}", "--workdir", tmp_path) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert ensure_calls == [("fcn8s", str(tmp_path))]


def test_writes_then_reuses_the_file(ensure_calls, tmp_path, capsys):
    (tmp_path / "lrr.py").write_text(LRR_CONFIG)
    argv = ["basis", f"--config={tmp_path / 'lrr.py'}", f"--workdir={tmp_path / 'w'}"]
    assert run(*argv) == 0
    assert f"{tmp_path / 'w' / 'basis.npz'} written" in capsys.readouterr().out
    assert run(*argv) == 0
    assert "exists (delete it to refit)" in capsys.readouterr().out


def test_config_path_override_and_saved_config(ensure_calls, tmp_path, capsys):
    config = config_lib.base_config()
    config.model = "dupsampling"
    config_lib.save(config, tmp_path / "w")  # the run's config.json is the default config
    assert run("basis", f"--workdir={tmp_path / 'w'}",
               f"--config.basis.path={tmp_path / 'elsewhere' / 'b.npz'}") == 0
    assert ensure_calls[-1][0] == "dupsampling"
    assert (tmp_path / "elsewhere" / "b.npz").is_file()
    assert "b.npz written" in capsys.readouterr().out


def test_fits_lrr_bases_and_their_picture(tmp_path, data_dir, capsys):
    (tmp_path / "lrr.py").write_text(LRR_CONFIG)
    argv = ["basis", f"--config={tmp_path / 'lrr.py'}", f"--workdir={tmp_path}",
            f"--config.data.data_dir={data_dir}"]
    assert run(*argv) == 0
    assert "written" in capsys.readouterr().out
    assert (tmp_path / "basis.npz").is_file()
    with PIL.Image.open(tmp_path / "basis.png") as picture:
        assert picture.size[0] > picture.size[1] > 0  # 5 class rows, 10 basis columns
    assert run(*argv) == 0
    assert "exists" in capsys.readouterr().out
