"""Several processes training one model: joining the job (`config.distributed`).

Each process runs the same `lapseg train` command. `initialize(config.distributed)`
calls `jax.distributed.initialize` before anything touches a device; from then on
`jax.devices()` lists the devices of every process, the mesh spans them all
(`lapseg.train.step.make_mesh`), each process reads its own part of every global batch
(`lapseg.data.create_loader`) and `jax.make_array_from_process_local_data` assembles the
global batch (`lapseg.train.step.shard_batch`), so the step sees the same batch as one
process with all the devices would. Orbax writes each checkpoint once, from every
process together; process 0 alone writes logs, metrics, `config.json` and `best.json`.

When is it on (`requested`): `config.distributed.enabled`, or any of
`coordinator_address`, `num_processes`, `process_id` set. Fields left unset are
auto-detected by JAX (Cloud TPU pod slices, SLURM, Open MPI); a manual launch sets all
three.

Failures are bounded, never a hang:

- A process that cannot reach the coordinator (or whose peers never come) ends after
  `initialization_timeout_seconds` (+1 s) with one line on stderr and exit status 2 (a
  watchdog thread: JAX's client would abort with a C++ stack dump); a join JAX reports
  as failed is a `DistributedError`.
- A process that dies (killed, out of memory, a crash) stops sending heartbeats; after
  at most `heartbeat_timeout_seconds` the coordination service tells every other process,
  and each terminates (status 134, SIGABRT) with JAX's message "Terminating process
  because the JAX distributed service detected fatal errors. This most likely indicates
  that another task died". When the coordinator (process 0) itself dies, the others
  notice at once.
- At exit, a process waits at most `shutdown_timeout_seconds` for the others.

On CPU, cross-process collectives need an implementation: `initialize` selects gloo
(`jax_cpu_collectives_implementation`) unless one is already set.
"""

import logging
import os
import sys
import threading

import jax

log = logging.getLogger(__name__)

LAUNCH_FIELDS = ("coordinator_address", "num_processes", "process_id")


class DistributedError(RuntimeError):
    """The process could not join the distributed job (bad settings, no coordinator)."""


def requested(settings) -> bool:
    """Whether `config.distributed` asks for several processes.

    `settings` is the `config.distributed` group; a bare bool (configs written before it
    was a group) is read as `enabled`.
    """
    if isinstance(settings, bool) or settings is None:
        return bool(settings)
    return bool(settings.get("enabled", False)) or any(
        settings.get(field) is not None for field in LAUNCH_FIELDS)


def _cpu_may_be_used() -> bool:
    platforms = jax.config.jax_platforms
    return not platforms or "cpu" in str(platforms).split(",")


