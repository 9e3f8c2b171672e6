"""`lapseg train [--config configs/X.py] [--workdir DIR] [--config.field=value ...]`.

Without `--config`, trains the embedded default (`configs/default.py`: FCN-8s on a
quarter-width ResNet-18, procedurally generated shapes) and prints the final evaluation table.
"""

import logging
import pathlib
import sys

from absl import flags
from ml_collections import config_flags

# The embedded default job is the schema's own defaults, so it ships inside the package
# (configs/ is not installed by a non-editable pip install); configs/default.py is the same.
DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parent / "config.py"


def parse_config_flags(argv, default_workdir):
    """absl/ml_collections parsing of `--config`, `--config.*` overrides and `--workdir`.

    A typo in an override (`--config.batchsize=8`) fails here with the known keys named.
    """
    flag_values = flags.FlagValues()
    try:
        # With `sys_argv`, ml_collections applies the overrides while defining the flag, so an
        # unknown key surfaces here (as AttributeError/KeyError), not only in `flag_values(argv)`.
        config_flags.DEFINE_config_file(
            "config", str(DEFAULT_CONFIG), "Config file (a .py with get_config()).",
            flag_values=flag_values, lock_config=True, sys_argv=list(argv))
        flags.DEFINE_string("workdir", default_workdir, "Where checkpoints and logs go.",
                            flag_values=flag_values)
        flag_values(argv)
    except (flags.Error, AttributeError, KeyError) as err:
        sys.exit(f"{argv[0]}: bad config flag: {_message(err)}")
    return flag_values.config, flag_values.workdir


def _message(err):
    """The text inside nested KeyError/AttributeError wrappers (whose str() is a repr)."""
    while err.args and isinstance(err.args[0], BaseException):
        err = err.args[0]
    return err.args[0] if err.args and isinstance(err.args[0], str) else str(err)


def quiet_logging():
    """lapseg's own progress at INFO; orbax/absl/tfds chatter only from WARNING up."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("lapseg").setLevel(logging.INFO)
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    tfds.disable_progress_bar()


def main(argv):
    config, workdir = parse_config_flags(argv, default_workdir="workdir/default")
    quiet_logging()
    from lapseg.train import loop  # pylint: disable=import-outside-toplevel

    result = loop.train_and_evaluate(config, workdir)
    print(f"final mIoU {result['miou']:.4f} at step {result['step']} (workdir {workdir})")
    return 0
