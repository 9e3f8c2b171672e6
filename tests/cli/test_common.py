"""`lapseg.cli.common`: reading flags before they are defined, the saved-config default,
the inference options."""

import pytest
from absl import flags

from lapseg.cli import common


@pytest.mark.parametrize("argv, want", [
    (["p", "--workdir=a"], "a"),
    (["p", "--workdir", "a"], "a"),
    (["p", "-workdir", "a", "x.png"], "a"),
    (["p", "--workdir=a", "--workdir", "b"], "b"),  # the last one wins, as in absl
    (["p", "--workdir_x=a", "--config.workdir=b"], None),
    (["p", "--", "--workdir=a"], None),
    (["p", "--workdir"], None),
])
def test_flag_value(argv, want):
    assert common.flag_value(argv, "workdir") == want


def test_has_flag_and_wants_help():
    assert common.has_flag(["p", "--config=c.py"], "config")
    assert common.has_flag(["p", "--config", "c.py"], "config")
    assert not common.has_flag(["p", "--config.model=lrr"], "config")
    assert common.wants_help(["p", "--workdir=w", "-h"])
    assert not common.wants_help(["p", "--", "--help"])


def test_run_config_is_the_saved_config(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    default = common.run_config("lapseg eval", ["lapseg eval"], str(tmp_path))
    module, _, argument = default.partition(":")
    assert module.endswith("lapseg/train/config.py") and argument == str(tmp_path / "config.json")
    (tmp_path / "sub").mkdir()
    with pytest.raises(SystemExit, match="config.json does not exist.*pass --config"):
        common.run_config("lapseg eval", ["lapseg eval"], str(tmp_path / "sub"))
    with pytest.raises(SystemExit, match="work dir .*nowhere does not exist"):
        common.run_config("lapseg eval", ["lapseg eval"], str(tmp_path / "nowhere"))
    # With --config on the command line, the work dir is not read.
    assert common.run_config("lapseg eval", ["lapseg eval", "--config=c.py"], "nowhere")


def test_inference_options():
    flag_values = flags.FlagValues()
    common.define_inference_flags(flag_values)
    flag_values(["p", "--scales=0.5,1", "--flip", "--tile_size=64,96", "--bucket=32"])
    assert common.inference_options("p", flag_values) == {
        "tile_size": (64, 96), "tile_overlap": 1 / 3, "scales": (0.5, 1.0), "flip": True,
        "bucket": 32}
    flag_values(["p", "--tile_size=64"])
    with pytest.raises(SystemExit, match="--tile_size takes 'H,W'"):
        common.inference_options("p", flag_values)
