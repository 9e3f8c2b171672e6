"""lapseg: semantic-segmentation decoders that recover full resolution, in JAX/Flax.

    import jax, jax.numpy as jnp, numpy as np
    import lapseg
    images = jnp.zeros((2, 96, 128, 3))                       # f32 [N, H, W, 3], normalised
    model = lapseg.create_model('lrr', backbone='resnet18', num_classes=5)
    variables = model.init(jax.random.key(0), images, train=False)    # no files needed
    labels = np.random.default_rng(0).integers(0, 5, (4, 96, 128))   # any training labels
    fitted = lapseg.bases.fit(variables, [labels], num_classes=5)    # LRR's PCA bases
    variables = lapseg.bases.attach(variables, fitted)                # pure: new variables
    out = model.apply(variables, images, train=False)  # {'logits': [N, H, W, C], 'level_32', ...}

Subpackages load on first use (`lapseg.bases`, `lapseg.losses`, `lapseg.metrics`, ...), so
`import lapseg` (and `lapseg --help`) loads no JAX. docs/architecture.md maps the layers.
"""

import importlib

__version__ = "0.1.0"  # the one place it is written: pyproject.toml reads it from here

_SUBMODULES = ("backbones", "bases", "data", "decoders", "export", "infer", "layers", "losses",
               "metrics", "models", "ops", "train", "visualize")


def __getattr__(name):
    """`lapseg.<submodule>` imported on first use."""
    if name in _SUBMODULES:
        return importlib.import_module(f"lapseg.{name}")
    raise AttributeError(f"module 'lapseg' has no attribute {name!r}")


def create_model(name, **kwargs):
    """Builds a registered model by name; see `lapseg.models.create_model`."""
    from lapseg import models  # pylint: disable=import-outside-toplevel

    return models.create_model(name, **kwargs)
