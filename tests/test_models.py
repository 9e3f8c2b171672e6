"""Every registered model builds and inits with no files (pure modules, default constants),
at an odd input size, with `'logits'` at input resolution."""

import os

import jax
import jax.numpy as jnp
import pytest

from lapseg import bases, models

SIZE = (97, 129)
NUM_CLASSES = 5
# Small widths so that every model inits in seconds on a CPU; each factory keeps its own
# backbone defaults (output stride, deep stem) for everything else.
SMALL = {"backbone": "resnet18", "backbone_kwargs": {"width": 0.125}}
KWARGS = {
    "fcn32s": SMALL, "fcn16s": SMALL, "fcn8s": SMALL, "fcn8s_atonce": SMALL,
    "lrr": SMALL, "gcn": SMALL, "refinenet": {**SMALL, "channels": (16, 8, 8, 8)},
    "pspnet": {**SMALL, "channels": 16, "aux_channels": 8},
    "dupsampling": {**SMALL, "dim": 16},
    "icnet": {"backbone": "resnet50", "backbone_kwargs": {"width": 0.125, "deep_stem": True,
                                                          "output_stride": 8},
              "branch_channels": 8, "channels": 16},
    "dsrl": {**SMALL, "base": "fcn8s", "sisr_channels": 8, "espcn_channels": (8, 8)},
}


def test_every_registered_model_is_covered():
    assert set(models.names()) == set(KWARGS)


@pytest.mark.parametrize("name", sorted(KWARGS))
def test_inits_with_no_files_at_an_odd_size(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing to find: the model must not need a file
    model = models.create_model(name, num_classes=NUM_CLASSES, **KWARGS[name])
    images = jnp.zeros((1, *SIZE, 3))
    variables = jax.jit(lambda key, x: model.init(key, x, train=False))(jax.random.key(0), images)
    out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
    assert out["logits"].shape == (1, *SIZE, NUM_CLASSES)
    assert bool(jnp.isfinite(out["logits"]).all())
    assert os.listdir(tmp_path) == []
    needs = set(bases.required(variables))
    assert needs == {"lrr": {"lrr_bases"},
                     "dupsampling": {"dupsampling_w", "dupsampling_mean"}}.get(name, set())
