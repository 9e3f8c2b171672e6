"""The `lapseg` command line: `lapseg <command> [args]`.

Each command lives in its own module and is imported only when it runs, so that
`lapseg --help` is instant and a command's heavy imports (JAX, tfds, grain) are
paid only by that command. A command module exposes `main(argv) -> int` and parses its
own arguments (argparse, or absl + ml_collections config flags for config-driven ones).
"""

import argparse
import importlib
import sys

# name -> (module, one-line help). The module provides main(argv).
COMMANDS = {
    "train": ("lapseg.train.cli", "train a model from a config (default: shapes LRR)"),
    "eval": ("lapseg.train.eval_cli", "evaluate a checkpoint: mIoU, per-class IoU, accuracy"),
    "predict": ("lapseg.infer_cli", "write palette and overlay PNGs for images"),
    "basis": ("lapseg.basis_cli", "fit LRR bases / DUpsampling matrix from training labels"),
    "convert-weights": ("lapseg.backbones.convert", "convert a PyTorch state dict to .npz"),
}


def _load(module_name):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        return None


def build_parser():
    parser = argparse.ArgumentParser(
        prog="lapseg", description="Semantic-segmentation decoders in JAX/Flax."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
        parser.print_help()
        return 0
    name = argv[0]
    module_name, _ = COMMANDS[name]
    module = _load(module_name)
    if module is None:
        print(f"lapseg {name}: not available in this version ({module_name} is missing)",
              file=sys.stderr)
        return 2
    return module.main([f"lapseg {name}", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
