"""What leaving unused heads out of an export saves: artifact bytes and call time.

    python -m benchmarks.export_size [--models pspnet,dsrl,dfn,icnet,fcn8s] [--size 256]
        [--batch 2] [--rounds 5] [--width 0.25]

For each model (a ResNet-18 of `--width`, random variables perturbed so that no array is
constant-valued), two `jax.export` artifacts of the same logits function, lowered for CPU:
'whole' closes over every variable (what `lapseg export` wrote before `used_leaves`), and
'pruned' is `lapseg.export.export_model`, which bakes in only the variables the logits use.
The table gives each artifact's bytes, the variables left out (MB) and the median call time
of `--rounds` interleaved rounds (deserialized from bytes, as a server runs it, at batch
`--batch`), and the ratio pruned / whole.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from lapseg import export, infer, models

WRAPPED = {"dsrl": {"base": "pspnet"}}


def artifacts(name: str, size: int, width: float) -> dict:
    model = models.create_model(name, num_classes=19, backbone="resnet18",
                                backbone_kwargs={"width": width}, **WRAPPED.get(name, {}))
    images = jnp.zeros((1, size, size, 3))
    variables = jax.jit(lambda key: model.init(key, images, train=False))(jax.random.key(0))
    variables = jax.tree.map(lambda x: x + 0.01 * jax.random.uniform(jax.random.key(1), x.shape),
                             variables)

    def logits(v, x):
        return infer.model_logits(model, v, x)

    used = export.used_leaves(logits, variables, images)
    left_out = sum(leaf.nbytes for leaf, keep in zip(jax.tree.leaves(variables), used) if not keep)
    whole = jax.export.export(jax.jit(lambda x: logits(variables, x)), platforms=("cpu",))(
        export.input_spec((size, size)))
    pruned = export.export_model(model, variables, (size, size), platforms=("cpu",))
    return {"whole": whole.serialize(), "pruned": pruned.serialize(), "left_out": left_out}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="pspnet,dsrl,dfn,icnet,fcn8s")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--width", type=float, default=0.25)
    args = parser.parse_args()
    images = np.random.default_rng(0).normal(size=(args.batch, args.size, args.size, 3))
    images = images.astype(np.float32)
    print(f"{jax.devices()[0].device_kind}; ResNet-18 x {args.width}, {args.size}x{args.size}, "
          f"batch {args.batch}; median of {args.rounds} interleaved rounds")
    print("| model | whole MB | pruned MB | left out MB | whole ms | pruned ms | pruned / whole ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        blobs = artifacts(name, args.size, args.width)
        calls = {kind: jax.jit(jax.export.deserialize(bytearray(blobs[kind])).call)
                 for kind in ("whole", "pruned")}
        times = {kind: [] for kind in calls}
        for kind, call in calls.items():
            call(images).block_until_ready()  # compile
        for _ in range(args.rounds):
            for kind, call in calls.items():
                start = time.perf_counter()
                call(images).block_until_ready()
                times[kind].append(time.perf_counter() - start)
        whole_ms, pruned_ms = (1e3 * float(np.median(times[k])) for k in ("whole", "pruned"))
        print(f"| {name} | {len(blobs['whole']) / 1e6:.2f} | {len(blobs['pruned']) / 1e6:.2f} | "
              f"{blobs['left_out'] / 1e6:.2f} | {whole_ms:.1f} | {pruned_ms:.1f} | "
              f"{pruned_ms / whole_ms:.3f} |", flush=True)


if __name__ == "__main__":
    main()
