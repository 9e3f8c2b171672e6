"""`lapseg config`: every field of the config with its value; overrides; one-line errors."""

from lapseg.cli import config as config_cli
from lapseg.train import config as config_lib
from tests.cli import helpers
from tests.cli.helpers import run


def test_lists_every_field_of_base_config(capsys):
    assert run("config", "--config.data.batch_size=3") == 0
    printed = capsys.readouterr().out.splitlines()
    names = {line.split(" = ", 1)[0] for line in printed}
    want = {line.split(" = ", 1)[0] for line in config_cli.field_lines(config_lib.base_config())}
    assert want and want <= names
    assert "data.batch_size = 3" in printed
    assert f"model = {config_lib.default_job().model!r}" in printed


def test_a_config_file_and_errors(tmp_path, capsys):
    (tmp_path / "toy.py").write_text(helpers.TOY_CONFIG)
    assert run("config", f"--config={tmp_path / 'toy.py'}") == 0
    assert "model = 'toy'" in capsys.readouterr().out.splitlines()
    helpers.one_line(run("config", "--config.nope=1"), "lapseg config: ", "no field nope")
    helpers.one_line(run("config", "extra"), "lapseg config: ", "unexpected arguments extra")
