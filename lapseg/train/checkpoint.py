"""Orbax checkpoints of the train state, the data iterator and the run's identity.

Each checkpoint holds three items: `state` (the `TrainState` pytree), `data` (the grain
iterator state, so a resumed run sees exactly the batches it would have seen) and `meta`
(JSON: model name, number of classes, step). Orbax writes into a temporary directory
and renames it when complete, so a run killed mid-save leaves the previous checkpoint
intact. Restoring takes the *current* mesh's shardings as targets, so a checkpoint
written on 8 devices restores onto 2 (or 1).

A resumed run restores the newest *readable* checkpoint: when the latest one cannot be
read (a truncated or garbled file: a full disk, a copy cut short), `Checkpointer.restore`
warns naming its step, restores the newest older one that reads, and moves the unreadable
ones aside to `<directory>.unreadable/<step>` (kept, not deleted), so that the resumed
run can save those steps again.

A save that does not fit on the disk never starts: `save` compares the state's size with
the free space first (`CheckpointWriteError`, one line, nothing written or deleted). A
write that fails anyway (the disk filled up meanwhile, a quota) is a `CheckpointWriteError`
too, raised by that `save`, the next one or `wait`; orbax deletes old checkpoints only
after a new one is complete, so the older ones stay.

Several processes (`lapseg.train.distributed`): every process calls `save` and `restore`
together; orbax writes each array once (a replicated one from one process) and process 0
the metadata. The data item holds one `process_<i>-of-<n>.json` per process, all the same
position in the global batch stream (`lapseg.data.pipeline`), so a checkpoint restores
on any process count: a process with no file of its own reads process 0's
(`DataHandler`).
"""

import contextlib
import dataclasses
import json
import logging
import os
import shutil
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored into this run (other model, corrupt files)."""


# What a checkpoint's model expects of its inputs and labels, saved in its `meta`: eval,
# predict, export and a resumed run must repeat it (`contract`); a config that contradicts
# it is refused, naming the field. Checkpoints saved before these keys existed lack them,
# and are not checked for them.
CONTRACT_KEYS = ("num_classes", "ignore_label", "normalize", "input_scale")


def contract(config, info) -> dict:
    """The preprocessing contract of `config` on a dataset of `info` (`DatasetInfo`):
    class count, ignore label, input normalisation and the model's input scale."""
    return {"num_classes": int(info.num_classes), "ignore_label": int(info.ignore_label),
            "normalize": str(config.data.normalize),
            "input_scale": float(config.model_kwargs.get("input_scale", None) or 1.0)}


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (no space left, a failed write); the older
    checkpoints are untouched."""


# Free space kept beyond a checkpoint's array bytes (metadata, the data iterator, slack).
SPACE_MARGIN = 1.1, 16 << 20


class DataHandler(grain.checkpoint.CheckpointHandler):
    """grain's handler, restoring on another process count too (see the module docstring).

    grain reads `process_<i>-of-<n>.json` for this process `i` of `n`; a checkpoint written
    by another number of processes has none, so this reads `process_0-of-<m>.json`, the
    state of every process of that run.
    """

    def restore(self, directory, item=None, args=None):
        own = directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if own.exists():
            return super().restore(directory, item=item, args=args)
        saved = sorted(directory.glob("process_0-of-*.json"))
        if not saved:
            raise ValueError(f"{directory} holds no data iterator state ({own.name} does not "
                             f"exist)")
        item = item or args.item
        state = saved[0].read_text()
        log.info("data iterator: %s has no %s; restoring %s (the same stream position)",
                 directory, own.name, saved[0].name)
        item.set_state(json.loads(state) if isinstance(
            item, grain.DatasetIterator) else state.encode())
        item.start_prefetch()
        return item


@ocp.args.register_with_handler(DataHandler, for_save=True)
@dataclasses.dataclass
class DataSave(ocp.args.CheckpointArgs):
    """Saves a grain iterator's state with `DataHandler`."""
    item: Any


@ocp.args.register_with_handler(DataHandler, for_restore=True)
@dataclasses.dataclass
class DataRestore(ocp.args.CheckpointArgs):
    """Restores a grain iterator's state in place with `DataHandler`."""
    item: Any


