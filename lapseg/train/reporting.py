"""Where training talks: a progress line, metrics as JSON lines, TensorBoard events, and
optionally Weights & Biases.

`metrics.jsonl` in the work dir holds one JSON object per logged step (`{"step": ..,
"split": "train"|"eval", ...}`); TensorBoard event files go to `workdir/tensorboard`
(written with tensorboardX, which needs no TensorFlow): scalars as `<split>/<name>`,
evaluation pictures as images. With `wandb_project`, the same scalars and images go to
that Weights & Biases project too, as one W&B run per work dir (its id derived from the
work dir's path, so a resumed run continues it).
"""

import hashlib
import json
import os
import sys
import time

import numpy as np
import tensorboardX
import tqdm


class MetricWriter:
    """Appends scalars to `workdir/metrics.jsonl` and TensorBoard (and W&B with
    `wandb_project`, `config` being the run's settings there); only process 0 writes."""

    def __init__(self, workdir, *, enabled=True, wandb_project=None, config=None):
        self.enabled = enabled
        self._tb = self._wandb = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
        self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))
        if wandb_project:
            import wandb  # pylint: disable=import-outside-toplevel  (an optional extra)

            path = os.path.abspath(workdir)
            self._wandb = wandb.init(
                project=wandb_project, dir=path, name=os.path.basename(path), config=config,
                id=hashlib.sha1(path.encode()).hexdigest()[:16], resume="allow")

    def write(self, step, split, scalars):
        if not self.enabled:
            return
        scalars = {k: float(np.asarray(v)) for k, v in scalars.items() if np.ndim(v) == 0}
        self._jsonl.write(json.dumps({"step": int(step), "split": split, **scalars}) + "\n")
        self._jsonl.flush()
        for key, value in scalars.items():
            self._tb.add_scalar(f"{split}/{key}", value, int(step))
        if self._wandb is not None:
            self._wandb.log({f"{split}/{k}": v for k, v in scalars.items()}, step=int(step))

    def write_images(self, step, images):
        """`images`: name -> uint8 `[H, W, 3]`, each a TensorBoard image at `step`."""
        if not self.enabled:
            return
        for name, image in images.items():
            self._tb.add_image(name, np.asarray(image, np.uint8), int(step), dataformats="HWC")
        self._tb.flush()
        if self._wandb is not None:
            import wandb  # pylint: disable=import-outside-toplevel

            self._wandb.log({name: wandb.Image(image) for name, image in images.items()},
                            step=int(step))

    def close(self):
        if self.enabled:
            self._jsonl.close()
            self._tb.close()
            if self._wandb is not None:
                self._wandb.finish()


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
    """Training progress: step, ETA, step/s, images/s, loss and the input-wait fraction of
    the interval (`InputWait`), from the first step on.

    On a terminal a tqdm bar (redrawn in place; its ETA from tqdm's smoothed rate); on
    anything else (a log file, CI) one plain line per update with the same fields and an
    ETA from the last interval's rate, so logs get no escape codes. The first update (the
    loop's first step, compilation included) shows the step and loss; rates start from it.
    """

    def __init__(self, total_steps, batch_size, *, enabled=True, stream=sys.stderr):
        self.total_steps = total_steps
        self.batch_size = batch_size
        self.enabled = enabled
        self.stream = stream
        self._start = self._last_time = time.perf_counter()
        self._last_step = None
        self._tty = enabled and stream.isatty()
        self._bar = None

    def begin(self, step):
        """The run starts (or resumes) at `step`: the bar starts there, and the clock."""
        self._start = self._last_time = time.perf_counter()
        self._last_step = None
        if self._tty and self._bar is None:
            self._bar = tqdm.tqdm(total=self.total_steps, initial=step, unit="step",
                                  file=self.stream, dynamic_ncols=True, smoothing=0.3)

    def update(self, step, loss, wait_fraction):
        now = time.perf_counter()
        first = self._last_step is None
        rate = None if first else (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        if not self.enabled:
            return
        fields = f"loss {loss:.4f}"
        if rate is not None:
            fields = (f"{rate * self.batch_size:.1f} img/s {fields} "
                      f"input-wait {100 * wait_fraction:.0f}%")
        if self._bar is not None:
            self._bar.set_postfix_str(fields, refresh=False)
            self._bar.update(step - self._bar.n)
            return
        if first:
            timing = f"first step (compilation included) {now - self._start:.1f} s"
        else:
            eta = tqdm.tqdm.format_interval((self.total_steps - step) / max(rate, 1e-9))
            timing = f"{rate:.2f} step/s ETA {eta}"
        self.stream.write(f"step {step}/{self.total_steps} {timing} {fields}\n")
        self.stream.flush()

    def close(self):
        if self._bar is not None:
            self._bar.close()


def summary_table(result, class_names):
    """Final eval report: per-class IoU, mIoU and pixel accuracy as aligned text."""
    width = max(len(n) for n in class_names) + 2
    lines = [f"{'class':<{width}} IoU"]
    for name, iou in zip(class_names, result["per_class_iou"]):
        lines.append(f"{name:<{width}} {iou:.4f}")
    lines.append(f"{'mIoU':<{width}} {result['miou']:.4f}")
    lines.append(f"{'pixel acc':<{width}} {result['pixel_accuracy']:.4f}")
    return "\n".join(lines)
