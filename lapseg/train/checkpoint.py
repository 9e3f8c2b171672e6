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

Reading without restoring a run (no optimiser, no data iterator, no target state) goes
through one function, `read_tree`: `Checkpointer.read` (the whole saved state),
`read_variables` (a model's variables, for inference and for warm starts,
`lapseg.train.init`). grain is imported only where a data iterator is saved or restored,
so reading a checkpoint (`lapseg.infer`) does not load the input pipeline.
"""

import contextlib
import dataclasses
import json
import logging
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from lapseg.ops import tree as tree_lib

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


class DataHandler(ocp.CheckpointHandler):
    """grain's handler of the data item, restoring on another process count too (see the
    module docstring); grain is imported when an iterator is saved or restored.

    grain reads `process_<i>-of-<n>.json` for this process `i` of `n`; a checkpoint written
    by another number of processes has none, so this reads `process_0-of-<m>.json`, the
    state of every process of that run.
    """

    def save(self, directory, item=None, args=None):
        return _grain().checkpoint.CheckpointHandler().save(directory, item=item, args=args)

    def restore(self, directory, item=None, args=None):
        grain = _grain()
        own = directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if own.exists():
            return grain.checkpoint.CheckpointHandler().restore(directory, item=item, args=args)
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

    def metadata(self, directory):
        del directory
        return None


def _grain():
    import grain  # pylint: disable=import-outside-toplevel  (only where an iterator is saved)

    return grain


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
        self._last_started_step = None  # of the last save started (named by `wait`)

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
        self._last_started_step = int(step)
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
        state, restored, unreadable = _newest_readable(
            self.directory, steps,
            lambda candidate: self._restore(candidate, abstract_state, meta, data_iterator))
        self._set_aside(unreadable, restored)
        return state

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

        For inspection and export; training restores with `restore`. The arrays go onto
        this process's first device: the saved shardings may name devices that do not
        exist here (a checkpoint of another process count or mesh).
        """
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return read_tree(self.directory, step, device=device)[0]

    def reached_preemption(self, step):
        """True when the cluster announced a preemption (multi-host TPU/GPU); save now."""
        return self._manager.reached_preemption(int(step))

    def wait(self):
        """Blocks until pending async saves are on disk (`CheckpointWriteError` if one failed)."""
        with _write_errors(self.directory, f"checkpoint {self._last_started_step}"):
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


def _shapes(tree):
    """'params/head/kernel' -> shape, for a state pytree or orbax's dict-of-dicts metadata."""
    return {name: tuple(getattr(leaf, "shape", np.shape(leaf)))
            for name, leaf in tree_lib.flatten_with_names(tree)}


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


def _newest_readable(directory, steps, read):
    """`(read(step), step, unreadable)` for the first of `steps` (newest first) that `read`
    reads; `unreadable`: `(step, error)` of those before it.

    Raises:
      CheckpointError: none reads. When the newest one's error is a `CheckpointError`
        (another model, a contract): that one, blaming this run, not the files; otherwise
        one naming each step's error.
    """
    unreadable = []  # (step, error), newest first
    for candidate in steps:
        try:
            return read(candidate), candidate, unreadable
        except Exception as err:  # pylint: disable=broad-except
            # orbax, tensorstore and json each raise their own types (tensorstore a
            # bare Exception) for a truncated or garbled file; a garbled metadata file
            # can even read as another tree (CheckpointError).
            unreadable.append((candidate, err))
    newest = unreadable[0][1]
    if isinstance(newest, CheckpointError):
        raise newest
    raise CheckpointError(
        f"no readable checkpoint in {directory}: "
        + "; ".join(f"step {s}: {_first_line(err)}" for s, err in unreadable)) from newest


def _reader(directory) -> ocp.CheckpointManager:
    """A read-only manager of `directory` whose `state` item can be read in part (close it).

    `StandardCheckpointHandler` writes the PyTree format, so the PyTree handler reads any
    subtree of it (the variables without the optimiser state). The data item is known but
    never read: grain writes it as JSON, and a JSON handler stands in for grain's so that
    reading needs no grain.
    """
    return ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(create=False),
        item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                       "data": ocp.JsonCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})


def _existing_step(manager, step, directory, prefix) -> int:
    """`step` (default: the latest) if `manager` holds it, else `CheckpointError`."""
    step = manager.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"{prefix}no checkpoint in {directory}")
    if step not in manager.all_steps():
        raise CheckpointError(f"{prefix}no checkpoint of step {step} in {directory}")
    return step


