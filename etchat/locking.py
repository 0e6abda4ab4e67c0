"""Lock files: one process at a time on a shard, a run folder, a score or a download (docs/design.md §13).

A lock is a small JSON file created exclusively (``O_CREAT | O_EXCL``, which network file systems honour too) that
names its holder: process id, host name and, on Linux, the process's start time (so that a reused process id is
not mistaken for the holder). A lock whose holder is gone, on this host, is stale: the next process takes it over,
with a warning. A holder on another host cannot be checked from here, so its lock is respected; the error says which
file to delete when that process is known to be gone (a node that crashed).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

logger = logging.getLogger(__name__)

# A lock file that is still empty or half written this long after its last change was left by a process that died
# while writing it.
UNREADABLE_LOCK_GRACE_S = 30.0


class LockHeldError(RuntimeError):
    """Another live process holds the lock; the message names it and says what to do."""

    def __init__(self, message: str, holder: dict | None = None):
        super().__init__(message)
        self.holder = holder or {}


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields are counted after its closing one.
    return stat.rsplit(")", 1)[1].split()[19]


def this_process() -> dict:
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "process_start": _process_start(pid),
        "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def holder_alive(holder: dict) -> bool | None:
    """Whether the process named by a lock still runs: True, False, or None when it cannot be told (another host)."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    start = holder.get("process_start")
    return start is None or _process_start(pid) in (None, start)


def describe(holder: dict) -> str:
    return f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')})"


def _read(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


class FileLock:
    """An exclusive lock held through the file ``path``; ``what`` says what it protects, for messages.

    ``extra`` is stored in the file next to the holder (e.g. the digest of the inputs a scorer is scoring), so that
    a process that finds the lock taken can tell what the holder is doing (`LockHeldError.holder`).
    """

    def __init__(self, path: str | os.PathLike, what: str, extra: dict | None = None):
        self.path = Path(path)
        self.what = what
        self.extra = dict(extra or {})
        self._content: str | None = None

    def acquire(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # each round either takes the lock, raises, or removes a stale one
            if self._try_create():
                return self
            holder = _read(self.path)
            if holder is None:
                if self._unreadable_is_stale():
                    self._take_over(None)
                    continue
                raise LockHeldError(f"{self.what} is locked by {self.path}, which is being written; try again")
            alive = holder_alive(holder)
            if alive is False:
                logger.warning("%s: taking over the lock of %s, which has ended", self.path, describe(holder))
                self._take_over(holder)
                continue
            raise LockHeldError(self._held_message(holder, alive), holder)
        raise LockHeldError(f"{self.what}: could not take the lock {self.path} (other processes keep taking it)")

    def _held_message(self, holder: dict, alive: bool | None) -> str:
        if alive:
            return f"{self.what} is in use by {describe(holder)} (lock {self.path}): wait for it or stop it"
        return (
            f"{self.what} is in use by {describe(holder)} (lock {self.path}); if that process is gone (a node that "
            f"crashed), delete {self.path} and try again"
        )

    def _try_create(self) -> bool:
        content = json.dumps({**this_process(), **self.extra})
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        self._content = content
        return True

    def _unreadable_is_stale(self) -> bool:
        try:
            return time.time() - self.path.stat().st_mtime > UNREADABLE_LOCK_GRACE_S
        except FileNotFoundError:
            return True

    def _take_over(self, stale: dict | None) -> None:
        """Remove a stale lock without removing one that another process created in the meantime: the file is first
        renamed to a name of our own (atomic; one process wins), then checked to be the stale one."""
        aside = self.path.with_name(f"{self.path.name}.stale.{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return  # another process removed it first
        if _read(aside) != stale:
            # We moved a fresh lock: put it back unless yet another one appeared, then let the next round decide.
            try:
                os.link(aside, self.path)
            except OSError:
                pass
        aside.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        if self._content is None:
            return
        try:
            if self.path.read_text() == self._content:
                self.path.unlink()
        except FileNotFoundError:
            pass
        self._content = None

    @property
    def held(self) -> bool:
        return self._content is not None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def live_locks(folder: str | os.PathLike, pattern: str) -> list[tuple[Path, dict]]:
    """The lock files of ``folder`` matching ``pattern`` whose holder may still run (alive, or on another host)."""
    found = []
    for path in sorted(Path(folder).glob(pattern)):
        holder = _read(path)
        if holder is not None and holder_alive(holder) is not False:
            found.append((path, holder))
    return found
