"""Optimiser of the papers' recipes: SGD + momentum, poly LR with warm-up, per-parameter-group
learning-rate multipliers, weight decay on kernels only or on every parameter.

`lr(t) = base_lr * (1 - t / T) ** power` after a linear warm-up over `warmup_steps`
(semseg `poly_learning_rate`, power 0.9).

Parameter groups (`config.lr_multipliers`): an ordered sequence of `(pattern, multiplier)`.
A parameter's path is its keys joined by '/' (`lapseg.ops.tree.flatten_with_names`), e.g.
`backbone/layer1_0/conv1/conv/kernel` or `coefficients_res5/conv/bias`; it takes the
multiplier of the FIRST pattern that matches (`fnmatch`: `*` matches across '/'), and 1
when none does. Examples:

- a new head at 10x on a pretrained backbone (PSPNet, DUpsampling):
  `(('backbone/*', 1.0), ('*', 10.0))`;
- biases at twice their layer's rate (FCN, LRR): `('coefficients_res5/*/bias', 0.2)` before
  `('coefficients_res5/*', 0.1)`.

`resolve_multipliers(params, rules)` gives every parameter's multiplier; `describe_groups`
summarises them (logged at the start of training).

Weight decay (`config.optimizer.weight_decay_mask`, `WEIGHT_DECAY_MASKS`): 'kernels' (the
default) decays the arrays with ndim > 1 only; 'all' decays every parameter, BatchNorm
scales/offsets, conv biases and scalars too, as the PyTorch references do by handing all
parameters to `torch.optim.SGD(..., weight_decay=wd)` and the MatConvNet one by giving
every parameter `weightDecay` 1:

- hszhao/semseg `tool/train.py`: `params_list.append(dict(params=module.parameters(), ...))`
  for `modules_ori` and `modules_new`, then `torch.optim.SGD(params_list, ...,
  weight_decay=args.weight_decay)`;
- Dootmaan/DSRL `train.py`: `torch.optim.SGD(train_params, ..., weight_decay=
  args.weight_decay, ...)`, `train_params` from `modeling/deeplab.py`
  `get_1x_lr_params` / `get_10x_lr_params`, which yield the parameters of every `nn.Conv2d`,
  `SynchronizedBatchNorm2d` and `nn.BatchNorm2d` (`freeze_bn` defaults to False);
- LinZhuoChen/DUpsampling `models/dunet_sybn.py`: `torch.optim.SGD(filter(lambda p:
  p.requires_grad, self.model.parameters()), ..., weight_decay=self.opt.wd)`, which
  includes the temperature `self.T = torch.nn.Parameter(torch.Tensor([1.00]))`;
  haochange/DUpsampling `models/dunet.py`: `torch.optim.SGD(self.model.parameters(), ...,
  weight_decay=self.opt.wd)`;
- guosheng/refinenet `main/cnn_layer_dagnn_wrapper_backward.m` (the backward of the ResNet
  and of the refine blocks, `main/gen_network_featnet_resnet.m`,
  `main/gen_network_refine_group.m`): `thisDecay = optimizer_param.weightDecay *
  net.params(p).weightDecay` for every parameter trained by 'gradient'; the new
  layers' filters and biases get `weightDecay = 1` (`main/My_net_util.m`
  `add_conv_layer_dagnn`), and the ResNet's parameters (BN included) keep `addParam`'s
  default `'weightDecay', {1}` (`main/my_matconvnet_resnet/@DagNN/DagNN.m`) unless the
  pretrained .mat sets another value: not verified, the .mat is not in the repository
  (MatConvNet's importer, `libs/matconvnet/utils/layers.py` `CaffeParam.toMatlab`, writes
  only `name` and `value`).

With 'all', lapseg's scalars are decayed towards 0 in their own parametrisation: DUpsampling's
`log_temperature` towards T = 1, where the reference decays T itself towards 0.
"""

import fnmatch

import jax
import ml_collections
import optax

from lapseg.ops import tree as tree_lib


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


def check_rules(rules) -> tuple:
    """`rules` as a tuple of `(pattern: str, multiplier: float)`, or ValueError naming the bad entry."""
    checked = []
    for index, rule in enumerate(rules or ()):
        if (not isinstance(rule, (tuple, list)) or len(rule) != 2 or not isinstance(rule[0], str)
                or not isinstance(rule[1], (int, float)) or rule[1] < 0):
            raise ValueError(f"optimizer.lr_multipliers[{index}] = {rule!r}: each entry must be "
                             f"(path pattern, multiplier >= 0), e.g. ('backbone/*', 1.0)")
        checked.append((rule[0], float(rule[1])))
    return tuple(checked)


def resolve_multipliers(params, rules) -> dict:
    """`{'a/b/c': multiplier}` for every parameter: the first matching rule's, else 1."""
    rules = check_rules(rules)
    resolved = {}
    for path, _ in tree_lib.flatten_with_names(params):
        resolved[path] = next((m for pattern, m in rules if fnmatch.fnmatchcase(path, pattern)), 1.0)
    return resolved


