"""Serving artifacts: a model with its variables baked in, as a serialized `jax.export`
function (StableHLO) of normalised images to logits, for any batch size.

    exported = export_model(model, variables, (360, 480))   # jax.export.Exported
    save(exported, 'camvid.jaxexport')                       # written atomically
    logits = load('camvid.jaxexport').call(images)  # f32 [n, 360, 480, 3] -> [n, 360, 480, C]

Loading needs JAX alone (no lapseg, flax or checkpoint):
`jax.export.deserialize(open(path, 'rb').read()).call(images)`. The function is
`lapseg.infer.model_logits`: the eval-mode `'logits'`, the input zero-padded to a multiple
of 32 inside and cropped back, so `argmax(logits, -1)` is what `Predictor` gives for one
scale, no flip and no tiling, with images padded to multiples of 32 (`bucket=32`). The
images are normalised by the caller, in the training config's `data.normalize` convention
(`lapseg.ops.normalize`); the height and width are fixed at export, the batch size is
symbolic.

Only the variables the logits depend on are baked in (`used_leaves`): an auxiliary head's
weights (PSPNet's, DSRL's), DSRL's SISR branch and DFN's Border Network feed outputs the
artifact does not return, and are left out (a tracer-level liveness pass over the traced
function; XLA would skip their computation anyway, but a closed-over array stays in the
serialized module whether used or not).
"""

import os
import secrets

import jax
import jax.numpy as jnp

from lapseg import infer

# The platforms an artifact is lowered for by default: one file for CPU, NVIDIA GPU and TPU
# hosts (the tests run it on CPU only).
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")


def input_spec(size) -> jax.ShapeDtypeStruct:
    """The exported input: f32 `[n, H, W, 3]`, `n` a symbolic batch size, `size = (H, W)`."""
    height, width = check_size(size)
    return jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"n, {height}, {width}, 3"),
                                jnp.float32)


def check_size(size) -> tuple[int, int]:
    """`(H, W)` as two positive ints, else ValueError."""
    try:
        height, width = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (H, W), got {size!r}") from None
    if height < 1 or width < 1 or (height, width) != tuple(size):
        raise ValueError(f"size must be two positive integers (H, W), got {tuple(size)}")
    return height, width


def used_leaves(fn, variables, *args) -> list[bool]:
    """For each leaf of `variables` (in `jax.tree.leaves` order), whether `fn(variables,
    *args)`'s outputs depend on it.

    A backward liveness pass over `jax.make_jaxpr(fn)`: an equation is live when one of its
    outputs is used or it has effects, and then all its inputs are used (a call such as
    `pjit` or `custom_jvp_call` is taken whole: conservative, never wrong).
    """
    leaves, treedef = jax.tree.flatten(variables)
    closed = jax.make_jaxpr(lambda flat, *rest: fn(treedef.unflatten(flat), *rest))(leaves, *args)
    jaxpr = closed.jaxpr
    live = {v for v in jaxpr.outvars if not hasattr(v, "val")}  # Literals carry a .val
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(v in live for v in eqn.outvars):
            live.update(v for v in eqn.invars if not hasattr(v, "val"))
    return [v in live for v in jaxpr.invars[:len(leaves)]]


def export_model(model, variables, size, *, platforms=DEFAULT_PLATFORMS,
                 size_multiple: int = 32) -> jax.export.Exported:
    """`model`'s eval-mode logits as a `jax.export.Exported`, `variables` as constants.

    Args:
      model: a lapseg model (returns a dict with `'logits'` at input resolution).
      variables: its variables (`{'params': ..., 'batch_stats': ..., ...}`), closed over:
        the artifact holds those the logits use (`used_leaves`), and the exported function
        takes images only.
      size: `(H, W)` of the images the artifact takes.
      platforms: the platforms lowered for (`jax.export`'s names: 'cpu', 'cuda', 'rocm',
        'tpu'); None: the default backend's only.
      size_multiple: as `lapseg.infer.model_logits` (the model sees `[n, H', W', 3]`, H' and
        W' the next multiples, zero-padded bottom/right).

    Returns:
      The `Exported` of `images -> logits`: f32 `[n, H, W, 3]` normalised images, any `n >= 1`,
      -> f32 `[n, H, W, C]`. `.serialize()` gives its bytes, `.call(images)` runs it.
    """
    spec = input_spec(size)

    def logits(variables, images):
        return infer.model_logits(model, variables, images, size_multiple=size_multiple)

    leaves, treedef = jax.tree.flatten(variables)
    used = used_leaves(logits, variables, jax.ShapeDtypeStruct((1, *spec.shape[1:]), spec.dtype))
    # An unused leaf becomes zeros made inside the function: a broadcast, not a constant.
    def logits_fn(images):
        flat = [leaf if keep else jnp.zeros(jnp.shape(leaf), jnp.result_type(leaf))
                for leaf, keep in zip(leaves, used)]
        return logits(treedef.unflatten(flat), images)

    platforms = None if platforms is None else tuple(platforms)
    return jax.export.export(jax.jit(logits_fn), platforms=platforms)(spec)


def save(exported: jax.export.Exported, path) -> int:
    """Writes `exported.serialize()` to `path` atomically (a temporary file in the same
    directory, then renamed over `path`), creating the directory; returns the byte count."""
    data = exported.serialize()
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # A fresh name opened with 'x' (permissions from the umask, as for `open(path, 'wb')`).
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return len(data)


def load(path) -> jax.export.Exported:
    """The `Exported` that `save` wrote to `path` (`.call(images)` runs it)."""
    with open(path, "rb") as file:
        return jax.export.deserialize(bytearray(file.read()))
