"""`lapseg.backbones.create`: names, fields, clear errors."""

import jax.numpy as jnp
import pytest

from lapseg import backbones


def test_names():
    assert backbones.names() == [
        "resnet101", "resnet152", "resnet18", "resnet34", "resnet50", "vgg16",
    ]  # fmt: skip


def test_create_passes_fields():
    model = backbones.create("resnet101", deep_stem=True, output_stride=8, dtype=jnp.bfloat16)
    assert (model.depth, model.deep_stem, model.output_stride) == (101, True, 8)
    assert model.dtype == jnp.bfloat16
    assert backbones.create("vgg16", pad100=True).pad100


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="unknown backbone 'resnet9'.*resnet18"):
        backbones.create("resnet9")


@pytest.mark.parametrize("name, kwargs", [("vgg16", {"output_stride": 8}),
                                          ("resnet50", {"pad100": True}),
                                          ("resnet50", {"depth": 18})])  # fmt: skip
def test_unknown_field_raises(name, kwargs):
    with pytest.raises(ValueError, match=f"no field.*{next(iter(kwargs))}"):
        backbones.create(name, **kwargs)
