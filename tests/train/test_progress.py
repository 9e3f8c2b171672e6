"""`lapseg.train.reporting.Progress`: a line from the first step, an ETA after it, plain
lines (no escape codes) off a terminal, a tqdm bar on one, nothing from other processes."""

import io
import re

from lapseg.train import reporting


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_from_the_first_step_with_an_eta():
    stream = io.StringIO()
    progress = reporting.Progress(100, 8, stream=stream)
    progress.begin(0)
    progress.update(1, 2.5, 0.0)
    progress.update(51, 1.25, 0.1)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("step 1/100 first step (compilation included)")
    assert lines[0].endswith("loss 2.5000")
    assert re.fullmatch(r"step 51/100 [\d.]+ step/s ETA \d+:\d\d [\d.]+ img/s loss 1\.2500 "
                        r"input-wait 10%", lines[1]), lines[1]
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_a_terminal_gets_a_bar_that_starts_at_the_resumed_step():
    stream = _Terminal()
    progress = reporting.Progress(100, 8, stream=stream)
    progress.begin(40)
    progress.update(41, 0.5, 0.0)
    progress.update(60, 0.25, 0.0)
    progress.close()
    text = stream.getvalue()
    assert "60/100" in text and "loss 0.2500" in text
    assert "\r" in text  # redrawn in place


def test_other_processes_write_nothing():
    stream = _Terminal()
    progress = reporting.Progress(100, 8, enabled=False, stream=stream)
    progress.begin(0)
    progress.update(1, 0.5, 0.0)
    progress.update(50, 0.5, 0.0)
    progress.close()
    assert stream.getvalue() == ""


def test_the_log_has_each_groups_rate_and_each_classs_iou(tmp_path, monkeypatch):
    """metrics.jsonl (and TensorBoard) get every group's learning rate per logged step and
    every class's IoU per evaluation."""
    import json  # pylint: disable=import-outside-toplevel

    import numpy as np  # pylint: disable=import-outside-toplevel

    from lapseg import data, models  # pylint: disable=import-outside-toplevel
    from lapseg.train import loop, optim  # pylint: disable=import-outside-toplevel
    from tests.train import toy  # pylint: disable=import-outside-toplevel

    monkeypatch.setitem(models._MODELS, "toy", "tests.train.toy:toy")  # pylint: disable=protected-access
    config = toy.tiny_config(str(tmp_path / "tfds"), steps=3)
    config.optimizer.warmup_steps = 2
    config.optimizer.lr_multipliers = (("*/bias", 2.0), ("head/*", 0.5))
    result = loop.train_and_evaluate(config, str(tmp_path / "run"))
    lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    schedule = optim.learning_rate_schedule(config.optimizer, 3)
    for line in (line for line in lines if line["split"] == "train"):
        base = float(schedule(line["step"] - 1))
        np.testing.assert_allclose([line["lr"], line["lr_x0.5"], line["lr_x2"]],
                                   [base, 0.5 * base, 2 * base], rtol=1e-6)
    evaluation = [line for line in lines if line["split"] == "eval"][-1]
    names = data.dataset_info("shapes").class_names
    np.testing.assert_allclose([evaluation[f"iou/{n}"] for n in names], result["per_class_iou"],
                               rtol=1e-6)