class Checkpointer:
    """Keeps the last `max_to_keep` checkpoints under `directory`.

    Args:
      directory: where step folders are written (created if missing).
      max_to_keep: how many to keep.
      save_interval_steps: `should_save` cadence (the final step is always saved by the loop).
      async_save: write in a background thread while training continues.
    """

    def __init__(self, directory, *, max_to_keep=3, save_interval_steps=1, async_save=True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
            enable_async_checkpointing=async_save, create=True)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": DataHandler(),
                           "meta": ocp.JsonCheckpointHandler()})
        self._pending = None  # the step of the last save started

    def latest_step(self):
        return self._manager.latest_step()

    def all_steps(self) -> list:
        """The steps of the checkpoints on disk, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step, state, *, meta, data_iterator=None, force=False):
        """Starts writing checkpoint `step` (async unless built with `async_save=False`).

        Raises `CheckpointWriteError`, before anything is written, when the free space of
        the directory's disk is below the state's size (x1.1, + 16 MiB); and when this
        save or the previous async one fails to write.
        """
        needed = int(SPACE_MARGIN[0] * _nbytes(state)) + SPACE_MARGIN[1]
        free = shutil.disk_usage(self.directory).free
        if free < needed:
            raise CheckpointWriteError(
                f"not enough disk space for checkpoint {int(step)} in {self.directory}: it "
                f"needs about {needed / 2**20:,.0f} MiB, {free / 2**20:,.0f} MiB are free; the "
                f"older checkpoints are kept")
        self.wait()  # the previous async save, long done: its failure is named by its step
        items = {"state": ocp.args.StandardSave(state),
                 "meta": ocp.args.JsonSave({**meta, "step": int(step)})}
        if data_iterator is not None:
            items["data"] = DataSave(data_iterator)
        self._pending = int(step)
        with _write_errors(self.directory, f"checkpoint {int(step)}"):
            return self._manager.save(int(step), args=ocp.args.Composite(**items), force=force)

    def restore(self, abstract_state, *, meta, step=None, data_iterator=None):
        """Restores `step` (default: the newest readable) onto the shardings of `abstract_state`.

        Args:
          abstract_state: `jax.ShapeDtypeStruct` pytree with `.sharding` set (the target).
          meta: this run's identity (`model`, `num_classes`); a checkpoint of another
            model raises `CheckpointError` naming both.
          step: the step to restore; None: the latest, or where it cannot be read, the
            newest older one that can (a warning names each unreadable step, which is moved
            aside, see the module docstring). No readable checkpoint is a `CheckpointError`.
          data_iterator: a grain iterator whose state is restored in place (if given and
            the checkpoint has one).

        Returns:
          The restored state.
        """
        if step is not None:
            return self._restore(step, abstract_state, meta, data_iterator)
        steps = self.all_steps()[::-1]
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        unreadable = []  # (step, error), newest first
        for candidate in steps:
            try:
                state = self._restore(candidate, abstract_state, meta, data_iterator)
            except Exception as err:  # pylint: disable=broad-except
                # orbax, tensorstore and json each raise their own types (tensorstore a
                # bare Exception) for a truncated or garbled file; a garbled metadata file
                # can even read as another tree (CheckpointError).
                unreadable.append((candidate, err))
                continue
            self._set_aside(unreadable, candidate)
            return state
        # Nothing read: blame this run (another model, a bug), not the files; move nothing.
        newest = unreadable[0][1]
        if isinstance(newest, CheckpointError):
            raise newest
        raise CheckpointError(
            f"no readable checkpoint in {self.directory}: "
            + "; ".join(f"step {s}: {_first_line(err)}" for s, err in unreadable)) from newest

    def _restore(self, step, abstract_state, meta, data_iterator):
        where = f"{self.directory}/{step}"
        _check_meta(self._manager, step, meta, where, "this run")
        _check_tree(self._manager.item_metadata(step)["state"], abstract_state, where)
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = DataRestore(data_iterator)
        return self._manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def _set_aside(self, unreadable, restored_step):
        """Warns about and moves aside the `unreadable` steps, newer than `restored_step`.

        Only once an older checkpoint has been read with the same code is a failure blamed
        on the files. Moved, not deleted (a flaky file system may be the cause), and out of
        the step folders so the resumed run can save these steps again.
        """
        if not unreadable:
            return
        moves = [(step, _free_path(os.path.join(f"{self.directory}.unreadable", str(step))))
                 for step, _ in unreadable]
        for (step, err), (_, target) in zip(unreadable, moves):
            log.warning("checkpoint step %d in %s is unreadable (%s): resuming from step %d; "
                        "moved it to %s", step, self.directory, _first_line(err),
                        restored_step, target)
        if jax.process_index() == 0:
            for step, target in moves:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(os.path.join(self.directory, str(step)), target)
        ocp.multihost.sync_global_processes("lapseg_checkpoint_set_aside")
        self._manager.reload()  # forget the moved steps

    def read(self, step=None):
        """The saved state as a plain pytree (dicts of arrays), without a target or checks.

        For inspection and export; training restores with `restore`.
        """
        step = self.latest_step() if step is None else step
        # Onto this process's first device: the saved shardings may name devices that do not
        # exist here (a checkpoint of another process count or mesh).
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        saved = self._manager.item_metadata(step)["state"]
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device)
            if hasattr(m, "shape") and hasattr(m, "dtype") else m, getattr(saved, "tree", saved))
        items = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
        return items["state"]

    def reached_preemption(self, step):
        """True when the cluster announced a preemption (multi-host TPU/GPU); save now."""
        return self._manager.reached_preemption(int(step))

    def wait(self):
        """Blocks until pending async saves are on disk (`CheckpointWriteError` if one failed)."""
        with _write_errors(self.directory, f"checkpoint {self._pending}"):
            self._manager.wait_until_finished()

    def close(self):
        self._manager.close()


@contextlib.contextmanager
def _write_errors(directory, what):
    """An orbax / tensorstore write failure (no space, a quota, an I/O error) inside the
    block becomes one `CheckpointWriteError` naming `what` and `directory`."""
    try:
        yield
    except CheckpointError:
        raise
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointWriteError(f"could not write {what} in {directory} ({_first_line(err)}); "
                                   f"the older checkpoints are kept") from err


def _nbytes(tree) -> int:
    """Bytes of the arrays of `tree` (a global array counts once, however it is sharded)."""
    return sum(int(np.prod(np.shape(x))) * np.dtype(getattr(x, "dtype", np.float32)).itemsize
               for x in jax.tree.leaves(tree))


def _free_path(path) -> str:
    """`path`, or `path-1`, `path-2`, ... if taken (a step unreadable twice keeps both)."""
    candidate, n = path, 1
    while os.path.exists(candidate):
        candidate, n = f"{path}-{n}", n + 1
    return candidate


def _first_line(err, limit=200) -> str:
    """`'Type: first line of the message'`, at most `limit` characters (tensorstore's
    messages run to a page of JSON)."""
    text = str(err).strip().splitlines()
    line = f"{type(err).__name__}: {text[0] if text else ''}"
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _key_name(key):
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _shapes(tree):
    """'params/head/kernel' -> shape, for a state pytree or orbax's dict-of-dicts metadata."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key_name(k) for k in path): tuple(getattr(leaf, "shape", np.shape(leaf)))
            for path, leaf in leaves}


