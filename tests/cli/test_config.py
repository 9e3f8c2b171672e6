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
    free_form = ("loss.weights.", "model_kwargs.")  # each model's own keys (LRR: level_32 ...)
    assert want and {n for n in want if not n.startswith(free_form)} <= names
    assert {"loss.weights.level_32", "model_kwargs.num_bases"} <= names
    assert any(line.startswith("data.batch_size = 3 ") for line in printed)
    assert any(line.startswith(f"model = {config_lib.default_job().model!r} ") for line in printed)


def test_a_config_file_and_errors(tmp_path, capsys):
    (tmp_path / "toy.py").write_text(helpers.TOY_CONFIG)
    assert run("config", f"--config={tmp_path / 'toy.py'}") == 0
    assert any(line.startswith("model = 'toy' ") for line in capsys.readouterr().out.splitlines())
    helpers.one_line(run("config", "--config.nope=1"), "lapseg config: ", "no field nope")
    helpers.one_line(run("config", "extra"), "lapseg config: ", "unexpected arguments extra")


def test_every_field_has_a_meaning(capsys):
    """Each field of the schema prints with a meaning: its own, or a described parent's."""
    from lapseg.train import fields

    names = [line.split(" = ", 1)[0] for line in config_cli.field_lines(config_lib.base_config())]
    assert [n for n in names if not fields.meaning(n)] == []
    assert fields.meaning("data.batch_size").startswith("GLOBAL batch size")
    assert fields.meaning("loss.border_weight") == fields.TRAINING["loss"]  # a recipe's extra key
    assert fields.meaning("nope") is None
    assert run("config") == 0
    lines = capsys.readouterr().out.splitlines()
    line = next(l for l in lines if l.startswith("optimizer.momentum = "))
    assert line.endswith("# " + fields.TRAINING["optimizer.momentum"])
