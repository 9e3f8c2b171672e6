"""What each config field means, in one line: `lapseg config` prints it beside the value.

The training fields are described here (their defaults and longer notes are in
`lapseg/train/config.py`); the data fields come from the `name: meaning` list in the
docstring of `lapseg.data.pipeline.default_config`, their one source. A field without an
entry of its own takes its nearest described parent's (`loss.weights.logits` ->
`loss.weights`, a recipe's extra `loss.border_weight` -> `loss`).
"""

import functools
import re

TRAINING = {
    "seed": "initialisation, data order, augmentation and dropout all derive from it",
    "model": "a name of lapseg.models.names(); the model is create_model(model, num_classes, **model_kwargs)",
    "model_kwargs": "keyword arguments of the model (decoder settings, backbone, backbone_kwargs)",
    "model_kwargs.backbone": "a name of lapseg.backbones.names()",
    "model_kwargs.backbone_kwargs": "keyword arguments of the backbone (output_stride, width, ...)",
    "dtype": "compute dtype, 'float32' or 'bfloat16' (parameters stay float32)",
    "basis": "label-fitted constants (LRR bases, the DUpsampling matrix), fitted before step 0",
    "basis.path": "where the fitted constants are kept; '' = <workdir>/basis.npz (an existing file is reused)",
    "basis.num_batches": "label batches read for the fit (0: all)",
    "basis.lrr_scale": "LRR bases at unit flat-field gain ('flat_field') or at the reference's scale",
    "init.backbone_weights": ".pth / .npz / .safetensors ImageNet weights for the backbone (torchvision layout)",
    "init.checkpoint": "another lapseg run (work dir or step dir): every variable of matching path and shape is copied",
    "optimizer.learning_rate": "base learning rate of SGD with momentum",
    "optimizer.momentum": "SGD momentum",
    "optimizer.nesterov": "Nesterov momentum",
    "optimizer.weight_decay": "L2 weight decay, added to the gradient",
    "optimizer.weight_decay_mask": "decayed parameters: 'kernels' (ndim > 1) or 'all'",
    "optimizer.warmup_steps": "linear warm-up steps before the poly decay",
    "optimizer.lr_power": "poly decay power: lr * (1 - step / num_train_steps) ** lr_power",
    "optimizer.lr_multipliers": "ordered (path pattern, multiplier) pairs, first match wins; others 1x",
    "loss": "a keyword argument of the model's loss (lapseg.losses.for_model)",
    "loss.weights": "model output -> loss weight (LRR: level_32 ... level_4; aux heads: aux)",
    "loss.class_weights": "one weight per class for the cross-entropy (None: all 1)",
    "num_train_steps": "training steps (the poly schedule ends here)",
    "log_every_steps": "steps between progress lines and train metrics",
    "eval_every_steps": "steps between evaluations on the validation split (and the best/ copy)",
    "checkpoint_every_steps": "steps between checkpoints (atomic; a run resumes from the newest)",
    "keep_checkpoints": "checkpoints kept in <workdir>/checkpoints",
    "preview_images": "validation images drawn with their predictions at every evaluation (TensorBoard)",
    "wandb_project": "a Weights & Biases project that also gets every metric and image (None: off)",
    "nonfinite": "a non-finite loss or gradient: 'stop' (raise, nothing saved) or 'skip' the update",
    "distributed.enabled": "join a multi-process job (settings auto-detected: TPU pod, SLURM, Open MPI)",
    "distributed.coordinator_address": "host:port of process 0 (a manual multi-process launch)",
    "distributed.num_processes": "processes in the job (a manual launch)",
    "distributed.process_id": "this process's index (a manual launch)",
    "distributed.local_device_ids": "the accelerators this process uses (None: JAX's choice)",
    "distributed.initialization_timeout_seconds": "seconds to wait for every process to join",
    "distributed.heartbeat_timeout_seconds": "seconds after which a dead process makes the others exit",
    "distributed.shutdown_timeout_seconds": "seconds to wait for every process at exit",
    "mesh.spatial": "devices that share each image, split along its height (the rest split the batch)",
}


@functools.cache
def _data_meanings() -> dict:
    """`data.<name>` -> meaning, from `default_config`'s docstring (`name: text`, continued
    on deeper-indented lines)."""
    from lapseg.data import pipeline  # pylint: disable=import-outside-toplevel

    meanings, name = {}, None
    for line in (pipeline.default_config.__doc__ or "").splitlines():
        entry = re.match(r"^    (\w+): (.*)", line)
        if entry:
            name = f"data.{entry.group(1)}"
            meanings[name] = entry.group(2).strip()
        elif name and line.startswith("      ") and line.strip():
            meanings[name] += " " + line.strip()
        else:
            name = None
    return meanings


def meaning(name: str) -> str | None:
    """The meaning of the dotted field `name`, or of its nearest described parent; None
    when neither is described."""
    known = {**TRAINING, **_data_meanings()}
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return known[".".join(parts[:end])]
    return None
