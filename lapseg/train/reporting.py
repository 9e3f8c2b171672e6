"""Where training talks: a progress line, metrics as JSON lines, TensorBoard events.

`metrics.jsonl` in the work dir holds one JSON object per logged step (`{"step": ..,
"split": "train"|"eval", ...}`); TensorBoard event files go to `workdir/tensorboard`
(written with tensorboardX, which needs no TensorFlow).
"""

import json
import os
import sys
import time

import numpy as np
import tensorboardX


class MetricWriter:
    """Appends scalars to `workdir/metrics.jsonl` and TensorBoard; only process 0 writes."""

    def __init__(self, workdir, *, enabled=True):
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
        self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step, split, scalars):
        if not self.enabled:
            return
        scalars = {k: float(np.asarray(v)) for k, v in scalars.items() if np.ndim(v) == 0}
        self._jsonl.write(json.dumps({"step": int(step), "split": split, **scalars}) + "\n")
        self._jsonl.flush()
        for key, value in scalars.items():
            self._tb.add_scalar(f"{split}/{key}", value, int(step))

    def close(self):
        if self.enabled:
            self._jsonl.close()
            self._tb.close()


class InputWait:
    """`input_wait_fraction`: the share of each logging interval's wall time in which the
    device sat idle waiting for the next training batch.

    The loop adds, per step, the seconds it waited for a batch while no step was running
    (`lapseg.data.pipeline.DevicePrefetch.get`): with asynchronous dispatch the loop runs up to
    dozens of steps ahead of the device, so time spent in `next(loader)` while earlier
    steps still compute costs nothing and is not counted. `interval()` returns the
    fraction since the previous call (or since construction) and starts a new interval.
    """

    def __init__(self):
        self._start = time.perf_counter()
        self._waited = 0.0

    def add(self, seconds):
        self._waited += seconds

    def interval(self) -> float:
        now = time.perf_counter()
        fraction = self._waited / max(now - self._start, 1e-9)
        self._start, self._waited = now, 0.0
        return fraction


class Progress:
    """A one-line progress report: step, step/s, images/s, loss, and the input-wait
    fraction of the interval (`InputWait`)."""

    def __init__(self, total_steps, batch_size, *, enabled=True, stream=sys.stderr):
        self.total_steps = total_steps
        self.batch_size = batch_size
        self.enabled = enabled
        self.stream = stream
        self._last_time = time.perf_counter()
        self._last_step = None
        self._tty = stream.isatty()

    def update(self, step, loss, wait_fraction):
        now = time.perf_counter()
        if self._last_step is None:
            self._last_step, self._last_time = step, now
            return
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        if not self.enabled:
            return
        width = 24
        done = int(width * step / max(self.total_steps, 1))
        line = (f"[{'#' * done}{'.' * (width - done)}] {step}/{self.total_steps} "
                f"{rate:.2f} step/s {rate * self.batch_size:.1f} img/s loss {loss:.4f} "
                f"input-wait {100 * wait_fraction:.0f}%")
        self.stream.write(("\r" + line) if self._tty else (line + "\n"))
        self.stream.flush()

    def close(self):
        if self.enabled and self._tty:
            self.stream.write("\n")


def summary_table(result, class_names):
    """Final eval report: per-class IoU, mIoU and pixel accuracy as aligned text."""
    width = max(len(n) for n in class_names) + 2
    lines = [f"{'class':<{width}} IoU"]
    for name, iou in zip(class_names, result["per_class_iou"]):
        lines.append(f"{name:<{width}} {iou:.4f}")
    lines.append(f"{'mIoU':<{width}} {result['miou']:.4f}")
    lines.append(f"{'pixel acc':<{width}} {result['pixel_accuracy']:.4f}")
    return "\n".join(lines)
