"""Helpers of the command tests."""

import contextlib
import glob
import hashlib
import io
import os

import numpy as np

from lapseg import cli, models
from tests.train import toy

TOY_CONFIG = toy.config_file()  # the config file of a toy run (no data_dir)


def register_toy(patch):
    """Registers tests/train/toy.py as model 'toy', and again as 'toy2' (another model name)."""
    patch.setitem(models._MODELS, "toy", "tests.train.toy:toy")  # pylint: disable=protected-access
    patch.setitem(models._MODELS, "toy2", "tests.train.toy:toy")  # pylint: disable=protected-access


def run(*argv):
    """`lapseg argv...` in this process: 0, or for an anticipated error (status 2) the
    message, the last line it printed on stderr (no traceback); any other status fails
    the test."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = cli.main([str(a) for a in argv])
    if code == 0:
        return 0
    text = stderr.getvalue()
    assert code == 2, f"exit status {code}: {text}"
    assert "Traceback" not in text, text
    # The message is the last line; progress bars (tfds building a dataset) may precede it.
    return text.rstrip("\n").split("\n")[-1].split("\r")[-1]


def one_line(message, prefix: str, *patterns):
    """`message` (what `run` returned for status 2) is one line starting with `prefix`,
    holding every pattern."""
    assert isinstance(message, str), message
    assert "\n" not in message and message.startswith(prefix), message
    for pattern in patterns:
        assert pattern in message, message


def file_hashes(root):
    """`{relative path: sha256}` of every file under `root` (empty if it does not exist)."""
    found = {}
    for path in glob.glob(os.path.join(root, "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return found


def shapes_images(count, size, seed=0):
    """uint8 `[count, H, W, 3]`: noisy backgrounds with a bright rectangle and a disc, like
    the shapes data (what `tiny_workdir`'s model was trained on)."""
    rng = np.random.default_rng(seed)
    height, width = size
    images = rng.integers(0, 80, (count, height, width, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:height, :width]
    for image in images:
        y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
        image[y:y + height // 3, x:x + width // 3] = rng.integers(120, 256, 3)
        cy, cx, r = rng.integers(height // 4, 3 * height // 4), rng.integers(0, width), height // 6
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(120, 256, 3)
    return images
