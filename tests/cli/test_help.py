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
    assert "LRR on" in done.stdout and "shapes" in done.stdout and "FCN-8s on" not in done.stdout
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


CONFIG_COMMANDS = ("train", "eval", "predict", "export", "basis", "config")


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_config_help_points_to_lapseg_config_and_shows_a_clean_default(command, capsys,
                                                                       tmp_path):
    assert run(command, "--help", f"--workdir={tmp_path}") in (0, None)
    out = capsys.readouterr().out
    assert "`lapseg config [--config C]` prints every field" in out
    assert "--config.<field>=<value>" in out
    flags_part = out.split("\nflags:\n", 1)[1]
    assert "config.py" not in flags_part and "config.json'" not in flags_part, flags_part
    config_help = flags_part.split("--config:", 1)[1].split("\n    --", 1)[0]
    assert "default: the " in " ".join(config_help.split()), config_help  # said in words


def test_convert_weights_help_is_in_the_commands_style(capsys):
    assert run("convert-weights", "--help") in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("`lapseg convert-weights IN OUT")
    assert "usage:" not in out and "options:" not in out  # not argparse's own layout
    assert "\narguments:\n    IN: " in out and "\nflags:\n    --arch ARCH: " in out
    assert "    --deep-stem: " in out and "    --ignore PATTERN ...: " in out
    assert all(len(line) <= 80 for line in out.splitlines()[-8:])


@pytest.mark.parametrize("args, todo", [
    (("--config.nope=1",), "see `lapseg config` for every field"),
    (("--config.num_train_steps=abc",), "see `lapseg config` for every field"),
    (("--nope=1",), "see --help"),
])
def test_errors_about_config_fields_point_to_lapseg_config(args, todo):
    message = run("train", *args)
    assert isinstance(message, str) and "\n" not in message
    assert message.endswith(todo) or f"— {todo}" in message, message
    assert ("lapseg config" in message) == ("--config." in args[0]), message
