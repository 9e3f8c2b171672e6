"""Label-fitted constants through `lapseg train`: LRR and DUpsampling runs fit their PCA
constants from the training labels before step 0, and train with those values, not the
modules' defaults (the constants are frozen, so the checkpoint holds the step-0 values)."""

import numpy as np
import pytest

from lapseg import bases, cli, infer
from lapseg.ops import basis as basis_ops
from lapseg.ops import dupsample
from lapseg.ops import pca
from lapseg.train import config as config_lib

CONFIG = '''
from lapseg.train.config import shapes_job


def get_config():
    config = shapes_job("fcn8s")
    config.model = "{model}"
    config.model_kwargs = {kwargs}
    config.data.crop_size = (64, 64)
    config.data.batch_size = 8
    config.data.eval_size = (96, 96)
    config.num_train_steps = 2
    config.log_every_steps = 1
    config.eval_every_steps = 2
    config.checkpoint_every_steps = 2
    config.basis.num_batches = 2
    return config
'''
SMALL = {"backbone": "resnet18", "backbone_kwargs": {"width": 0.125}}
CASES = {
    "lrr": {**SMALL, "num_bases": 4},
    "dupsampling": {**SMALL, "ratio": 32, "dim": 16},
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.mark.parametrize("model", sorted(CASES))
def test_train_fits_and_uses_the_pca_constants(model, data_dir, tmp_path):
    (tmp_path / "config.py").write_text(CONFIG.format(model=model, kwargs=CASES[model]))
    workdir = tmp_path / "run"
    argv = ["train", f"--config={tmp_path / 'config.py'}", f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}"]
    assert cli.main(argv) == 0
    fitted = bases.load(workdir / "basis.npz", num_classes=5)
    config = config_lib.load(workdir)
    _, variables, _, step = infer.restore_model(config, str(workdir))
    assert step == 2
    constants = variables["constants"]
    if model == "lrr":
        assert (workdir / "basis.png").is_file()
        want = np.asarray(pca.resize_bases(fitted["lrr_bases"], 8))
        default = basis_ops.cosine_bases(8, 4, 5)
        got = np.asarray(constants["lrr_bases"])
    else:
        want, default = fitted["dupsampling_w"], dupsample.cosine_matrix(32, 5, 16)
        got = np.asarray(constants["dupsampling_w"])
        np.testing.assert_array_equal(constants["dupsampling_mean"], fitted["dupsampling_mean"])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.linalg.norm(got - default) > 0.1 * np.linalg.norm(default)  # not the default
    # A second run in the same work dir resumes: the constants come from the checkpoint.
    assert cli.main(argv + ["--config.num_train_steps=3"]) == 0
    _, resumed, _, _ = infer.restore_model(config_lib.load(workdir), str(workdir))
    np.testing.assert_array_equal(resumed["constants"][next(iter(constants))],
                                  constants[next(iter(constants))])
