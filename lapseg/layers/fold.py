"""A model with every eval-mode BatchNorm folded into the conv before it, for inference.

    folded_model, folded_variables = fold_batch_norm(model, variables)
    logits = folded_model.apply(folded_variables, images, train=False)['logits']  # as before

In evaluation a BatchNorm is a per-channel affine map of its running statistics; after a
convolution it is the same convolution with the kernel scaled per output channel and a
bias added (`lapseg.ops.fold`). Folded, inference runs one op where it ran a convolution
and a normalisation pass over the activations (a ResNet-50 has ~50 of them), and the
variables lose `batch_stats`. Training never folds: a folded `ConvBN` refuses
`train=True`, and the training path neither calls this nor wraps its model.

How it reaches every BatchNorm without touching the factories: `WithFoldedBatchNorm`
wraps a model, sharing its variable scope (the same names) and setting `fold_bn=True`,
which each `ConvBN` reads from its nearest enclosing module that sets it, as `Conv` reads
`fast_paths` (`lapseg.layers.conv.enclosing_setting`). The variables are rewritten for the
BatchNorms the model actually runs: tracing its eval-mode init (`jax.eval_shape`, nothing
computed), an interceptor records each `nn.BatchNorm`, its own epsilon, and the module
around it, whose `batch_norm_folds()` names the kernel and bias params it folds into
(`ConvBN`, DSRL's `SSSRUpsample`). A BatchNorm inside a module without that method is left
as it is, its variables kept.
"""

import flax.linen as nn
import jax

from lapseg.ops import fold as fold_ops

DEFAULT_IMAGE_SHAPE = (1, 64, 64, 3)  # the shape traced by default: any size the model takes


class WithFoldedBatchNorm(nn.Module):
    """`module` with `fold_bn` set for every `ConvBN` (and module reading `fold_bn`) inside
    it that does not set its own: `__call__` is `module.__call__`, under the same variable
    names. Its variables are `fold_batch_norm`'s, not `module`'s; only `__call__` is
    forwarded.
    """

    module: nn.Module
    fold_bn: bool = True

    def setup(self):
        nn.share_scope(self, self.module)

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def _batch_norms(model, image_shape) -> list:
    """`[(path of the BatchNorm, its epsilon, its use_scale, use_bias, (kernel path, bias
    path) or None)]` of every BatchNorm that `model`'s eval-mode init runs, paths as tuples
    of names from the variables' root."""
    found = []

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, nn.BatchNorm) and context.method_name == "__call__":
            path = tuple(module.scope.path)
            owner = module.parent
            folds = getattr(owner, "batch_norm_folds", None)
            target = None
            if folds is not None and path[-1] in folds():
                kernel, bias = folds()[path[-1]]
                target = (path[:-1] + tuple(kernel), path[:-1] + tuple(bias))
            found.append((path, module.epsilon, module.use_scale, module.use_bias, target))
        return next_fun(*args, **kwargs)

    images = jax.ShapeDtypeStruct(tuple(image_shape), jax.numpy.float32)
    with nn.intercept_methods(record):
        jax.eval_shape(lambda key, x: model.init(key, x, train=False), jax.random.key(0), images)
    return found


def _get(tree, path):
    for name in path:
        tree = tree[name]
    return tree


def _pop(tree, path):
    """Removes `tree[path]` and any dict left empty above it."""
    parents = [tree]
    for name in path[:-1]:
        parents.append(parents[-1][name])
    parents[-1].pop(path[-1])
    for parent, name in zip(reversed(parents[:-1]), reversed(path[:-1])):
        if parent[name]:
            break
        parent.pop(name)


def _set(tree, path, value):
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def _copy(tree):
    return {k: _copy(v) for k, v in tree.items()} if hasattr(tree, "items") else tree


def _flat(tree, prefix=()):
    if not hasattr(tree, "items"):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, prefix + (key,)))
    return out


