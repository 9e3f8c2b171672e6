"""Helpers of the command tests."""

from lapseg import cli, models

TOY_CONFIG = '''
import ml_collections
from lapseg.train.config import base_config


def get_config():
    config = base_config()
    config.model = "toy"
    config.model_kwargs = ml_collections.ConfigDict({"width": 4})
    config.data.crop_size = (32, 32)
    config.data.batch_size = 8
    config.num_train_steps = 3
    config.log_every_steps = 1
    config.optimizer.warmup_steps = 1
    return config
'''


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