def initialize(settings) -> bool:
    """Joins the distributed job `settings` (`config.distributed`) asks for.

    Returns:
      True when this process is part of a distributed job (joined now or before, e.g. by
      the caller), False when none was requested.

    Raises:
      DistributedError: the settings are inconsistent, JAX already ran a computation in
        this process, or the job could not be joined in time.
    """
    if not requested(settings):
        return False
    if jax.distributed.is_initialized():
        return True
    get = (lambda key, default=None: default) if isinstance(settings, bool) else settings.get
    address, count, index = (get(field) for field in LAUNCH_FIELDS)
    if count is not None and count < 1:
        raise DistributedError(f"config.distributed.num_processes must be >= 1, got {count}")
    if index is not None and count is not None and not 0 <= index < count:
        raise DistributedError(f"config.distributed.process_id must be in [0, num_processes = "
                               f"{count}), got {index}")
    if _cpu_may_be_used() and not jax.config.jax_cpu_collectives_implementation:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    device_ids = get("local_device_ids")
    timeout = int(get("initialization_timeout_seconds", 300))
    kwargs = {"coordinator_address": address, "num_processes": count, "process_id": index,
              "local_device_ids": list(device_ids) if device_ids is not None else None,
              "initialization_timeout": timeout,
              "heartbeat_timeout_seconds": int(get("heartbeat_timeout_seconds", 100)),
              "shutdown_timeout_seconds": int(get("shutdown_timeout_seconds", 300))}
    where = (f"process {index if index is not None else '?'} of "
             f"{count if count is not None else '?'} at {address or 'an auto-detected address'}")
    # JAX's client aborts the process (SIGABRT and a C++ stack dump) a few seconds after the
    # timeout when the coordinator is unreachable or a peer never joins; this watchdog ends
    # the process first, with one line and exit status 2.
    watchdog = threading.Timer(timeout + 1, _give_up, args=(where, timeout))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(**kwargs)
    except RuntimeError as err:  # XlaRuntimeError is one too (e.g. DEADLINE_EXCEEDED)
        text = " ".join(str(err).split())
        if "backend" in text and "already" in text or "should only be called once" in text:
            raise DistributedError(
                f"cannot join the distributed job as {where}: this process already used "
                f"JAX ({text[:200]})") from err
        raise DistributedError(
            f"cannot join the distributed job as {where} within {timeout} s "
            f"(config.distributed.initialization_timeout_seconds): {text[:300]}") from err
    except ValueError as err:  # auto-detection found no cluster and a field is unset
        raise DistributedError(
            f"cannot join the distributed job: {err} (no TPU pod, SLURM or Open MPI job was "
            f"detected: set config.distributed.coordinator_address, num_processes and "
            f"process_id)") from err
    finally:
        watchdog.cancel()
    log.info("joined the distributed job: process %d of %d, %d local and %d global devices",
             jax.process_index(), jax.process_count(), jax.local_device_count(),
             jax.device_count())
    return True


def _give_up(where, timeout):
    """Ends this process (status 2) with one line: the job could not be joined in time."""
    sys.stderr.write(
        f"lapseg: cannot join the distributed job as {where} within {timeout} s "
        "(config.distributed.initialization_timeout_seconds): the coordinator is unreachable "
        "or a process did not start — check --config.distributed.* and that every process "
        "was launched (docs/training.md: Several processes)\n")
    sys.stderr.flush()
    os._exit(2)  # pylint: disable=protected-access  (the main thread is blocked in C++)


def is_main() -> bool:
    """Whether this is process 0, the one that writes logs, metrics and small files."""
    return jax.process_index() == 0


def sync(name: str, timeout_seconds: int = 3600) -> None:
    """A barrier across processes (a no-op in a single process), on the coordination
    service rather than the devices: process 0 may build a dataset meanwhile. A process
    that does not arrive within `timeout_seconds` (or dies: see the module docstring) ends
    the wait with an error."""
    if jax.process_count() > 1:
        import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
        ocp.multihost.get_barrier_sync_fn()(key=name, timeout_ms=timeout_seconds * 1000)


def assert_same_everywhere(tree, what: str) -> None:
    """Raises `DistributedError` unless every process holds the same host pytree `tree`.

    A replicated array must be equal on every process, and JAX does not check host
    inputs (e.g. weights each process read from a file). One SHA-256 digest of all the
    leaves' bytes is compared across processes.
    """
    if jax.process_count() == 1:
        return
    import hashlib  # pylint: disable=import-outside-toplevel

    import numpy as np  # pylint: disable=import-outside-toplevel
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        leaf = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{leaf.dtype}{leaf.shape}".encode())
        digest.update(leaf.tobytes())
    words = np.frombuffer(digest.digest(), np.int32)
    gathered = np.asarray(multihost_utils.process_allgather(words))  # [processes, 8]
    differ = [int(p) for p in range(len(gathered)) if not np.array_equal(gathered[p], gathered[0])]
    if differ:
        raise DistributedError(f"{what}: process(es) {differ} do not hold what process 0 "
                               f"holds; every process must read the same files")