def fold_batch_norm(model: nn.Module, variables, *, image_shape=DEFAULT_IMAGE_SHAPE):
    """`model` and its `variables` with every eval-mode BatchNorm folded into its conv.

    Each `ConvBN` (backbones' and decoders' alike) and DSRL's deconvolution + BatchNorm
    becomes one linear map: kernel `[kh, kw, I, O]` scaled per output channel by
    `scale / sqrt(var + eps)`, bias `[O]` `(b - mean) * scale / sqrt(var + eps) + offset`
    (b the conv's bias or 0, eps each BatchNorm's own). The folded model's eval-mode
    outputs equal `model`'s to float rounding (`tests/layers/test_fold.py`: 1e-4 for every
    registered model) for one op less per BatchNorm; it cannot train (`ConvBN` raises on
    `train=True`).

    Args:
      model: any lapseg model (`lapseg.create_model`, `lapseg.models.from_config`), or any
        linen module whose BatchNorms sit in `ConvBN`s; called as `model(images,
        train=False)`.
      variables: its variables, `{'params': ..., 'batch_stats': ..., ...}` (not modified).
      image_shape: `[N, H, W, 3]` traced (shapes only, nothing computed) to find the
        BatchNorms the model runs; any size the model takes.

    Returns:
      `(folded_model, folded_variables)`: `WithFoldedBatchNorm(model)`, and the variables
      with each folded BatchNorm's `params` and `batch_stats` replaced by the conv's
      kernel and `bias`, other collections (e.g. LRR's `constants`) unchanged; no
      `batch_stats` is left where every BatchNorm was folded. Variables the folded model's
      eval-mode init does not create are dropped; one it needs but `variables` lacks (or of
      another shape) is a ValueError naming it.
    """
    if len(tuple(image_shape)) != 4 or tuple(image_shape)[-1] != 3:
        raise ValueError(f"fold_batch_norm: image_shape must be [N, H, W, 3], got {image_shape}")
    out = _copy(variables)
    params, stats = out.get("params", {}), out.get("batch_stats", {})
    for path, epsilon, use_scale, use_bias, target in _batch_norms(model, image_shape):
        if target is None:
            continue  # a BatchNorm of a module that cannot fold it: left as it is
        kernel_path, bias_path = target
        needed = [("params", kernel_path), ("batch_stats", path + ("mean",)),
                  ("batch_stats", path + ("var",))]
        needed += [("params", path + (name,)) for name, used in
                   (("scale", use_scale), ("bias", use_bias)) if used]
        for collection, needed_path in needed:
            if not _has(out.get(collection, {}), needed_path):
                raise ValueError(f"fold_batch_norm: the variables lack {collection}/"
                                 f"{'/'.join(needed_path)}, which the model's BatchNorm "
                                 f"{'/'.join(path)} needs")
        bn_params = _get(params, path) if (use_scale or use_bias) else {}
        bn_stats = _get(stats, path)
        kernel, bias = fold_ops.fold_into_kernel(
            _get(params, kernel_path), _get(params, bias_path) if _has(params, bias_path) else None,
            mean=bn_stats["mean"], var=bn_stats["var"], epsilon=epsilon,
            scale=bn_params.get("scale") if use_scale else None,
            offset=bn_params.get("bias") if use_bias else None)
        _set(params, kernel_path, kernel)
        _set(params, bias_path, bias)
        _pop(stats, path)
        if use_scale or use_bias:
            _pop(params, path)
    if "batch_stats" in out and not out["batch_stats"]:
        del out["batch_stats"]

    folded_model = WithFoldedBatchNorm(model)
    images = jax.ShapeDtypeStruct(tuple(image_shape), jax.numpy.float32)
    wanted = _flat(jax.eval_shape(lambda key, x: folded_model.init(key, x, train=False),
                                  jax.random.key(0), images))
    have = _flat(out)
    kept = {}
    for path, spec in wanted.items():
        if path not in have or tuple(have[path].shape) != tuple(spec.shape):
            got = f"shape {tuple(have[path].shape)}" if path in have else "missing"
            raise ValueError(f"fold_batch_norm: the folded model needs {'/'.join(path)} "
                             f"{tuple(spec.shape)}, the folded variables have it {got}")
        _set(kept, path, have[path])
    return folded_model, kept


def _has(tree, path) -> bool:
    try:
        _get(tree, path)
    except KeyError:
        return False
    return True
