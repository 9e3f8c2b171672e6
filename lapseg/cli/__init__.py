"""The `lapseg` command line: `lapseg <command> [flags]`; `lapseg <command> --help` lists
a command's flags.

Each command is a module of this package, imported by name only when it runs, so that
`lapseg --help` loads no JAX (nor flax, tfds, grain) and a command's heavy imports are
paid by that command alone. A command module's docstring is its usage text, and it
exposes `main(argv) -> int`, `argv[0]` being the program name (`'lapseg eval'`).
Shared flag parsing (config files, work dirs, inference options, help, one-line errors)
is `lapseg.cli.common`.

Errors: an anticipated one (a bad flag or value, a missing file, a checkpoint that does not
fit, an offline download, a diverged run) is one line on stderr,
`lapseg <command>: <what> — <what to do>`, and exit status 2. Anything else is a bug or an
input nobody anticipated: one line naming the exception, and status 1. `--verbose`
(anywhere before `--`) adds the traceback to either.
"""

import argparse
import importlib
import os
import sys
import traceback

from lapseg.cli import common

EXIT_UNEXPECTED = 1
VERBOSE_FLAG = "--verbose"

# name -> (module, one-line help). The module provides main(argv).
COMMANDS = {
    "train": ("lapseg.cli.train",
              "train a model from a config (default: LRR on the generated shapes data)"),
    "eval": ("lapseg.cli.eval",
             "evaluate a work dir's checkpoint: per-class IoU, mIoU, pixel and trimap accuracy"),
    "predict": ("lapseg.cli.predict", "write label, overlay and side-by-side PNGs for images"),
    "export": ("lapseg.cli.export",
               "write a run's model as a jax.export (StableHLO) artifact for serving"),
    "basis": ("lapseg.cli.basis",
              "fit the label-fitted constants (LRR bases, DUpsampling matrix) of a config"),
    "config": ("lapseg.cli.config", "print every field of a config with its value and meaning"),
    "convert-weights": ("lapseg.cli.convert_weights",
                        "convert a PyTorch state dict to .npz (readable without PyTorch)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = common.OneLineArgumentParser(
        prog="lapseg",
        description="Semantic-segmentation decoders in JAX/Flax. Without --config, "
        "`lapseg train` runs the default job: LRR on a quarter-width ResNet-18, "
        "trained from scratch on the generated shapes data.",
        epilog="`lapseg COMMAND --help` lists a command's flags. An error is one line and "
        "exit status 2; --verbose (any command) adds its traceback.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _split_verbose(argv):
    """`(argv without --verbose, whether it was there)`; arguments after `--` are kept."""
    end = argv.index("--") if "--" in argv else len(argv)
    kept = [a for a in argv[:end] if a != VERBOSE_FLAG] + argv[end:]
    return kept, len(kept) != len(argv)


def main(argv=None) -> int:
    """Runs `lapseg argv...` (default `sys.argv[1:]`); returns the exit status: 0, 2 for an
    anticipated error (one line on stderr), 1 for an unexpected one."""
    argv, verbose = _split_verbose(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    name = argv[0]
    try:
        if name not in COMMANDS:
            common.fail("lapseg", f"unknown command {name!r}",
                        f"choose from {', '.join(COMMANDS)} (lapseg --help)")
        module = importlib.import_module(COMMANDS[name][0])
        common.verbose = verbose
        return module.main([f"lapseg {name}", *argv[1:]])
    except common.CommandError as err:
        if verbose and err.__context__ is not None:
            traceback.print_exception(err.__context__)
        print(err.message, file=sys.stderr)
        return err.code
    except SystemExit as err:  # --help (0)
        if isinstance(err.code, str):
            print(err.code, file=sys.stderr)
            return common.EXIT_USAGE
        return err.code or 0
    except BrokenPipeError:  # `lapseg eval --help | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"lapseg {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # pylint: disable=broad-except  (a bug: one line, or --verbose)
        if verbose:
            raise
        text = " ".join(str(err).split())
        text = text if len(text) <= 300 else text[:297] + "..."
        print(f"lapseg {name}: unexpected {type(err).__name__}: {text} — rerun with "
              f"{VERBOSE_FLAG} for the traceback; if the input was valid, please report it",
              file=sys.stderr)
        return EXIT_UNEXPECTED
