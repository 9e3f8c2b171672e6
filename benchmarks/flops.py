"""Inference FLOPs and parameters of ICNet and DSRL against PSPNet-50, by XLA cost analysis.

    python -m benchmarks.flops [--size 1024,2048] [--classes 19]

Each model is built as its factory defaults it (ICNet: half-width deep-stem ResNet-50 at
output stride 8; PSPNet-50: deep-stem ResNet-50 at output stride 8; DSRL around that
PSPNet-50), its eval-mode `'logits'` program jitted on abstract variables (no weights are
allocated), lowered, compiled for this machine's backend and asked for
`compile().cost_analysis()['flops']` (XLA counts a multiply-add as 2 FLOPs). Nothing is
executed; at 1024 x 2048 the three compiles take seconds on a 2-core CPU.
"""

import argparse
import math

import jax
import jax.numpy as jnp

from lapseg import models

MODELS = {
    "ICNet (ResNet-50 x0.5)": ("icnet", {}),
    "PSPNet-50": ("pspnet", {}),
    "DSRL (PSPNet-50)": ("dsrl", {"base": "pspnet"}),
}


def inference_cost(name: str, kwargs: dict, size: tuple[int, int], num_classes: int):
    """`(FLOPs, parameters)` of model `name`'s eval-mode logits on one `size` image."""
    model = models.create_model(name, num_classes=num_classes, **kwargs)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
    images = jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)
    compiled = jax.jit(lambda v, x: model.apply(v, x)["logits"]).lower(variables, images).compile()
    cost = compiled.cost_analysis()
    flops = (cost[0] if isinstance(cost, list) else cost)["flops"]
    return flops, sum(math.prod(x.shape) for x in jax.tree.leaves(variables["params"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1024,2048", help="input height,width")
    parser.add_argument("--classes", type=int, default=19)
    args = parser.parse_args()
    size = tuple(int(s) for s in args.size.split(","))
    costs = {label: inference_cost(name, kwargs, size, args.classes)
             for label, (name, kwargs) in MODELS.items()}
    reference = costs["PSPNet-50"][0]
    print(f"eval FLOPs at {size[0]}x{size[1]}, {args.classes} classes (XLA cost analysis):")
    for label, (flops, params) in costs.items():
        print(f"  {label:24s} {flops / 1e9:9.1f} GFLOPs  {reference / flops:5.1f}x fewer than PSPNet-50"
              f"  {params / 1e6:6.2f} M params")


if __name__ == "__main__":
    main()
