"""`lapseg.export`: the deserialized artifact reproduces the live model at any batch size,
with the variables baked in; the file is written atomically."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lapseg import export, infer, models
from tests.train import toy

SMALL = {"backbone": "resnet18", "backbone_kwargs": {"width": 0.125}}
NUM_CLASSES = 5


def _images(batch, size, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, *size, 3)), jnp.float32)


@pytest.fixture(scope="module")
def fcn8s():
    """A small FCN-8s (ResNet-18, BatchNorm statistics made non-trivial) and its variables."""
    model = models.create_model("fcn8s", num_classes=NUM_CLASSES, **SMALL)
    variables = jax.jit(lambda key, x: model.init(key, x, train=False))(
        jax.random.key(0), jnp.zeros((1, 64, 96, 3)))
    # Running statistics other than (0, 1), so that dropping them would show.
    stats = jax.tree.map(lambda x: x + 0.1 * jax.random.uniform(jax.random.key(1), x.shape),
                         variables["batch_stats"])
    return model, {**variables, "batch_stats": stats}


def test_the_serialized_artifact_matches_model_apply_at_batch_1_and_3(fcn8s, tmp_path):
    model, variables = fcn8s
    exported = export.export_model(model, variables, (64, 96))
    path = tmp_path / "fcn8s.jaxexport"
    assert export.save(exported, path) == os.path.getsize(path) > 0
    assert os.listdir(tmp_path) == ["fcn8s.jaxexport"]  # no temporary file left behind
    # JAX alone reads it: the bytes of the file, no lapseg.
    with open(path, "rb") as file:
        loaded = jax.export.deserialize(file.read())
    assert str(loaded.in_avals[0].shape) == "(n, 64, 96, 3)"
    assert loaded.in_avals[0].dtype == jnp.float32
    assert str(loaded.out_avals[0].shape) == f"(n, 64, 96, {NUM_CLASSES})"
    assert set(loaded.platforms) == {"cpu", "cuda", "tpu"}
    apply = jax.jit(lambda x: model.apply(variables, x, train=False)["logits"])
    for batch in (1, 3):
        images = _images(batch, (64, 96), seed=batch)
        logits = loaded.call(images)
        assert logits.shape == (batch, 64, 96, NUM_CLASSES) and logits.dtype == jnp.float32
        np.testing.assert_allclose(logits, apply(images), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(export.load(path).call(images), logits)


def test_odd_sizes_are_padded_as_inference_pads_them():
    # 37 x 50 is no multiple of 32: the model sees it zero-padded to 64 x 64, as in
    # lapseg.infer (and so `lapseg predict --bucket=32`), cropped back.
    model = toy.toy(num_classes=3, width=4)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    exported = jax.export.deserialize(
        export.export_model(model, variables, (37, 50), platforms=None).serialize())
    images = _images(2, (37, 50))
    expected = jax.jit(lambda x: infer.model_logits(model, variables, x))(images)
    np.testing.assert_allclose(exported.call(images), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="37"):  # H and W are fixed
        exported.call(_images(2, (40, 50)))


@pytest.mark.parametrize("size", [(0, 32), (32,), (32, 32, 3), ("a", 3), 32, (-1, 8)])
def test_bad_sizes_raise(size):
    with pytest.raises(ValueError, match="size"):
        export.input_spec(size)


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.jaxexport"
    path.write_bytes(b"old")

    class Broken:
        def serialize(self):
            return bytearray(b"new")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        export.save(Broken(), path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.jaxexport"]


@pytest.mark.parametrize("name,unused", [("pspnet", ("aux_conv", "aux_classifier")),
                                         ("dsrl", ("sisr", "ftm", "aux_conv", "aux_classifier"))])
def test_heads_the_logits_do_not_use_are_left_out(name, unused):
    """The variables the logits do not use are found: PSPNet's auxiliary head, DSRL's SISR
    branch and feature-transform module (and its PSPNet's auxiliary head). The auxiliary
    head, which eval mode computes (its output `'aux'`), is no longer baked into the
    artifact: smaller by about its weights' bytes (the SISR branch, which eval mode does not
    run, never was). The logits are those of the model with every variable."""
    kwargs = {"base": "pspnet"} if name == "dsrl" else {}
    model = models.create_model(name, num_classes=NUM_CLASSES, **SMALL, **kwargs)
    images = _images(2, (64, 64))
    variables = jax.jit(lambda key: model.init(key, images, train=False))(jax.random.key(0))
    # No constant-valued array (zero biases, unit variances), which serializes as one value.
    variables = jax.tree.map(lambda x: x + 0.01 * jax.random.uniform(jax.random.key(1), x.shape),
                             variables)

    def logits(v, x):
        return infer.model_logits(model, v, x)

    used = export.used_leaves(logits, variables, images)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(variables)[0]]
    dropped = {p for p, keep in zip(paths, used) if not keep}
    assert dropped == {p for p in paths if any(f"['{u}']" in p for u in unused)}
    assert all("['backbone']" not in p for p in dropped)
    aux_bytes = sum(leaf.nbytes for path, leaf in zip(paths, jax.tree.leaves(variables))
                    if "['aux_" in path)
    pruned = export.export_model(model, variables, (64, 64), platforms=None)
    whole = jax.export.export(jax.jit(lambda x: logits(variables, x)))(export.input_spec((64, 64)))
    saved = len(whole.serialize()) - len(pruned.serialize())
    assert 0.9 * aux_bytes < saved < 1.1 * aux_bytes, (saved, aux_bytes)
    want = whole.call(images)  # float rounding aside, the jitted model's logits
    np.testing.assert_allclose(pruned.call(images), want, rtol=1e-5,
                               atol=1e-5 * float(jnp.abs(want).max()))
