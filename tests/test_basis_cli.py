"""Tests for lapseg.basis_cli (`lapseg basis`): fitting, writing, reusing the bases file.

The training labels come from a small in-memory `shapes` source (the generator's own
examples, no tfds build) patched in for `lapseg.data.load_source`; the full CamVid run is
timed by hand (see the module docstring of lapseg/basis_cli.py and the report).
"""

import grain
import ml_collections
import numpy as np
import pytest
from PIL import Image

from lapseg import basis_cli, bases_file, cli, data
from lapseg.data import shapes
from lapseg.train.config import base_config

NUM_IMAGES = 20


@pytest.fixture
def source_calls(monkeypatch):
    """Patches `lapseg.data.load_source` with 20 shapes examples; counts the calls."""
    config = shapes.Shapes.BUILDER_CONFIGS[0]
    examples = [dict(zip(("image", "label"), shapes.generate_example(config, 0, i))) for i in range(NUM_IMAGES)]
    calls = []

    def load_source(name, split, *, data_dir, source_dir=None):
        assert (name, split) == ("shapes", "train")
        calls.append(name)
        return grain.MapDataset.source(examples)

    monkeypatch.setattr(data, "load_source", load_source)
    return calls


CONFIG = """
from lapseg.train.config import base_config

def get_config():
    config = base_config()
    config.model, config.data.dataset = "lrr", "shapes"
    config.basis.num_batches = 1  # 8 images x 100 crops
    return config
"""


def test_main_writes_bases_and_picture_then_reuses_them(source_calls, tmp_path, capsys):
    (tmp_path / "config.py").write_text(CONFIG)
    argv = ["basis", "--config", str(tmp_path / "config.py"), "--workdir", str(tmp_path)]
    assert cli.main(argv) == 0  # LRR on shapes (5 classes), K = 10
    path = tmp_path / "basis.npz"
    bases = bases_file.load(path, "lrr_bases", num_classes=5)
    assert bases.shape == (32, 32, 10, 5) and np.all(np.isfinite(bases))
    # The reference's scale: basis k is (n lambda_k)^(1/4) v_k with |v_k| = 1, decreasing in k.
    norms = np.linalg.norm(bases.reshape(-1, 10, 5), axis=0)
    assert np.all(norms[0] > norms[-1]) and np.all(norms > 1.0)
    picture = np.asarray(Image.open(tmp_path / "basis.png"))
    tile = 32 * 2
    assert picture.shape == (4 + 5 * (tile + 4), 110 + 10 * (tile + 4), 3)
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 100  # colour-coded tiles, not blank
    assert "written" in capsys.readouterr().out

    assert cli.main(argv) == 0
    assert len(source_calls) == 1  # the second run reused the file
    assert "exists" in capsys.readouterr().out


def _config(model, **model_kwargs):
    config = base_config()
    config.model = model
    config.model_kwargs = ml_collections.ConfigDict(model_kwargs)
    return config


def test_ensure_bases_fits_dupsampling(source_calls, tmp_path):
    config = _config("dupsampling", ratio=8, dim=16)
    config.basis.path = str(tmp_path / "sub" / "w.npz")
    assert basis_cli.ensure_bases(config, tmp_path / "unused") == config.basis.path
    w = bases_file.load(config.basis.path, "dupsampling_w", num_classes=5)
    mean = bases_file.load(config.basis.path, "dupsampling_mean", num_classes=5)
    assert w.shape == (16, 8 * 8 * 5) and mean.shape == (8 * 8 * 5,)
    np.testing.assert_allclose(w @ w.T, np.eye(16), atol=1e-5)
    assert int(np.load(config.basis.path)["ratio"]) == 8


def test_existing_file_of_another_config_is_an_error(source_calls, tmp_path):
    bases_file.save(tmp_path / "basis.npz", num_classes=5, lrr_bases=np.zeros((32, 32, 4, 5)))
    with pytest.raises(ValueError, match="delete it to refit"):
        basis_cli.ensure_bases(_config("lrr", num_bases=10), tmp_path)
    assert basis_cli.ensure_bases(_config("lrr", num_bases=4), tmp_path) == str(tmp_path / "basis.npz")
    assert not source_calls


def test_label_batches_group_sizes_crop_and_limit(monkeypatch):
    sizes = [(96, 96), (70, 83)] * 6 + [(96, 96)]
    examples = [{"label": np.full(size, i % 5, np.uint8)} for i, size in enumerate(sizes)]
    monkeypatch.setattr(data, "load_source", lambda *a, **k: grain.MapDataset.source(examples))
    config = _config("dupsampling", ratio=8, dim=4)
    config.basis.num_batches = 0  # all
    batches = list(basis_cli.label_batches(config, multiple=8))
    assert sorted(b.shape for b in batches) == [(6, 64, 80), (7, 96, 96)]
    assert all(b.dtype == np.int32 for b in batches)
    config.basis.num_batches = 1
    assert len(list(basis_cli.label_batches(config))) == 1


def test_needs_bases():
    assert basis_cli.needs_bases(_config("lrr"))
    assert basis_cli.needs_bases(_config("dupsampling", ratio=8, dim=4))
    assert not basis_cli.needs_bases(_config("lrr", basis="bilinear"))
    assert not basis_cli.needs_bases(_config("fcn8s"))
    with pytest.raises(ValueError, match="needs no fitted bases"):
        basis_cli.ensure_bases(_config("fcn8s"), "/nonexistent")
