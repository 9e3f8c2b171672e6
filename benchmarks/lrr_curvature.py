"""Curvature of the decoder heads' loss at initialisation: why LRR needs small learning rates.

    python -m benchmarks.lrr_curvature [--images 16] [--fit_labels 160] [--iterations 30]

The measure is the top eigenvalue of the Hessian of the training loss with respect to the
head's parameters (everything outside `params['backbone']`), at initialisation, on a batch of
`shapes` training crops (96x96) through a random-init quarter-width ResNet-18 in train mode.
With per-group learning-rate multipliers M (`config.optimizer.lr_multipliers`) the relevant
quantity is the top eigenvalue of `M^1/2 H M^1/2`: plain SGD on a quadratic is stable below
`lr = 2 / lambda`, so `lambda` is what the base rate must respect. Computed by power iteration
on Hessian-vector products (forward-over-reverse); every variant uses the same images, labels
and backbone, and LRR's bases are fitted once from `--fit_labels` training labels.

Printed per variant: lambda, its ratio to FCN-8s's, and the largest stable plain-SGD rate.
"""

import argparse

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from lapseg import bases, data, losses, models
from lapseg.losses.lrr import DEFAULT_WEIGHTS
from lapseg.train import optim
from lapseg.train import recipes

BACKBONE = {"backbone": "resnet18", "backbone_kwargs": {"output_stride": 32, "width": 0.25}}


def _batch(num_images, data_dir):
    source = data.load_source("shapes", "train", data_dir=data_dir)
    from lapseg.ops.normalize import normalize  # pylint: disable=import-outside-toplevel

    images = np.stack([normalize(np.asarray(source[i]["image"]), "torch") for i in range(num_images)])
    labels = np.stack([np.asarray(source[i]["label"], np.int32) for i in range(num_images)])
    return jnp.asarray(images), jnp.asarray(labels)


def _labels(count, data_dir):
    source = data.load_source("shapes", "train", data_dir=data_dir)
    return np.stack([np.asarray(source[i]["label"], np.int32) for i in range(count)])


def top_eigenvalue(loss_of_head, head, multipliers, iterations, seed=0):
    """Power iteration for the top eigenvalue of `M^1/2 H M^1/2` (H: Hessian of `loss_of_head`)."""
    root = jax.tree.map(jnp.sqrt, multipliers)
    grad = jax.grad(loss_of_head)

    @jax.jit
    def hvp(v):
        scaled = jax.tree.map(jnp.multiply, root, v)
        return jax.tree.map(jnp.multiply, root, jax.jvp(grad, (head,), (scaled,))[1])

    leaves, treedef = jax.tree.flatten(head)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    v = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])

    def norm(t):
        return jnp.sqrt(sum(jnp.vdot(x, x) for x in jax.tree.leaves(t)))

    value = 0.0
    for _ in range(iterations):
        v = jax.tree.map(lambda x, n=norm(v): x / n, v)
        hv = hvp(v)
        value = float(sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(hv))))
        v = hv
    return value


def variant_eigenvalue(name, model_kwargs, loss_weights, rules, fitted, batch, iterations):
    images, labels = batch
    model = models.create_model(name, num_classes=5, **model_kwargs)
    variables = model.init(jax.random.key(0), images[:1], train=False)
    variables = bases.attach(variables, {k: fitted[k] for k in bases.required(variables)})
    params = dict(variables["params"])
    backbone = params.pop("backbone")
    rest = {k: v for k, v in variables.items() if k != "params"}
    loss_config = ml_collections.ConfigDict({"weights": dict(loss_weights)})
    loss_fn = losses.for_model(name, loss_config, ignore_label=255)

    def loss_of_head(head):
        outputs, _ = model.apply({"params": {**head, "backbone": backbone}, **rest}, images,
                                 train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)})
        return loss_fn(outputs, labels, {"image": images, "label": labels})[0]

    resolved = optim.resolve_multipliers({**params, "backbone": backbone}, rules)
    flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}
    multipliers = traverse_util.unflatten_dict(
        {tuple(p.split("/")): jnp.full(v.shape, resolved[p], jnp.float32) for p, v in flat.items()})
    return top_eigenvalue(loss_of_head, params, multipliers, iterations)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--fit_labels", type=int, default=160)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args()
    batch = _batch(args.images, args.data_dir)
    fit_labels = _labels(args.fit_labels, args.data_dir)
    need = {"lrr_bases": (8, 8, 10, 5)}
    fitted = {scale: bases.fit_required(need, [fit_labels], num_classes=5, lrr_scale=scale)
              for scale in ("reference", "flat_field")}
    pca = {**BACKBONE, "num_bases": 10}
    one_level = {"level_32": 1.0, "level_16": 0.0, "level_8": 0.0, "level_4": 0.0}
    variants = [
        ("FCN-8s", "fcn8s", BACKBONE, {"logits": 1.0}, (), {}),
        ("LRR, reference-scaled PCA bases, 4 losses", "lrr", pca, DEFAULT_WEIGHTS, (),
         fitted["reference"]),
        ("LRR, reference-scaled PCA bases, 32x loss only", "lrr", pca, one_level, (),
         fitted["reference"]),
        ("LRR, unit-gain PCA bases, 4 losses", "lrr", pca, DEFAULT_WEIGHTS, (),
         fitted["flat_field"]),
        ("LRR, unit-gain PCA bases, 3x3 coefficient convs", "lrr", {**pca, "coefficient_kernel": 3},
         DEFAULT_WEIGHTS, (), fitted["flat_field"]),
        ("LRR, unit-gain PCA bases, 1x1 coefficient convs", "lrr", {**pca, "coefficient_kernel": 1},
         DEFAULT_WEIGHTS, (), fitted["flat_field"]),
        ("LRR, reference-scaled, reference multipliers", "lrr", pca, DEFAULT_WEIGHTS,
         recipes.lrr_reference_multipliers(), fitted["reference"]),
        ("LRR, unit-gain, configs' multipliers (0.1x, biases 2x)", "lrr", pca, DEFAULT_WEIGHTS,
         optim.lrr_multipliers((0.1, 0.1, 0.1, 0.1)), fitted["flat_field"]),
        ("LRR, bilinear basis", "lrr", {**BACKBONE, "basis": "bilinear"}, DEFAULT_WEIGHTS, (), {}),
    ]
    print(f"top Hessian eigenvalue of the head's loss at init ({args.images} shapes crops 96x96, "
          f"quarter-width ResNet-18, bases from {args.fit_labels} labels)")
    print("| variant | lambda | / FCN-8s | stable SGD lr < 2/lambda |\n|---|---|---|---|")
    reference = None
    for title, name, kwargs, weights, rules, fit in variants:
        value = variant_eigenvalue(name, kwargs, weights, rules, fit, batch, args.iterations)
        reference = reference or value
        print(f"| {title} | {value:.3g} | {value / reference:.3g} | {2 / value:.3g} |", flush=True)


if __name__ == "__main__":
    main()
