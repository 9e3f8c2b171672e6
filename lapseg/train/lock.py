"""One training run per work dir: an exclusive lock file, `<workdir>/train.lock`.

`WorkdirLock(workdir)` is taken by `lapseg.train.loop.train_and_evaluate` (process 0 of
a job) before anything is written to the work dir and released when the run ends,
however it ends. A second run on the same work dir gets `WorkdirLockedError`, one line
naming the running process (host, pid, start time).

How, and what it assumes:
- The lock file is created with `O_CREAT | O_EXCL`, which is atomic on local file
  systems and on NFSv3+ and the shared file systems of clusters (Lustre, GPFS); object
  stores mounted as file systems (gcsfuse) do not promise it.
- The holder rewrites the file every `HEARTBEAT_SECONDS` from a daemon thread, so its
  modification time says it is alive.
- A lock is stale, and taken over, when its process is gone: on the same host, when no
  process has its pid; on another host (which cannot see that pid), when the file was not
  refreshed for `STALE_SECONDS`. That needs the hosts' clocks to agree within minutes.
- Taking over renames the stale file away first (atomic), so of two runs taking over at
  once one wins and the other finds the winner's lock.
"""

import json
import os
import socket
import threading
import time

LOCK_FILE = "train.lock"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 300.0


class WorkdirLockedError(RuntimeError):
    """Another live run holds the work dir's lock."""


class WorkdirWriteError(OSError):
    """A file of the work dir could not be written (a full disk, no permission, a
    read-only file system); the message names it."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class WorkdirLock:
    """The exclusive lock of `workdir` (a context manager; `acquire` / `release`)."""

    def __init__(self, workdir, *, heartbeat_seconds=HEARTBEAT_SECONDS,
                 stale_seconds=STALE_SECONDS):
        self.path = os.path.join(os.fspath(workdir), LOCK_FILE)
        self._heartbeat, self._stale = heartbeat_seconds, stale_seconds
        self._stop = threading.Event()
        self._thread = None
        self._record = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def acquire(self) -> None:
        """Takes the lock, taking over a stale one; `WorkdirLockedError` if a live run has it."""
        self._record = {"host": socket.gethostname(), "pid": os.getpid(),
                        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        for _ in range(3):
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and not self._is_stale(holder):
                    raise WorkdirLockedError(
                        f"work dir {os.path.dirname(self.path)} is in use by another training "
                        f"run (pid {holder.get('pid')} on {holder.get('host')}, started "
                        f"{holder.get('started')}; lock {self.path})") from None
                self._take_over(holder)
                continue
            except OSError as err:  # read-only, no permission, no space
                raise WorkdirWriteError(f"cannot write in work dir {os.path.dirname(self.path)} "
                                        f"({err.strerror or err})") from err
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self._record, f)
            self._thread = threading.Thread(target=self._beat, name="lapseg-workdir-lock",
                                            daemon=True)
            self._thread.start()
            return
        raise WorkdirLockedError(f"could not take the lock {self.path}: other runs keep "
                                 "taking it over")

    def release(self) -> None:
        """Stops the heartbeat and removes the lock file if it is still this run's."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        holder = self._holder()
        if holder is not None and (holder.get("host"), holder.get("pid")) == (
                self._record["host"], self._record["pid"]):
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass

    def _holder(self):
        """The lock file's record, {} if unreadable (being written), None if gone."""
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _is_stale(self, holder) -> bool:
        try:
            age = time.time() - os.path.getmtime(self.path)
        except FileNotFoundError:
            return True
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return not _alive(holder["pid"])
        return age > self._stale

    def _take_over(self, stale) -> None:
        """Moves the stale lock (record `stale`) away; if another run took it over between
        our look and the move, its fresh lock is put back."""
        aside = f"{self.path}.stale-{os.getpid()}"
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:  # another run took it over first
            return
        try:
            with open(aside, encoding="utf-8") as f:
                moved = json.load(f)
        except (OSError, ValueError):
            moved = {}
        if stale and moved != stale:
            try:
                os.link(aside, self.path)  # atomic, fails if a third run holds it by now
            except OSError:
                pass
        os.remove(aside)

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat):
            try:
                os.utime(self.path)
            except OSError:
                pass
