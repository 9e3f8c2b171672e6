"""Optimiser of the papers' recipes: SGD + momentum, poly LR with warm-up, per-group LR
multipliers (new head x10, as in PSPNet / DUpsampling), weight decay without BN and bias.

`lr(t) = base_lr * (1 - t / T) ** power` after a linear warm-up over `warmup_steps`
(semseg `poly_learning_rate`, power 0.9). Parameters whose path starts with one of
`config.backbone_prefixes` (the pretrained encoder) use the base LR, every other
parameter (the newly initialised decoder) `head_lr_multiplier * lr`.
"""

import jax
import optax
from flax import traverse_util


def learning_rate_schedule(config, total_steps: int) -> optax.Schedule:
    """Linear warm-up to `config.learning_rate`, then polynomial decay to 0 at `total_steps`."""
    warmup = int(config.get("warmup_steps", 0))
    poly = optax.polynomial_schedule(
        init_value=config.learning_rate, end_value=0.0,
        power=config.get("lr_power", 0.9), transition_steps=max(total_steps - warmup, 1))
    if warmup == 0:
        return poly
    ramp = optax.linear_schedule(0.0, config.learning_rate, warmup)
    return optax.join_schedules([ramp, poly], [warmup])


def _path_labels(params, backbone_prefixes):
    """'backbone' or 'head' for every leaf, by the first path component."""
    flat = traverse_util.flatten_dict(params)
    labels = {k: "backbone" if k[0] in backbone_prefixes else "head" for k in flat}
    return traverse_util.unflatten_dict(labels)


def weight_decay_mask(params):
    """True for kernels (ndim > 1); False for biases, BatchNorm scales/offsets, temperatures."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(config, total_steps: int) -> optax.GradientTransformation:
    """SGD-momentum with decoupled-from-BN L2 weight decay and per-group learning rates.

    Weight decay is added to the gradient before momentum (as torch.optim.SGD does),
    masked to kernels only.
    """
    schedule = learning_rate_schedule(config, total_steps)

    def sgd(multiplier):
        return optax.chain(
            optax.add_decayed_weights(config.weight_decay, mask=weight_decay_mask),
            optax.sgd(lambda step: multiplier * schedule(step), momentum=config.momentum,
                      nesterov=config.get("nesterov", False)),
        )

    prefixes = tuple(config.get("backbone_prefixes", ("backbone",)))
    head_multiplier = config.get("head_lr_multiplier", 1.0)
    return optax.multi_transform(
        {"backbone": sgd(1.0), "head": sgd(head_multiplier)},
        lambda p: _path_labels(p, prefixes),
    )
