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


def tensorboard_events(directory):
    """Every `Event` of the TensorBoard event files in `directory`, read back from their
    TFRecord framing (u64 length, u32 crc, payload, u32 crc) with tensorboardX's protos."""
    import pathlib  # pylint: disable=import-outside-toplevel
    import struct  # pylint: disable=import-outside-toplevel

    from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel

    events = []
    for path in sorted(pathlib.Path(directory).glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
            offset += 12 + length + 4
    return events


def test_the_log_has_each_groups_rate_each_classs_iou_and_pictures(tmp_path, monkeypatch):
    """metrics.jsonl and TensorBoard get every group's learning rate per logged step, and
    every class's IoU and `preview_images` prediction pictures per evaluation; TensorBoard's
    event file is read back."""
    import json  # pylint: disable=import-outside-toplevel

    import numpy as np  # pylint: disable=import-outside-toplevel

    from lapseg import data, models  # pylint: disable=import-outside-toplevel
    from lapseg.train import loop, optim  # pylint: disable=import-outside-toplevel
    from tests.train import toy  # pylint: disable=import-outside-toplevel

    monkeypatch.setitem(models._MODELS, "toy", "tests.train.toy:toy")  # pylint: disable=protected-access
    config = toy.tiny_config(str(tmp_path / "tfds"), steps=3)
    config.optimizer.warmup_steps = 2
    config.optimizer.lr_multipliers = (("*/bias", 2.0), ("head/*", 0.5))
    config.preview_images = 2
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
    summaries = {}
    for event in tensorboard_events(tmp_path / "run" / "tensorboard"):
        for value in event.summary.value:
            summaries.setdefault(value.tag, []).append((event.step, value))
    last_lr = summaries["train/lr_x0.5"][-1]
    assert last_lr[0] == 3 and abs(last_lr[1].simple_value - lines[-2]["lr_x0.5"]) < 1e-7
    for name, iou in zip(names, result["per_class_iou"]):
        step, value = summaries[f"eval/iou/{name}"][-1]
        assert step == 3 and abs(value.simple_value - iou) < 1e-6
    assert sorted(t for t in summaries if t.startswith("preview/")) == ["preview/0", "preview/1"]
    import io as io_lib  # pylint: disable=import-outside-toplevel

    import PIL.Image  # pylint: disable=import-outside-toplevel

    step, value = summaries["preview/0"][-1]
    picture = PIL.Image.open(io_lib.BytesIO(value.image.encoded_image_string))
    assert step == 3 and picture.size == (value.image.width, value.image.height)
    assert picture.width >= 3 * 512  # input | prediction | ground truth, each >= 512 px
