"""Every registered model builds and inits with no files (pure modules, default constants),
at an odd input size, with `'logits'` at input resolution, from the tiny configuration of
its registry entry (`lapseg.models.Model.tiny`); its training outputs and its loss are the
ones the entry describes."""

import copy
import fnmatch
import os

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from lapseg import bases, losses, models

SIZE = (97, 129)
NUM_CLASSES = 5
NAMES = models.names()


def _tiny(name):
    return copy.deepcopy(models.describe(name).tiny)


def test_every_registered_model_has_a_tiny_configuration():
    assert NAMES, "no registered model is installed"
    for name in NAMES:
        assert _tiny(name), f"{name}: its registry entry has no tiny configuration"


@pytest.mark.parametrize("name", NAMES)
def test_inits_with_no_files_at_an_odd_size(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing to find: the model must not need a file
    model = models.create_model(name, num_classes=NUM_CLASSES, **_tiny(name))
    images = jnp.zeros((1, *SIZE, 3))
    variables = jax.jit(lambda key, x: model.init(key, x, train=False))(jax.random.key(0), images)
    out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
    assert out["logits"].shape == (1, *SIZE, NUM_CLASSES)
    assert bool(jnp.isfinite(out["logits"]).all())
    assert os.listdir(tmp_path) == []
    needs = set(bases.required(variables))
    assert needs == {"lrr": {"lrr_bases"},
                     "dupsampling": {"dupsampling_w", "dupsampling_mean"}}.get(name, set())

    # Training returns the outputs its entry names (traced only, nothing runs).
    def train(v, x):
        return model.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)},
                           mutable=["batch_stats"])[0]

    keys = set(jax.eval_shape(train, variables, images))
    patterns = models.train_outputs(name, base=_tiny(name).get("base"))
    assert "logits" in keys and patterns[0] == "logits"
    assert all(any(fnmatch.fnmatchcase(k, p) for p in patterns) for k in keys), (keys, patterns)


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_model_has_a_loss(name):
    config = ml_collections.ConfigDict({"weights": {"logits": 1.0}})
    assert callable(losses.for_model(name, config, ignore_label=255))
    model = models.describe(name)
    if model.loss is not None:  # its own loss (otherwise deep supervision over the outputs)
        assert callable(model.loss_factory())


def test_an_entry_may_be_a_bare_factory(monkeypatch):
    monkeypatch.setitem(models._MODELS, "toy", "tests.train.toy:toy")  # pylint: disable=protected-access
    assert models.describe("toy") == models.Model("tests.train.toy:toy")
    assert models.create_model("toy", num_classes=3).num_classes == 3
    assert models.describe("no such model", strict=False) is None
    with pytest.raises(ValueError, match="unknown model 'no such model'; registered: "):
        models.describe("no such model")
