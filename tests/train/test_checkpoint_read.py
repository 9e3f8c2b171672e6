"""`lapseg.train.checkpoint.read_tree`, the one checkpoint reader: the whole state or a part
of it, as saved or onto a target, its errors, the fallback to an older readable step, and
no grain (the input pipeline) to read a checkpoint."""

import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from lapseg.train import checkpoint as checkpoint_lib
from lapseg.train import optim
from lapseg.train import state as state_lib
from tests.train.test_step import _optimizer_config
from tests.train.toy import ToySegmenter

META = {"model": "toy", "num_classes": 3}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """`(directory, {step: state})`: checkpoints 1 and 2 of a toy state."""
    directory = tmp_path_factory.mktemp("read") / "checkpoints"
    tx = optim.make_optimizer(_optimizer_config(), total_steps=10)
    states = {}
    checkpointer = checkpoint_lib.Checkpointer(directory, async_save=False)
    for step in (1, 2):
        variables = state_lib.init_variables(ToySegmenter(), jax.random.key(step), (1, 8, 8, 3))
        states[step] = state_lib.create_train_state(variables, tx)
        checkpointer.save(step, states[step], meta=META)
    checkpointer.close()
    return directory, states


def _assert_equal(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_parts_as_numpy_and_the_whole_state_on_a_device(saved):
    directory, states = saved
    tree, step = checkpoint_lib.read_tree(directory, keys=("params",))
    assert step == 2 and set(tree) == {"params"}
    assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree.leaves(tree))
    _assert_equal(tree["params"], states[2].params)

    checkpointer = checkpoint_lib.Checkpointer(directory)
    whole = checkpointer.read(1)
    checkpointer.close()
    assert set(whole) == {"step", "params", "model_state", "opt_state"}
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(whole))
    _assert_equal(whole["params"], states[1].params)

    variables, step = checkpoint_lib.read_variables(directory, step=1, meta=META)
    _assert_equal(variables, states[1].variables)


def test_errors_name_the_directory_the_step_and_the_field(saved, tmp_path):
    directory, _ = saved
    with pytest.raises(checkpoint_lib.CheckpointError,
                       match=r"^config.init.checkpoint: no checkpoint in .*nowhere \(it does not"):
        checkpoint_lib.read_tree(tmp_path / "nowhere", what="config.init.checkpoint")
    with pytest.raises(checkpoint_lib.CheckpointError, match="^no checkpoint of step 7 in "):
        checkpoint_lib.read_tree(directory, 7)
    with pytest.raises(checkpoint_lib.CheckpointError, match="model='toy', but this model"):
        checkpoint_lib.read_variables(directory, meta={**META, "model": "other"})


def test_a_damaged_latest_step_falls_back_only_when_asked(saved, tmp_path, caplog):
    directory, states = saved
    copy = tmp_path / "checkpoints"
    shutil.copytree(directory, copy)
    for path in (copy / "2" / "state").rglob("*"):
        if path.is_file() and path.stat().st_size > 100:
            path.write_bytes(b"\0" * path.stat().st_size)
    with caplog.at_level("WARNING"):
        variables, step = checkpoint_lib.read_variables(copy)
    assert step == 1
    _assert_equal(variables, states[1].variables)
    assert any("step 2" in r.getMessage() and "using step 1" in r.getMessage()
               for r in caplog.records)
    with pytest.raises(Exception):  # orbax's or tensorstore's own error for the zeroed files
        checkpoint_lib.read_variables(copy, newest_readable=False)


def test_reading_needs_no_input_pipeline(saved):
    directory, _ = saved
    code = ("import sys\n"
            "from lapseg.train import checkpoint\n"
            f"variables, step = checkpoint.read_variables({str(directory)!r})\n"
            "assert step == 2 and 'params' in variables\n"
            "assert 'grain' not in sys.modules and 'tensorflow_datasets' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
