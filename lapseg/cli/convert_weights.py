"""`lapseg convert-weights IN OUT [--arch A] [--deep-stem] [--ignore PATTERN ...]`

Converts a PyTorch state dict to an `.npz` readable without PyTorch. IN is a
`.pth`/`.pt`/`.bin` (needs PyTorch), `.safetensors` or `.npz`; OUT keeps the PyTorch key
names (`layer1.0.conv1.weight`, ...), so `lapseg.backbones.read_state_dict` +
`load_torch_weights` read it on a host without PyTorch (a TPU VM). With --arch the
weights are first checked against that backbone (abstractly, nothing is run,
`lapseg.backbones.weights.check_state_dict`), and the command fails listing missing,
unexpected and mis-shaped keys, writing nothing.
"""

import argparse
import os
import sys

from lapseg.cli import common


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = common.CommandArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", metavar="IN",
                        help="State dict: .pth/.pt/.bin (needs torch), .safetensors or .npz.")
    parser.add_argument("output", metavar="OUT", help="The .npz to write.")
    parser.add_argument("--arch", help="Check against this backbone: resnet18..resnet152, vgg16 "
                        "(default: no check).")
    parser.add_argument("--deep-stem", action="store_true",
                        help="The ResNet has the deep stem (with --arch).")
    parser.add_argument(
        "--ignore", nargs="*", default=None, metavar="PATTERN",
        help="fnmatch patterns of keys the check ignores (default: the ImageNet classifier).",
    )  # fmt: skip
    return parser


def _one_line(err) -> str:
    return " ".join(str(err).split())


def main(argv) -> int:
    """Entry point of `lapseg convert-weights`; `argv[0]` is the program name."""
    program = argv[0]
    args = build_parser(program).parse_args(argv[1:])
    if not os.path.isfile(args.input):
        common.fail(program, f"no such file: {args.input}",
                    "pass a .pth/.pt/.bin, .safetensors or .npz state dict")
    # pylint: disable=import-outside-toplevel  (numpy, JAX only once the arguments are good)
    import numpy as np

    from lapseg.backbones import weights

    try:
        state_dict = weights.read_state_dict(args.input)
    except (ImportError, ValueError, OSError) as err:
        common.fail(program, f"cannot read {args.input}: {_one_line(err)}",
                    "pass a PyTorch state dict (.pth/.pt/.bin), .safetensors or .npz")
    if args.arch:
        try:
            weights.check_state_dict(state_dict, args.arch, deep_stem=args.deep_stem,
                                     ignore=args.ignore)
        except ValueError as err:
            common.fail(program, _one_line(err), "check --arch / --deep-stem, or --ignore keys")
    np.savez(args.output, **state_dict)
    total = sum(a.size for a in state_dict.values())
    print(f"wrote {len(state_dict)} arrays ({total:,} values) to {args.output}")
    return 0


if __name__ == "__main__":  # the same as `lapseg convert-weights`
    from lapseg import cli

    sys.exit(cli.main(["convert-weights", *sys.argv[1:]]))
