"""`train_and_evaluate(config, workdir)`: the main job, top to bottom.

Set-up (dataset, model, optimiser, mesh, state or the latest checkpoint), then a plain
loop: next batch -> jitted step -> log / eval / checkpoint. Everything stateful lives
here; the step itself (`lapseg.train.step`) is a pure function.

Divergence guard: a non-finite loss or gradient norm must never reach the disk, yet a
host sync per step would stall the device. So each step's two scalars wait on the device
(`FiniteGuard`) and are read where the loop syncs anyway (a logging step) and before
anything reads or writes the state (evaluation, `best/`, a checkpoint). A divergence
between two log steps is thus still found, and named by its step, before the next write;
with `config.nonfinite = 'stop'` it raises `DivergenceError`. The check comes before
`checkpointer.save` because orbax deletes the oldest checkpoint (`keep_checkpoints`)
inside the save.

Several processes (`config.distributed`, `lapseg.train.distributed`): every process runs
this function; process 0 builds the dataset and fits the bases first while the others
wait, then each reads its rows of every global batch. Process 0 alone logs and writes
`config.json`, metrics and `best.json`; checkpoints are written by all together (orbax).
"""

import contextlib
import dataclasses
import functools
import json
import logging
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lapseg import bases
from lapseg import data as data_lib
from lapseg import losses
from lapseg import metrics as metrics_lib
from lapseg import models
from lapseg.data import pipeline as data_pipeline
from lapseg.train import checkpoint as checkpoint_lib
from lapseg.train import config as config_lib
from lapseg.train import distributed as distributed_lib
from lapseg.train import fitted as fitted_lib
from lapseg.train import init as init_lib
from lapseg.train import lock as lock_lib
from lapseg.train import reporting as log_lib
from lapseg.train import optim
from lapseg.train import preview as preview_lib
from lapseg.train import state as state_lib
from lapseg.train import step as step_lib

log = logging.getLogger(__name__)


class DivergenceError(RuntimeError):
    """Training reached a non-finite loss or gradient norm (`config.nonfinite='stop'`), or
    a non-finite state (either mode).

    Raised before anything was evaluated or written from the diverged state: every
    checkpoint and `best/` on disk is from an earlier, finite step. `step` is the first
    non-finite step (with `in_state`: the step whose state was found non-finite after
    finite losses and gradient norms); `loss` and `grad_norm` its (last) values.
    """

    def __init__(self, step, loss, grad_norm, *, in_state=False):
        self.step, self.loss, self.grad_norm = int(step), float(loss), float(grad_norm)
        values = f"loss {self.loss:.4g}, grad_norm {self.grad_norm:.4g}"
        super().__init__(
            f"training diverged by step {self.step} (non-finite train state; last {values})"
            if in_state else f"training diverged at step {self.step} ({values})")


class FiniteGuard:
    """Watches each step's loss and gradient norm without a host sync per step.

    `record` keeps the step's scalars as device arrays; `check` fetches all of them at
    once and looks for the first non-finite step: in 'stop' mode it raises
    `DivergenceError`, in 'skip' mode (the step already dropped the update) it counts it in
    `skipped`. `check_state` adds a test of the state itself before it is written.
    """

    def __init__(self, mode):
        self.mode = mode
        self.skipped = 0
        self._unread = []  # (step, loss, grad_norm), the scalars on the device
        self._last = (0, 0.0, 0.0)  # the last step read, for messages
        self._state_checked = None  # the step whose state `check_state` last passed

    def record(self, step, metrics):
        self._unread.append((step, metrics["loss"], metrics["grad_norm"],
                              metrics.get("label_errors", 0)))

    def check(self):
        """Reads the recorded steps (they are computed by now at a log step: no stall).

        Also raises `DataError` at the first step whose batch held label ids outside
        `0..C-1` other than the ignore label (the step's `label_errors`): they are never
        trained on or scored, so bad data would otherwise train quietly.
        """
        unread, self._unread = jax.device_get(self._unread), []
        for step, _, _, errors in unread:
            if errors:
                raise data_lib.DataError(
                    f"the training batch of step {step} holds {int(errors)} label pixels that "
                    "are neither a class id nor the ignore label; fix the dataset's labels "
                    "(or its ignore label)")
        unread = [item[:3] for item in unread]
        bad = [(step, loss, norm) for step, loss, norm in unread
               if not (np.isfinite(loss) and np.isfinite(norm))]
        if bad and self.mode == "stop":
            raise DivergenceError(*bad[0])
        if bad:
            self.skipped += len(bad)
            log.warning("skipped %d non-finite step(s), the first at step %d (loss %.4g, "
                        "grad_norm %.4g); %d in this run", len(bad), *bad[0], self.skipped)
        if unread:
            self._last = unread[-1]

    def check_state(self, step, state):
        """`check`, then that `state` is finite: before `state` is evaluated or written.

        The flags cover the loss and the gradients; an update can still overflow to inf
        from finite ones. One device reduction, once per step however many writes follow.
        """
        self.check()
        if self._state_checked == step:
            return
        if not bool(step_lib.all_finite(state)):
            _, loss, grad_norm = self._last
            raise DivergenceError(step, loss, grad_norm, in_state=True)
        self._state_checked = step


