"""lapseg: semantic-segmentation decoders that recover full resolution, in JAX/Flax.

    import lapseg
    model = lapseg.create_model('lrr', backbone='resnet50', num_classes=21)
    variables = model.init(rng, images, train=False)   # images f32 [N, H, W, 3]
    out = model.apply(variables, images, train=False)  # {'logits': [N, H, W, C], ...}
"""

from lapseg import ops

__version__ = "0.1.0"


def create_model(name, **kwargs):
    """Builds a registered model by name; see `lapseg.models.create_model`."""
    from lapseg import models  # pylint: disable=import-outside-toplevel

    return models.create_model(name, **kwargs)
