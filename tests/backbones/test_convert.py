"""`lapseg convert-weights` (lapseg/cli/convert_weights.py): .pth/.npz -> .npz with the same
keys, optionally checked (`lapseg.backbones.weights.check_state_dict`)."""

import re

import numpy as np
import pytest

from lapseg import backbones, cli


def test_converts_pth_to_npz_readable_without_torch(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from torch_backbones import ResNet

    reference = ResNet(18)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    code = cli.main(["convert-weights", str(tmp_path / "resnet18.pth"), str(tmp_path / "r18.npz"),
                     "--arch", "resnet18"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    converted = backbones.read_state_dict(tmp_path / "r18.npz")
    expected = reference.state_dict()
    assert sorted(converted) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(converted[key], value.numpy())


def test_check_failure_lists_keys_and_writes_nothing(tmp_path, capsys):
    np.savez(tmp_path / "in.npz", **{"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)})
    code = cli.main(["convert-weights", str(tmp_path / "in.npz"), str(tmp_path / "out.npz"),
                     "--arch", "resnet18"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "missing" in err and "layer4.1.bn2.running_var" in err
    assert not (tmp_path / "out.npz").exists()


def test_without_arch_converts_unchecked(tmp_path):
    np.savez(tmp_path / "in.npz", **{"anything": np.arange(3)})
    assert cli.main(["convert-weights", str(tmp_path / "in.npz"), str(tmp_path / "out.npz")]) == 0
    converted = backbones.read_state_dict(tmp_path / "out.npz")
    np.testing.assert_array_equal(converted["anything"], [0, 1, 2])


def test_missing_input_is_one_line(tmp_path, capsys):
    assert cli.main(["convert-weights", str(tmp_path / "nope.pth"), str(tmp_path / "out.npz")]) == 2
    assert re.fullmatch(r"lapseg convert-weights: no such file: .*nope\.pth — .*\n",
                        capsys.readouterr().err)


def test_check_state_dict_is_a_library_function():
    from lapseg.backbones import weights  # pylint: disable=import-outside-toplevel

    with pytest.raises(ValueError, match="missing"):
        weights.check_state_dict({}, "resnet18")
    with pytest.raises(ValueError, match="deep_stem is for ResNets"):
        weights.check_state_dict({}, "vgg16", deep_stem=True)
