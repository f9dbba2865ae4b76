"""File backend of the request budget: one JSON file under ``flock`` shared by the processes of a machine.

A holder stuck on the lock past ``lock_timeout`` (a stopped process) is set aside: its lock file is
renamed and the others go on with a fresh one. Its late write must then never land, so every write is a
temp file renamed over the state file, and every holder, once it has the lock and before it reads the
state, deletes the temp files left behind: a stale holder's rename then fails (its temp is gone) or
happened before that read (so it is seen). See docs/BUDGET.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from airflow_provider_shortint.budget.window import Heartbeat, RateLimiter, Slot, default_lease

log = logging.getLogger(__name__)


class FileRateLimiter(RateLimiter):
    """The same budget shared by every process on one machine through a JSON file under ``flock``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        calls: int = 30,
        period: float = 30.0,
        *,
        lease: float | None = None,
        lock_timeout: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(calls, period, clock=clock, sleep=sleep)  # wall clock: shared by processes
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lease = default_lease(self.period) if lease is None else float(lease)
        # A lock held longer than this belongs to a stopped process: the lock file is set aside.
        self.lock_timeout = max(2.0, min(self.period, 10.0)) if lock_timeout is None else lock_timeout
        self._heartbeat = Heartbeat(
            self.lease / 3,
            self._renew,
            f"shortint-lease-{self.path.name}",
            where=f" in {self.path}",
            clock=clock,
        )

    @property
    def _hold(self) -> float:
        return self.lease

    def _taken(self, slot_id: str) -> None:
        self._heartbeat.add(slot_id)

    def release(self, slot_id: str) -> None:
        with self._heartbeat.drop(slot_id):
            for _ in range(3):
                try:
                    super().release(slot_id)
                    return
                except _LockLost:  # our lock was set aside mid-write: stamp again under the new one
                    continue

    def _renew(self, slot_ids: list[str]) -> None:
        wanted = set(slot_ids)
        with self._state() as slots:
            now = self.clock()
            for slot in slots:
                if slot[1] in wanted:
                    slot[0] = now + self.lease

    @contextlib.contextmanager
    def _state(self) -> Iterator[list[Slot]]:
        # The lock lives in a side file so that the state file itself is only ever replaced whole.
        with self._lock, self._locked() as lock:
            self._discard_temps()  # a set-aside holder's pending write: gone before we read
            slots = _load_slots(self.path)
            before = [list(slot) for slot in slots]
            yield slots
            if slots != before:
                temp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
                temp.write_text(json.dumps(slots), encoding="utf-8")
                if not _still_current(lock, self._lock_path):  # set aside while we were stopped
                    temp.unlink(missing_ok=True)
                    raise _LockLost
                try:
                    os.replace(temp, self.path)
                except FileNotFoundError:  # set aside after the check: the new holder deleted our temp
                    raise _LockLost from None

    def _discard_temps(self) -> None:
        """Delete the temp files of holders whose lock was set aside, so their renames fail."""
        for temp in self.path.parent.glob(f"{self.path.name}.*.tmp"):
            temp.unlink(missing_ok=True)

    def _try_take(self) -> str | tuple[float, str]:
        try:
            return super()._try_take()
        except _LockLost:
            return 0.001, "the budget file lock was set aside while this process held it; retrying"

    @property
    def _lock_path(self) -> str:
        return f"{self.path}.lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """The lock file's descriptor, flocked; a holder stuck past ``lock_timeout`` is set aside."""
        seen, started, told, pause = -1, time.monotonic(), False, 0.001
        while True:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                inode = os.fstat(fd).st_ino
                os.close(fd)
                if inode != seen:  # a new lock file (set aside by another waiter): time it afresh
                    seen, started, told = inode, time.monotonic(), False
                waited = time.monotonic() - started
                if waited >= 1.0 and not told:
                    log.warning(
                        "waiting for the budget file lock %s, held by %s",
                        self._lock_path,
                        _holder(self._lock_path),
                    )
                    told = True
                if waited >= self.lock_timeout:
                    self._set_aside(inode, waited)
                time.sleep(pause)
                pause = min(pause * 2, 0.02)
                continue
            if _still_current(fd, self._lock_path):
                break
            os.close(fd)  # locked a file that was set aside meanwhile: lock the new one
        try:
            yield fd
        finally:
            os.close(fd)  # closing drops the flock

    def _set_aside(self, inode: int, waited: float) -> None:
        """Rename a lock file whose holder has not let go; its pending write is discarded by the next
        holder (:meth:`_discard_temps`), so it can never overwrite a newer state."""
        holder = _holder(self._lock_path)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self._lock_path).st_ino != inode:
                return  # another waiter already did
            os.replace(self._lock_path, f"{self._lock_path}.stuck")
        log.warning(
            "the budget file lock %s was held for %.1f s by %s: set aside, going on with a fresh lock",
            self._lock_path,
            waited,
            holder,
        )


class _LockLost(Exception):
    """Our lock file was set aside while we held it: our read-modify-write must not land."""


def _still_current(fd: int, path: str) -> bool:
    """True while ``path`` is the file ``fd`` locked."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _holder(path: str) -> str:
    """Who holds the flock on the file (pid and state from /proc on Linux), for the log."""
    try:
        inode = os.stat(path).st_ino
        with open("/proc/locks", encoding="ascii") as handle:
            for line in handle:
                fields = line.split()
                # "1: FLOCK  ADVISORY  WRITE 4242 08:01:123456 0 EOF"
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].endswith(f":{inode}"):
                    pid = fields[4]
                    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                        state = stat.read().rsplit(")", 1)[1].split()[0]
                    name = {"T": "stopped", "t": "stopped by a debugger", "D": "in disk wait"}.get(state)
                    return f"pid {pid}" + (f" ({name})" if name else "")
    except (OSError, IndexError, ValueError):
        pass
    return "another process"


def _load_slots(path: Path) -> list[Slot]:
    """The slots stored in ``path``; anything unreadable, malformed or non-finite is dropped."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, list):
        return []
    return [
        [float(item[0]), str(item[1])]
        for item in data
        if isinstance(item, list)
        and len(item) == 2
        and isinstance(item[0], (int, float))
        and not isinstance(item[0], bool)
        and math.isfinite(item[0])
    ]