def describe_groups(params, rules) -> str:
    """One line per distinct multiplier: the multiplier, how many arrays and values, examples."""
    rules = check_rules(rules)
    sizes = {path: int(getattr(leaf, "size", 0))
             for path, leaf in tree_lib.flatten_with_names(params)}
    groups = {}
    for path, multiplier in resolve_multipliers(params, rules).items():
        groups.setdefault(multiplier, []).append(path)
    lines = []
    for multiplier in sorted(groups, reverse=True):
        paths = groups[multiplier]
        shown = ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")
        lines.append(f"lr x{multiplier:g}: {len(paths)} arrays, {sum(sizes[p] for p in paths):,} "
                     f"values ({shown})")
    unused = [pattern for pattern, _ in rules
              if not any(fnmatch.fnmatchcase(p, pattern) for p in sizes)]
    if unused:
        lines.append(f"lr_multipliers patterns matching no parameter: {', '.join(unused)}")
    return "\n".join(lines)


WEIGHT_DECAY_MASKS = ("kernels", "all")


def check_weight_decay_mask(mode) -> str:
    """`mode` if it is one of `WEIGHT_DECAY_MASKS`, else ValueError naming the field."""
    if mode not in WEIGHT_DECAY_MASKS:
        raise ValueError(f"optimizer.weight_decay_mask = {mode!r}: must be one of "
                         f"{', '.join(map(repr, WEIGHT_DECAY_MASKS))}")
    return mode


def weight_decay_mask(params, mode: str = "kernels"):
    """Which parameters weight decay applies to: 'kernels', True for kernels (ndim > 1) and
    False for biases, BatchNorm scales/offsets and temperatures; 'all', True for every one
    (the references' `torch.optim.SGD(model.parameters(), weight_decay=...)`)."""
    check_weight_decay_mask(mode)
    return jax.tree.map(lambda p: mode == "all" or p.ndim > 1, params)


# `make_optimizer`'s fields and their defaults where a config leaves them out (the training
# config's `optimizer` section sets every one; lapseg/train/config.py).
OPTIMIZER_DEFAULTS = {"momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "warmup_steps": 0,
                      "lr_power": 0.9, "lr_multipliers": (), "weight_decay_mask": "kernels"}


def make_optimizer(config, total_steps: int) -> optax.GradientTransformation:
    """SGD-momentum with L2 weight decay, poly learning rate and per-group learning rates.

    Weight decay is added to the gradient before momentum (as torch.optim.SGD does), masked
    by `weight_decay_mask` ('kernels', the default, or 'all'; `weight_decay_mask`); a
    group's multiplier scales its learning rate (so its decay step too, as in Caffe's
    `lr_mult` and PyTorch's per-group `lr`).

    Args:
      config: the training config's `optimizer` section, or any mapping with
        `learning_rate` and optionally the fields of `OPTIMIZER_DEFAULTS` (momentum 0.9,
        no weight decay, no warm-up, poly power 0.9, no multipliers). LRR, for one, needs
        its coefficient convs slower than the rest:

            tx = make_optimizer({"learning_rate": 0.1,
                                 "lr_multipliers": lrr_multipliers((0.1,) * 4)}, 6500)
      total_steps: where the poly schedule reaches 0.

    Returns:
      An optax transformation over the model's params.
    """
    if "learning_rate" not in config:
        raise ValueError("make_optimizer: the config has no learning_rate; it needs one (and "
                         f"optionally {sorted(OPTIMIZER_DEFAULTS)})")
    config = ml_collections.ConfigDict({**OPTIMIZER_DEFAULTS, **dict(config)})
    schedule = learning_rate_schedule(config, total_steps)
    rules = check_rules(config.lr_multipliers)
    mode = check_weight_decay_mask(config.weight_decay_mask)

    def sgd(multiplier):
        return optax.chain(
            optax.add_decayed_weights(config.weight_decay,
                                      mask=lambda params: weight_decay_mask(params, mode)),
            optax.sgd(lambda step: multiplier * schedule(step), momentum=config.momentum,
                      nesterov=config.nesterov),
        )

    multipliers = sorted({1.0, *(m for _, m in rules)})

    def labels(params):
        resolved = resolve_multipliers(params, rules)
        return tree_lib.map_with_names(lambda path, _: str(resolved[path]), params)

    return optax.multi_transform({str(m): sgd(m) for m in multipliers}, labels)


# LRR's pyramid levels, coarse to fine, on ResNet (the coefficient convs are
# `coefficients_<feature>`; the dilation/erosion heads `<kind>_coefficients_<coarsest>`).
LRR_FEATURES = ("res5", "res4", "res3", "res2")


def lrr_multipliers(level_rates=(1.0, 1.0, 1.0, 1.0), *, bias: float = 2.0,
                    bias_rate: float | None = None, features=LRR_FEATURES) -> tuple:
    """`config.optimizer.lr_multipliers` for LRR: each level's coefficient convs (and, at the
    coarsest, the dilation/erosion heads) at `level_rates`, their biases at `bias` x that, or,
    with `bias_rate`, at `bias_rate` x the base rate at every level (the reference's); the
    backbone and everything else at 1x."""
    rules = []
    for feature, rate in zip(features, level_rates):
        bias_multiplier = bias * rate if bias_rate is None else bias_rate
        rules += [(f"*coefficients_{feature}/*/bias", bias_multiplier),
                  (f"*coefficients_{feature}/*", rate)]
    return tuple(rules)