def read_tree(directory, step=None, *, keys=None, target=None, meta=None, device=None,
              newest_readable=False, what: str = ""):
    """The saved train state of a checkpoint, or part of it: lapseg's one checkpoint reader.

    Args:
      directory: a checkpoint directory (`<workdir>/checkpoints` or `<workdir>/best`).
      step: the step to read; None: the latest.
      keys: the entries of the saved state to read, e.g. `('params', 'model_state')` (the
        optimiser state is then neither read nor needed); one saved empty is left out.
        None: all of them. Ignored with a `target`.
      target: what to read into: `{key: subtree}` of `jax.ShapeDtypeStruct`s with
        `.sharding` set; a checkpoint with other paths or shapes raises `CheckpointError`
        naming them. None: the arrays as saved, numpy arrays, or with `device` (a
        `jax.sharding.Sharding`) jax arrays there.
      meta: the reader's identity (`model`, `num_classes`, the `contract`): a checkpoint
        saved for another raises `CheckpointError` naming both. None: not checked.
      newest_readable: with `step` None, a latest checkpoint that cannot be read is
        skipped with a warning for the newest older one that can.
      what: prefixes the errors of a missing directory or step (the config field naming it).

    Returns:
      `(tree, step)`: the nested dicts of the saved state (or its `keys`, or `target`'s
      structure) and the step read.
    """
    directory = os.path.abspath(os.fspath(directory))
    prefix = f"{what}: " if what else ""
    if not os.path.isdir(directory):
        raise CheckpointError(f"{prefix}no checkpoint in {directory} (it does not exist)")
    manager = _reader(directory)

    def read(candidate):
        return _read_step(manager, candidate, f"{directory}/{candidate}", keys=keys,
                          target=target, meta=meta, device=device)

    try:
        if step is not None or not newest_readable:
            step = _existing_step(manager, step, directory, prefix)
            return read(step), step
        _existing_step(manager, None, directory, prefix)  # "no checkpoint in ..." when empty
        steps = sorted(manager.all_steps(), reverse=True)
        tree, step, unreadable = _newest_readable(directory, steps, read)
        for bad, err in unreadable:
            log.warning("checkpoint step %d in %s is unreadable (%s): using step %d",
                        bad, directory, _first_line(err), step)
        return tree, step
    finally:
        manager.close()


def _read_step(manager, step, where, *, keys, target, meta, device):
    """`read_tree` of one step with an open reader (`_reader`)."""
    if meta is not None:
        _check_meta(manager, step, meta, where, "this model")
    saved = manager.item_metadata(step)["state"]
    saved = getattr(saved, "tree", saved)
    if target is not None:
        _check_tree({key: saved.get(key, {}) for key in target}, target, where)
        restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    else:
        if keys is not None:  # an empty subtree (no batch_stats) has nothing to restore
            saved = {key: saved[key] for key in keys if jax.tree.leaves(saved.get(key, {}))}
        if device is None:
            target = saved
            restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                        target)
        else:
            target = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device)
                if hasattr(m, "shape") and hasattr(m, "dtype") else m, saved)
            restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    return manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True)))["state"]


def read_variables(directory, abstract_variables=None, *, meta=None, step=None,
                   newest_readable=True, what: str = ""):
    """A model's variables from a checkpoint of `Checkpointer` (`read_tree`), for inference
    and warm starts.

    Reads only `params` and the other variable collections (the train state's
    `model_state`: `batch_stats`, `constants`) of the saved `state`: the optimiser state
    and the data iterator are neither read nor needed, so no optimiser is built.

    Args:
      directory: a checkpoint directory (`<workdir>/checkpoints` or `<workdir>/best`).
      abstract_variables: `jax.ShapeDtypeStruct` pytree of the model's variables,
        `{'params': ..., 'batch_stats': ..., ...}` (`jax.eval_shape` of `model.init`),
        with `.sharding` set to where the arrays should go; a checkpoint of other shapes
        raises `CheckpointError` naming them. None: the variables as saved, numpy arrays.
      meta: the model's identity (`model`, `num_classes`); a checkpoint of another model
        raises `CheckpointError` naming both. None: not checked.
      step: the step to read (default: the latest, or with `newest_readable`, where it
        cannot be read, the newest older one that can, with a warning).
      what: prefixes the errors of a missing directory or step.

    Returns:
      `(variables, step)`: `{'params': ..., **model_state}`, in the structure of
      `abstract_variables` when given.
    """
    target = None
    if abstract_variables is not None:
        variables = dict(abstract_variables)
        target = {"params": variables.pop("params"), "model_state": variables}
    state, step = read_tree(directory, step, keys=("params", "model_state"), target=target,
                            meta=meta, newest_readable=newest_readable, what=what)
    return {"params": state.get("params", {}), **state.get("model_state", {})}, step