def _check_meta(manager, step, meta, where, reader):
    """Raises `CheckpointError` where checkpoint `step`'s saved `meta` differs from `meta`.

    `where` names the checkpoint and `reader` what reads it ('this run', 'this model').
    """
    saved_meta = manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    for key, value in meta.items():
        if key in CONTRACT_KEYS and key not in saved_meta:
            continue  # saved before the contract was stored
        if saved_meta.get(key) != value:
            field = {"normalize": "data.normalize", "input_scale": "model_kwargs.input_scale",
                     "ignore_label": "the dataset's ignore label"}.get(key, key)
            raise CheckpointError(
                f"checkpoint {where} was written for {key}={saved_meta.get(key)!r}, "
                f"but {reader} has {key}={value!r}"
                + (f" (config {field}; the run's checkpoints fix it)"
                   if key in CONTRACT_KEYS[1:] else ""))


def _check_tree(saved, target, where):
    """Names missing, unexpected and mis-shaped arrays between a checkpoint and a run."""
    saved_shapes, target_shapes = _shapes(saved), _shapes(target)
    missing = sorted(set(target_shapes) - set(saved_shapes))
    unexpected = sorted(set(saved_shapes) - set(target_shapes))
    mismatched = sorted(k for k in set(saved_shapes) & set(target_shapes)
                        if saved_shapes[k] != target_shapes[k])
    if missing or unexpected or mismatched:  # one line: counts, and the first of each kind
        parts = []
        if mismatched:
            k = mismatched[0]
            parts.append(f"{len(mismatched)} arrays of other shapes (e.g. {k}: "
                         f"{saved_shapes[k]} in the checkpoint, {target_shapes[k]} in the model)")
        if missing:
            parts.append(f"{len(missing)} arrays missing from the checkpoint (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} arrays not in this model (e.g. {unexpected[0]})")
        raise CheckpointError(f"checkpoint {where} does not match this model: "
                              + "; ".join(parts))


