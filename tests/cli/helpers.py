"""Helpers of the command tests."""

from lapseg import cli, models
from tests.train import toy

TOY_CONFIG = toy.config_file()  # the config file of a toy run (no data_dir)


def register_toy(patch):
    """Registers tests/train/toy.py as model 'toy', and again as 'toy2' (another model name)."""
    patch.setitem(models._MODELS, "toy", "tests.train.toy:toy")  # pylint: disable=protected-access
    patch.setitem(models._MODELS, "toy2", "tests.train.toy:toy")  # pylint: disable=protected-access


def run(*argv):
    """`lapseg argv...` in this process: its exit status, or the message `sys.exit` gave."""
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exit_:
        return exit_.code


def one_line(message, prefix: str, *patterns):
    """`message` is what `sys.exit(str)` gave (status 1, on stderr): one line starting with
    `prefix`, holding every pattern."""
    assert isinstance(message, str), message
    assert "\n" not in message and message.startswith(prefix), message
    for pattern in patterns:
        assert pattern in message, message
