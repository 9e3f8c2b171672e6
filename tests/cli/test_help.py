"""`lapseg --help` loads no JAX; `lapseg <command> --help` / `-h` lists the command's flags."""

import subprocess
import sys

import pytest

from lapseg import cli
from tests.cli.helpers import run

# A flag of each command that its help must list.
COMMAND_FLAGS = {
    "train": "--workdir",
    "eval": "--split",
    "predict": "--output_dir",
    "export": "--output",
    "basis": "--workdir",
    "convert-weights": "--arch",
    "config": "--config",
}


def test_every_command_is_covered():
    assert set(COMMAND_FLAGS) == set(cli.COMMANDS)


def test_top_level_help_loads_no_jax():
    code = (
        "import sys\n"
        "from lapseg.cli import main\n"
        "assert main(['--help']) == 0\n"
        "heavy = [m for m in ('jax', 'flax', 'numpy', 'tensorflow_datasets', 'grain', 'orbax')\n"
        "         if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "FCN-8s on" in done.stdout and "shapes" in done.stdout and "LRR on" not in done.stdout
    for name in cli.COMMANDS:
        assert name in done.stdout


@pytest.mark.parametrize("help_flag", ["--help", "-h"])
@pytest.mark.parametrize("command", sorted(COMMAND_FLAGS))
def test_command_help_lists_its_flags(command, help_flag, capsys, tmp_path):
    # A work dir without config.json: help must not need one.
    assert run(command, help_flag, f"--workdir={tmp_path}") in (0, None)
    out = capsys.readouterr().out
    assert COMMAND_FLAGS[command] in out
    assert f"lapseg {command}" in out  # the usage line


def test_unknown_command_exits_nonzero():
    message = run("trian")
    assert message.startswith("lapseg: unknown command 'trian'") and "\n" not in message