def partial_reader(directory) -> ocp.CheckpointManager:
    """A read-only manager of `directory` whose `state` item can be read in part (close it).

    `StandardCheckpointHandler` writes the PyTree format, so the PyTree handler reads any
    subtree of it (the variables without the optimiser state); the data item is known but
    never read.
    """
    return ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(create=False),
        item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})


def existing_step(manager, step, directory, what: str = "") -> int:
    """`step` (default: the latest) if `manager` holds it, else `CheckpointError` (prefixed
    by `what`, e.g. the config field that named the directory)."""
    prefix = f"{what}: " if what else ""
    step = manager.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"{prefix}no checkpoint in {directory}")
    if step not in manager.all_steps():
        raise CheckpointError(f"{prefix}no checkpoint of step {step} in {directory}")
    return step


def read_variables(directory, abstract_variables, *, meta, step=None):
    """A model's variables from a checkpoint of `Checkpointer`, for inference.

    Reads only `params` and the other variable collections (the train state's
    `model_state`: `batch_stats`, `constants`) of the saved `state`: the optimiser state
    and the data iterator are neither read nor needed, so no optimiser is built.

    Args:
      directory: a checkpoint directory (`<workdir>/checkpoints` or `<workdir>/best`).
      abstract_variables: `jax.ShapeDtypeStruct` pytree of the model's variables,
        `{'params': ..., 'batch_stats': ..., ...}` (`jax.eval_shape` of `model.init`),
        with `.sharding` set to where the arrays should go.
      meta: the model's identity (`model`, `num_classes`); a checkpoint of another model
        raises `CheckpointError` naming both.
      step: the step to read (default: the latest).

    Returns:
      `(variables, step)`: the variables in the structure of `abstract_variables`.
    """
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise CheckpointError(f"no checkpoint in {directory} (it does not exist)")
    manager = partial_reader(directory)
    try:
        if step is not None:
            step = existing_step(manager, step, directory)
            return _read_variables(manager, step, directory, abstract_variables, meta), step
        existing_step(manager, None, directory)  # "no checkpoint in ..." when empty
        unreadable = []  # (step, error), newest first: fall back as training's restore does
        for candidate in sorted(manager.all_steps(), reverse=True):
            try:
                variables = _read_variables(manager, candidate, directory, abstract_variables,
                                            meta)
            except Exception as err:  # pylint: disable=broad-except  (see Checkpointer.restore)
                unreadable.append((candidate, err))
                continue
            for bad, err in unreadable:
                log.warning("checkpoint step %d in %s is unreadable (%s): using step %d",
                            bad, directory, _first_line(err), candidate)
            return variables, candidate
        newest = unreadable[0][1]
        if isinstance(newest, CheckpointError):
            raise newest
        raise CheckpointError(
            f"no readable checkpoint in {directory}: "
            + "; ".join(f"step {s}: {_first_line(err)}" for s, err in unreadable)) from newest
    finally:
        manager.close()


def _read_variables(manager, step, directory, abstract_variables, meta):
    where = f"{directory}/{step}"
    _check_meta(manager, step, meta, where, "this model")
    variables = dict(abstract_variables)
    target = {"params": variables.pop("params"), "model_state": variables}
    saved = manager.item_metadata(step)["state"]
    saved = getattr(saved, "tree", saved)
    _check_tree({key: saved.get(key, {}) for key in target}, target, where)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)))["state"]
    return {"params": restored["params"], **restored["model_state"]}
