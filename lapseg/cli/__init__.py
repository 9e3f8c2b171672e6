"""The `lapseg` command line: `lapseg <command> [flags]`; `lapseg <command> --help` lists
a command's flags.

Each command is a module of this package, imported by name only when it runs, so that
`lapseg --help` loads no JAX (nor flax, tfds, grain) and a command's heavy imports are
paid by that command alone. A command module's docstring is its usage text, and it
exposes `main(argv) -> int`, `argv[0]` being the program name (`'lapseg eval'`).
Shared flag parsing (config files, work dirs, inference options, help, one-line errors)
is `lapseg.cli.common`.
"""

import argparse
import importlib
import os
import sys

# name -> (module, one-line help). The module provides main(argv).
COMMANDS = {
    "train": ("lapseg.cli.train",
              "train a model from a config (default: FCN-8s on the generated shapes data)"),
    "eval": ("lapseg.cli.eval",
             "evaluate a work dir's checkpoint: per-class IoU, mIoU, pixel and trimap accuracy"),
    "predict": ("lapseg.cli.predict", "write label and overlay PNGs for images"),
    "export": ("lapseg.cli.export",
               "write a run's model as a jax.export (StableHLO) artifact for serving"),
    "basis": ("lapseg.cli.basis",
              "fit the label-fitted constants (LRR bases, DUpsampling matrix) of a config"),
    "convert-weights": ("lapseg.cli.convert_weights",
                        "convert a PyTorch state dict to .npz (readable without PyTorch)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lapseg",
        description="Semantic-segmentation decoders in JAX/Flax. Without --config, "
        "`lapseg train` runs the default job: FCN-8s on a quarter-width ResNet-18, "
        "trained from scratch on the generated shapes data.",
        epilog="`lapseg COMMAND --help` lists a command's flags.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv=None) -> int:
    """Runs `lapseg argv...` (default `sys.argv[1:]`); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    name = argv[0]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return module.main([f"lapseg {name}", *argv[1:]])
    except BrokenPipeError:  # `lapseg eval --help | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
