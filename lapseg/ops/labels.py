"""Label maps at public boundaries: class ids in `[0, C)` or the ignore label, nothing else.

Losses and metrics call `check_labels` on their labels. On concrete arrays (eager calls,
a user's own loop) it raises a ValueError naming the first bad id; under `jax.jit` the
values are not known and it checks nothing, which keeps the jitted train and eval steps
free of host syncs: lapseg's own data is validated when its ArrayRecord files are built
(`lapseg.data.camvid`, `lapseg.data.folder`). A label of -1 with ignore label 255, say,
would otherwise be silently dropped or read as another class.
"""

import jax
import numpy as np


def check_shape(labels, shape, *, against: str, name: str = "labels") -> None:
    """Raises ValueError unless `labels.shape == shape` (the `[N, H, W]` that `against`,
    e.g. 'logits [N, H, W, C]', implies). Shapes only: free under `jit`."""
    if tuple(np.shape(labels)) != tuple(shape):
        raise ValueError(f"{name} of shape {tuple(np.shape(labels))} do not match {against}: "
                         f"expected {tuple(shape)}; labels are [N, H, W] (height before width)")


def check_labels(labels, num_classes: int, ignore_label: int, *, name: str = "labels") -> None:
    """Raises ValueError if concrete int `labels` hold an id outside `[0, num_classes)` other
    than `ignore_label`; no-op on traced arrays (inside `jit`)."""
    if isinstance(labels, jax.core.Tracer):
        return
    values = np.unique(np.asarray(labels))
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_label)]
    if bad.size:
        raise ValueError(f"{name} hold id {int(bad[0])}: expected class ids 0..{num_classes - 1} "
                         f"or the ignore label {ignore_label}; fix the labels or pass the "
                         f"dataset's ignore_label")
