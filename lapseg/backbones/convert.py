"""`lapseg convert-weights IN OUT`: a PyTorch state dict to an `.npz` readable without PyTorch.

IN is a `.pth`/`.pt`/`.bin` (needs PyTorch), `.safetensors` or `.npz`; OUT keeps the
PyTorch key names (`layer1.0.conv1.weight`, ...), so `lapseg.backbones.read_state_dict`
+ `load_torch_weights` read it on a host without PyTorch (a TPU VM). With `--arch`
the weights are first checked against that backbone (abstractly, nothing is run), and
the command fails listing missing, unexpected and mis-shaped keys.
"""

import argparse
import sys

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="state dict: .pth/.pt/.bin (needs torch), .safetensors, .npz")
    parser.add_argument("output", help="output .npz")
    parser.add_argument("--arch", help="check against this backbone: resnet18..resnet152, vgg16")
    parser.add_argument("--deep-stem", action="store_true", help="ResNet with the deep stem")
    parser.add_argument(
        "--ignore", nargs="*", default=None, metavar="PATTERN",
        help="fnmatch patterns of keys the check ignores (default: the ImageNet classifier)",
    )  # fmt: skip


def check(state_dict, arch: str, deep_stem: bool = False, ignore=None) -> None:
    """Raises ValueError (listing the keys) unless `state_dict` loads into backbone `arch`."""
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    from lapseg import backbones  # pylint: disable=import-outside-toplevel

    kwargs = {"deep_stem": True} if deep_stem else {}
    backbone = backbones.create(arch, **kwargs)
    abstract = jax.eval_shape(
        lambda: backbone.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    )
    backbones.load_torch_weights(abstract, state_dict, arch, ignore=ignore)


def run(args: argparse.Namespace) -> int:
    from lapseg.backbones.weights import read_state_dict  # pylint: disable=import-outside-toplevel

    state_dict = read_state_dict(args.input)
    if args.arch:
        try:
            check(state_dict, args.arch, args.deep_stem, args.ignore)
        except ValueError as err:
            print(f"lapseg convert-weights: {err}", file=sys.stderr)
            return 1
    np.savez(args.output, **state_dict)
    total = sum(a.size for a in state_dict.values())
    print(f"wrote {len(state_dict)} arrays ({total:,} values) to {args.output}")
    return 0


def main(argv) -> int:
    """Entry point of `lapseg convert-weights`; `argv[0]` is the program name."""
    parser = argparse.ArgumentParser(prog=argv[0], description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv[1:]))