def _run_meta(config, info):
    """What a checkpoint pins: the model, and the preprocessing contract that eval, predict
    and export must repeat (`checkpoint_lib.contract`)."""
    return {"model": config.model, "dataset": config.data.dataset,
            **checkpoint_lib.contract(config, info)}


def evaluate(state, eval_step, mesh, loader, num_classes):
    """Whole-split summary (`lapseg.metrics.evaluate`); confusion matrices summed on device."""
    return metrics_lib.evaluate(
        lambda batch: {"confusion": eval_step(state, step_lib.shard_batch(batch, mesh))},
        loader, num_classes=num_classes)


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains `config` in `workdir`, resuming from its latest checkpoint if any.

    Returns:
      The final evaluation on the dataset's `val` split: `{'miou', 'per_class_iou',
      'pixel_accuracy', 'class_pixels', 'step'}` (only `step` for a dataset without a
      validation split, which trains without evaluating), and `skipped_steps`
      (non-finite steps skipped by this process, `config.nonfinite='skip'`).

    Raises:
      ConfigError: a config field training cannot use (`lapseg.train.config.validate`), or
        a model other than the one `workdir`'s run was trained with.
      DivergenceError: a non-finite step with `config.nonfinite == 'stop'` (nothing of it
        was saved), or a non-finite state in either mode.
    """
    config_lib.validate(config)
    distributed_lib.initialize(config.get("distributed"))
    workdir = os.path.abspath(workdir)
    # One run per work dir (process 0 of a job holds the lock for all), before any write.
    with lock_lib.WorkdirLock(workdir) if distributed_lib.is_main() else contextlib.nullcontext():
        return _train_and_evaluate(config, workdir)


@dataclasses.dataclass
class _Run:
    """What one training run is made of, once its config has been checked against the
    dataset, the devices and the model (`_prepare`)."""

    config: Any
    workdir: str
    is_main: bool
    info: data_lib.DatasetInfo
    mesh: Any
    tx: Any
    loss_fn: Any
    model: Any
    abstract: Any  # the train state's shapes and shardings
    image_shape: tuple
    train_split: str
    eval_split: str | None
    meta: dict  # what every checkpoint of the run records (`_run_meta`)


def _train_and_evaluate(config, workdir):
    run = _prepare(config, workdir)
    train_iter, eval_batches = _open_data(run)
    checkpointer = checkpoint_lib.Checkpointer(
        os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints)
    trainer = None
    try:
        state = _initial_state(run, checkpointer, train_iter)
        trainer = _Trainer(run, checkpointer, train_iter, eval_batches)
        state, step = trainer.train(state)
    finally:
        # Also on an exception or Ctrl-C: let an async save in flight reach the disk.
        checkpointer.wait()
        checkpointer.close()
        train_iter.close()
        if trainer is not None:
            trainer.close()
    result = trainer.result
    if result is None and eval_batches is not None:  # restored at the last step
        result = trainer.evaluate(state)
    result = {} if result is None else result
    result["step"] = step
    result["skipped_steps"] = trainer.guard.skipped
    if run.is_main and "miou" in result:
        print(log_lib.summary_table(result, run.info.class_names))
    return result


def _prepare(config, workdir) -> _Run:
    """Checks the config against the work dir, the dataset, the devices and the model, and
    builds the optimiser, loss and model; lists the dataset's splits (process 0 builds the
    dataset first, then the others read it)."""
    is_main = distributed_lib.is_main()
    info = data_lib.dataset_info(config.data.dataset, config.data.source_dir)
    config_lib.check_eval_size(config, info)
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
        config_lib.check_resumable(config, workdir)
    mesh = step_lib.make_mesh(spatial=config.get("mesh", {}).get("spatial", 1))
    if config.data.batch_size % step_lib.data_size(mesh):
        raise step_lib.MeshError(
            f"config.data.batch_size = {config.data.batch_size} is not divisible by the "
            f"{step_lib.data_size(mesh)} devices of the mesh's 'data' axis ({jax.device_count()} "
            f"devices / config.mesh.spatial = {step_lib.spatial_size(mesh)})")
    crop = tuple(config.data.crop_size or info.image_size)
    if error := step_lib.spatial_error(mesh, crop[0]):
        raise step_lib.MeshError(error)
    try:
        tx = optim.make_optimizer(config.optimizer, config.num_train_steps)
    except ValueError as err:  # e.g. a malformed lr_multipliers entry, named by the message
        raise config_lib.ConfigError(f"config.{err}", "see lapseg/train/optim.py") from err
    loss_fn = losses.for_model(config.model, config.loss, ignore_label=info.ignore_label)
    image_shape = (1, *crop, 3)
    model, abstract = _build(config, info.num_classes, tx, image_shape)
    _check_loss(config, model, loss_fn, abstract, image_shape, info.num_classes)
    location = data_lib.location(config.data)
    train_split = config.data.get("train_split", "train")
    eval_split = _eval_split(config, location, is_main) if is_main else None
    if jax.process_count() > 1:
        if is_main:
            for split in (train_split, eval_split):
                if split is not None:
                    data_lib.load_source(config.data.dataset, split, **location)
        distributed_lib.sync("lapseg_dataset_ready")
        if not is_main:
            eval_split = _eval_split(config, location, is_main)
    if is_main:
        log.info("learning-rate groups:\n%s",
                 optim.describe_groups(abstract.params, config.optimizer.lr_multipliers))
    replicated = step_lib.replicated(mesh)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract)
    return _Run(config=config, workdir=workdir, is_main=is_main, info=info, mesh=mesh, tx=tx,
                loss_fn=loss_fn, model=model, abstract=abstract, image_shape=image_shape,
                train_split=train_split, eval_split=eval_split, meta=_run_meta(config, info))


def _open_data(run: _Run):
    """The training batches (put onto the mesh in a background thread, `device_prefetch`
    ahead of the step) and the evaluation batches (None without a validation split: built,
    and the split checked, now rather than after hours of training; iterated per
    evaluation)."""
    config = run.config

    def loader(split, train):
        return data_lib.create_loader(
            config.data, split, data_dir=config.data.data_dir, seed=config.seed, train=train,
            process_index=jax.process_index(), process_count=jax.process_count())

    train_iter = data_pipeline.prefetch_to_device(
        iter(loader(run.train_split, train=True)),
        functools.partial(step_lib.shard_batch, mesh=run.mesh),
        config.data.get("device_prefetch", 2))
    eval_batches = None if run.eval_split is None else loader(run.eval_split, train=False)
    return train_iter, eval_batches


def _initial_state(run: _Run, checkpointer, train_iter):
    """The latest readable checkpoint's state (and data position), or a fresh one."""
    if checkpointer.latest_step() is not None:
        state = checkpointer.restore(run.abstract, meta=run.meta, data_iterator=train_iter)
        if run.is_main:
            log.info("resumed from step %d", int(state.step))
        return state
    return _fresh_state(run)


def _fresh_state(run: _Run):
    """Initialise, apply `config.init`, attach the label-fitted constants."""
    config, model = run.config, run.model
    replicated = step_lib.replicated(run.mesh)
    init = jax.jit(lambda rng: state_lib.init_variables(model, rng, run.image_shape),
                   out_shardings=replicated)
    variables = init(jax.random.key(config.seed))
    if init_lib.requested(config):  # on host copies: every process reads the files
        variables = init_lib.apply(config, jax.device_get(variables),
                                   arch=init_lib.backbone_arch(model))
    if run.is_main:  # fitted if missing: by process 0, the others read its file
        path = fitted_lib.ensure(config, run.workdir)
    distributed_lib.sync("lapseg_bases_ready")
    if not run.is_main:
        path = fitted_lib.ensure(config, run.workdir)
    fitted = bases.load(path, num_classes=run.info.num_classes) if path else {}
    if init_lib.requested(config) or fitted:  # host values: replicated only if equal
        distributed_lib.assert_same_everywhere(
            (variables if init_lib.requested(config) else (), fitted),
            "the initial variables (config.init, the bases file)")

    def create(variables):
        return state_lib.create_train_state(bases.attach(variables, fitted), run.tx)

    return jax.jit(create, out_shardings=replicated)(variables)


def _learning_rates(config):
    """`step -> {'lr': the base rate of step `step` (1-based, as logged), 'lr_x<m>': m x it
    for each multiplier m != 1 of config.optimizer.lr_multipliers}`: the rates of each
    parameter group in that step (TensorBoard's `train/lr*`)."""
    schedule = optim.learning_rate_schedule(config.optimizer, config.num_train_steps)
    multipliers = sorted({m for _, m in optim.check_rules(config.optimizer.lr_multipliers)} - {1.0})

    def rates(step):
        base = float(schedule(step - 1))  # the rate of the step just taken (count step - 1)
        return {"lr": base, **{f"lr_x{m:g}": m * base for m in multipliers}}

    return rates


class _Trainer:
    """The training loop of one run: step, log, evaluate (and keep `best/`), checkpoint."""

    def __init__(self, run: _Run, checkpointer, train_iter, eval_batches):
        config, info = run.config, run.info
        self.run, self.checkpointer = run, checkpointer
        self.train_iter, self.eval_batches = train_iter, eval_batches
        self.train_step = step_lib.jit_train_step(
            run.mesh, model=run.model, tx=run.tx, loss_fn=run.loss_fn,
            ignore_label=info.ignore_label, nonfinite=config.nonfinite)
        self.eval_step = step_lib.jit_eval_step(
            run.mesh, model=run.model, num_classes=info.num_classes,
            ignore_label=info.ignore_label)
        self.writer = log_lib.MetricWriter(run.workdir, enabled=run.is_main,
                                           wandb_project=config.get("wandb_project"),
                                           config=config.to_dict())
        self.progress = log_lib.Progress(config.num_train_steps, config.data.batch_size,
                                         enabled=run.is_main)
        self.learning_rates = _learning_rates(config)
        self.guard = FiniteGuard(config.nonfinite)
        self.input_wait = log_lib.InputWait()  # device idle for want of a batch, per interval
        self.best_miou = _read_best(run.workdir)
        self.result = None  # the last evaluation
        self._config_saved = False
        self.previewer = _previewer(run)

    def train(self, state):
        """Steps until `num_train_steps` (or a preemption notice): `(state, step)`."""
        config = self.run.config
        total, rng = config.num_train_steps, jax.random.key(config.seed + 1)
        step, in_flight = int(state.step), None  # in_flight: the last step's loss, on device
        first = step + 1
        self.progress.begin(step)
        while step < total:
            batch, waited = self.train_iter.get(
                lambda: in_flight is not None and not in_flight.is_ready())
            self.input_wait.add(waited)
            state, metrics = self.train_step(state, batch, rng)
            in_flight = metrics["loss"]
            step += 1
            self.guard.record(step, metrics)
            if step % config.log_every_steps == 0 or step == total:
                self._log(step, metrics)
            elif step == first:  # on screen once compiled, not only at the first log step
                self.progress.update(step, float(metrics["loss"]), 0.0)
            if self.eval_batches is not None and (step % config.eval_every_steps == 0
                                                  or step == total):
                self._evaluate_and_keep_best(step, state)
            preempted = self.checkpointer.reached_preemption(step)
            if step % config.checkpoint_every_steps == 0 or step == total or preempted:
                self.guard.check_state(step, state)  # before the save deletes an old one
                self._save_config()
                self.checkpointer.save(step, state, meta=self.run.meta,
                                       data_iterator=self.train_iter, force=True)
            if preempted:
                log.warning("preemption notice at step %d: checkpoint saved, exiting", step)
                break
        return state, step

    def evaluate(self, state):
        return evaluate(state, self.eval_step, self.run.mesh, self.eval_batches,
                        self.run.info.num_classes)

    def close(self):
        self.progress.close()
        self.writer.close()

    def _log(self, step, metrics):
        metrics = jax.device_get(metrics)  # syncs: the step time is real here
        self.guard.check()
        metrics.pop("label_errors", None)
        if self.run.config.nonfinite == "skip":
            metrics["skipped_steps"] = self.guard.skipped
        metrics["input_wait_fraction"] = self.input_wait.interval()
        metrics.update(self.learning_rates(step))
        self.writer.write(step, "train", metrics)
        self.progress.update(step, float(metrics["loss"]), metrics["input_wait_fraction"])

    def _evaluate_and_keep_best(self, step, state):
        self.guard.check_state(step, state)  # also covers best/ below
        result = self.result = self.evaluate(state)
        if not result["class_pixels"].sum() and self.run.is_main:
            log.warning("step %d: nothing was scored, every label pixel of the %s split is the "
                        "ignore label (%d)", step, self.run.eval_split, self.run.info.ignore_label)
        self.writer.write(step, "eval", {
            "miou": result["miou"], "pixel_accuracy": result["pixel_accuracy"],
            **{f"iou/{name}": iou for name, iou in zip(self.run.info.class_names,
                                                        result["per_class_iou"])}})
        if self.previewer is not None:
            self.writer.write_images(step, self.previewer(state.variables))
        if result["miou"] > self.best_miou:
            self.best_miou = result["miou"]
            self._save_config()
            _save_best(self.run.workdir, state, self.run.meta, step, self.best_miou)

    def _save_config(self):
        """`config.json` of this run, written before its first checkpoint or `best/` save:
        a run that fails before it saves anything leaves the work dir's config as it was."""
        if self.run.is_main and not self._config_saved:
            config_lib.save(self.run.config, self.run.workdir)
            self._config_saved = True


def _previewer(run: _Run):
    """The evaluation's prediction pictures (`lapseg.train.preview`): the first
    `config.preview_images` images of the evaluation split; None when that is 0, without an
    evaluation split, and in a multi-process job (whose variables are global arrays that
    one process cannot run a forward pass on alone)."""
    count = run.config.get("preview_images", 0)
    if not (count and run.eval_split and run.is_main and jax.process_count() == 1):
        return None
    source = data_lib.load_source(run.config.data.dataset, run.eval_split,
                                  **data_lib.location(run.config.data))
    examples = [source[index] for index in range(min(count, len(source)))]
    return preview_lib.Previewer(run.model, examples, info=run.info,
                                 normalization=run.config.data.normalize)


def _eval_split(config, location, is_main):
    """`'val'` where the dataset has a validation split; otherwise None, said once."""
    splits = data_lib.splits(config.data.dataset, **location)
    if data_lib.VAL in splits:
        return data_lib.VAL
    if is_main:
        log.warning("%s has no validation split (it has %s): training without evaluation; "
                    "score a checkpoint with `lapseg eval --split=NAME`",
                    config.data.dataset, ", ".join(splits))
    return None


def _build(config, num_classes, tx, image_shape):
    """`(model, abstract train state)` of `config`; a model that does not build from
    `config.model_kwargs` (an unknown argument, a negative width) is a `ConfigError`."""
    try:
        model = models.from_config(config, num_classes)
        return model, state_lib.abstract_train_state(model, tx, image_shape)
    except (TypeError, ValueError) as err:
        first = " ".join(str(err).split())[:300]
        raise config_lib.ConfigError(
            f"config.model_kwargs = {config.model_kwargs.to_dict()!r}: model {config.model!r} "
            f"does not build from them ({type(err).__name__}: {first})",
            f"fix --config.model_kwargs.* (the arguments of lapseg.models.create_model"
            f"({config.model!r}, ...))") from err


def _check_loss(config, model, loss_fn, abstract, image_shape, num_classes):
    """Raises `ConfigError` if `config.loss` does not fit the model: a weight for an output
    the model lacks, `class_weights` of another length than the classes. Traced abstractly
    (`jax.eval_shape`: nothing runs), so a bad loss fails in a second, not at step 1."""
    class_weights = config.loss.get("class_weights", None)
    if class_weights is not None and len(class_weights) != num_classes:
        raise config_lib.ConfigError(
            f"config.loss.class_weights has {len(class_weights)} weights for {num_classes} "
            "classes", f"give one weight per class ({num_classes}), or unset it")
    images = jax.ShapeDtypeStruct(image_shape, jnp.float32)
    labels = jax.ShapeDtypeStruct(image_shape[:3], jnp.int32)

    def loss(variables, images, labels):
        outputs, _ = model.apply(
            {"params": variables.params, **variables.model_state}, images, train=True,
            rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats"])
        return loss_fn(outputs, labels, {"image": images, "label": labels})

    try:
        jax.eval_shape(loss, abstract, images, labels)
    except (KeyError, ValueError, TypeError) as err:
        outputs = jax.eval_shape(lambda v, x: model.apply(
            {"params": v.params, **v.model_state}, x, train=True,
            rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats"])[0], abstract, images)
        first = " ".join(str(err).split())[:200]
        raise config_lib.ConfigError(
            f"config.loss = {config.loss.to_dict()!r} does not fit model {config.model!r} "
            f"({type(err).__name__}: {first}); its training outputs are "
            f"{', '.join(sorted(outputs))}",
            "set --config.loss.weights to weights of those outputs") from err


def _read_best(workdir):
    if jax.process_index() == 0:
        _swap_best(workdir)  # a swap a killed run left half done
    distributed_lib.sync("lapseg_best_recovered")
    path = os.path.join(workdir, "best", "best.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)["miou"]
    return -np.inf


def _save_best(workdir, state, meta, step, miou):
    """The best-mIoU checkpoint, kept apart from the rolling last-N ones.

    Written whole into `best.staging/` (checkpoint and `best.json`), then swapped in for
    `best/` (`_swap_best`), so `best/` is always one complete checkpoint, the old one or
    the new one, even when the new result is for a step `best/` already holds (a resumed
    run that beats it at the same step).
    """
    staging = os.path.join(workdir, "best.staging")
    if jax.process_index() == 0 and os.path.exists(staging):
        shutil.rmtree(staging)
    distributed_lib.sync(f"lapseg_best_staging_{step}")
    best = checkpoint_lib.Checkpointer(staging, max_to_keep=1, async_save=False)
    best.save(step, state, meta=meta, force=True)
    best.close()
    if jax.process_index() == 0:
        with open(os.path.join(staging, "best.json"), "w", encoding="utf-8") as f:
            json.dump({"step": step, "miou": miou}, f)
        _swap_best(workdir)
    distributed_lib.sync(f"lapseg_best_saved_{step}")


def _swap_best(workdir):
    """Moves a complete `best.staging/` (it has `best.json`) to `best/`, the old `best/`
    out of the way first; also finishes a swap a killed run left half done."""
    best, staging, old = (os.path.join(workdir, name) for name in
                          ("best", "best.staging", "best.old"))
    if os.path.isfile(os.path.join(staging, "best.json")):
        if os.path.exists(best):
            if os.path.exists(old):
                shutil.rmtree(old)
            os.rename(best, old)
        os.rename(staging, best)
    if os.path.exists(old) and os.path.isfile(os.path.join(best, "best.json")):
        shutil.rmtree(old)
    elif os.path.exists(old) and not os.path.exists(best):
        os.rename(old, best)  # killed between the two renames without a complete staging
