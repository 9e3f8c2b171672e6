"""Train-step memory per device as `config.mesh.spatial` grows (spatial partitioning).

    python -m benchmarks.spatial_memory [--models lrr pspnet icnet] [--size 512 512]
                                        [--spatial 1 2 4] [--batch 1]

For each model, the library's jitted train step (`lapseg.train.step.jit_train_step`) is
compiled, not run, for `batch` images of `size` on a mesh of `batch x spatial` devices
(`make_mesh(batch * spatial, spatial=spatial)`: one image per 'data' row, its height split
over `spatial` devices), and `compiled.memory_analysis()` gives the bytes per device:
`temp` (activations and other temporaries, what the split shrinks) and `args` (the
replicated state and the batch). Needs `batch * max(spatial)` devices; on a CPU run it
with `XLA_FLAGS=--xla_force_host_platform_device_count=8`. No timings: compile only.
"""

import argparse
import os

if "XLA_FLAGS" not in os.environ:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402  (after XLA_FLAGS)
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from lapseg import losses, models  # noqa: E402
from lapseg.losses.lrr import DEFAULT_WEIGHTS  # noqa: E402
from lapseg.train import recipes  # noqa: E402
from lapseg.train import state as state_lib  # noqa: E402
from lapseg.train import step as step_lib  # noqa: E402

# Full-width ResNet-18 backbones (the decoders' own defaults otherwise) and the configs'
# loss weights.
MODELS = {
    "lrr": ({"backbone": "resnet18"}, dict(DEFAULT_WEIGHTS)),
    "pspnet": ({"backbone": "resnet18", "backbone_kwargs": {"output_stride": 8}},
               {"logits": 1.0, "aux": 0.4}),
    "icnet": ({"backbone": "resnet18"}, dict(recipes.ICNET_LOSS_WEIGHTS)),
}


def memory(name, size, spatial, batch, num_classes=19):
    """`(temp, args)` bytes per device of `name`'s train step."""
    kwargs, weights = MODELS[name]
    model = models.create_model(name, num_classes=num_classes, **kwargs)
    loss_fn = losses.for_model(name, ml_collections.ConfigDict({"weights": weights}),
                               ignore_label=255)
    tx = optax.sgd(0.01, momentum=0.9)
    mesh = step_lib.make_mesh(batch * spatial, spatial=spatial)
    abstract = state_lib.abstract_train_state(model, tx, (1, *size, 3))
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=step_lib.replicated(mesh)), abstract)
    shapes = {"image": ((batch, *size, 3), np.float32), "label": ((batch, *size), np.int32)}
    inputs = {key: jax.ShapeDtypeStruct(shape, dtype,
                                        sharding=step_lib.batch_sharding(mesh, shape))
              for key, (shape, dtype) in shapes.items()}
    train_step = step_lib.jit_train_step(mesh, model=model, tx=tx, loss_fn=loss_fn,
                                         ignore_label=255)
    analysis = train_step.lower(state, inputs, jax.random.key(0)).compile().memory_analysis()
    return analysis.temp_size_in_bytes, analysis.argument_size_in_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--size", nargs=2, type=int, default=(512, 512))
    parser.add_argument("--spatial", nargs="+", type=int, default=(1, 2, 4))
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    size = tuple(args.size)
    print(f"train-step memory per device, {args.batch} image(s) of {size[0]} x {size[1]}, "
          f"ResNet-18 backbones, 19 classes ({jax.device_count()} devices available)")
    header = "| model | " + " | ".join(f"spatial={s}" for s in args.spatial) + " | args |"
    print(header)
    print("|" + "---|" * (len(args.spatial) + 2))
    for name in args.models:
        results = {s: memory(name, size, s, args.batch) for s in args.spatial}
        base = results[args.spatial[0]][0]
        cells = [f"{t / 2**20:.0f} MiB ({t / base:.2f}x)" for t, _ in results.values()]
        print(f"| {name} | " + " | ".join(cells)
              + f" | {results[args.spatial[0]][1] / 2**20:.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
