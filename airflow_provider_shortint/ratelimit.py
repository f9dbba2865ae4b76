"""Request budget: at most ``calls`` requests in any window of ``period`` seconds (30 / 30 s by default).

A slot is taken before a request is sent and stamped with the time its response *ended*, so the next
request that reuses it starts at least ``period`` after the server saw the old one, whatever the
latency. The slots live in memory (threads of one process) or in a locked file (processes of one
machine, e.g. Airflow's mapped tasks on a LocalExecutor).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# A slot is [end_time, slot_id]; while its request is in flight end_time lies in the future.
Slot = list[float | str]


class RateLimiter:
    """Sliding-window limiter shared by the threads of one process; clock and sleep are injectable."""

    def __init__(
        self,
        calls: int = 30,
        period: float = 30.0,
        *,
        max_hold: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if int(calls) < 1 or float(period) <= 0:
            raise ValueError(f"rate limit must be at least 1 call per positive period, got {calls}/{period}s")
        self.calls = int(calls)
        self.period = float(period)
        # An in-flight slot whose owner died is freed after max_hold + period at the latest.
        self.max_hold = float(max_hold)
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._slots: list[Slot] = []

    @contextlib.contextmanager
    def _state(self) -> Iterator[list[Slot]]:
        """The live slot list, held exclusively for the duration of the block."""
        with self._lock:
            yield self._slots

    def acquire(self) -> str:
        """Block until a slot is free and take it; returns the slot id to pass to :meth:`release`."""
        told = False
        while True:
            wait = self._try_take()
            if isinstance(wait, str):
                return wait
            if wait >= 1.0 and not told:  # say why a task is quiet; short waits are routine
                log.info(
                    "waiting %.1f s for the API budget (%d requests / %g s)", wait, self.calls, self.period
                )
                told = True
            self.sleep(wait)

    def _try_take(self) -> str | float:
        with self._state() as slots:
            now = self.clock()
            slots[:] = [slot for slot in slots if float(slot[0]) > now - self.period]
            if len(slots) < self.calls:
                slot_id = uuid.uuid4().hex
                slots.append([now + self.max_hold, slot_id])
                return slot_id
            return max(min(float(slot[0]) for slot in slots) + self.period - now, 0.001)

    def release(self, slot_id: str) -> None:
        """Stamp the slot with the time its request ended (it stays counted for one more period)."""
        with self._state() as slots:
            now = self.clock()
            for slot in slots:
                if slot[1] == slot_id:
                    slot[0] = now
                    return

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the duration of a request."""
        slot_id = self.acquire()
        try:
            yield
        finally:
            self.release(slot_id)


class FileRateLimiter(RateLimiter):
    """The same budget shared by every process on one machine through a JSON file under ``flock``."""

    def __init__(
        self, path: str | os.PathLike[str], calls: int = 30, period: float = 30.0, **kwargs: float
    ) -> None:
        super().__init__(calls, period, clock=time.time, **kwargs)  # type: ignore[arg-type]
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _state(self) -> Iterator[list[Slot]]:
        # The lock lives in a side file so that the state file itself is only ever replaced whole.
        with self._lock, open(f"{self.path}.lock", "a", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                slots = _load_slots(self.path)
                before = [list(slot) for slot in slots]
                yield slots
                if slots != before:
                    temp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
                    temp.write_text(json.dumps(slots), encoding="utf-8")
                    os.replace(temp, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _load_slots(path: Path) -> list[Slot]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, list):
        return []
    return [
        [float(item[0]), str(item[1])]
        for item in data
        if isinstance(item, list) and len(item) == 2 and isinstance(item[0], (int, float))
    ]


_SHARED: dict[tuple[object, ...], RateLimiter] = {}
_SHARED_LOCK = threading.Lock()


def shared_limiter(key: str, calls: int, period: float, state_dir: str | None = None) -> RateLimiter:
    """One limiter per API endpoint and budget in this process; file-backed when ``state_dir`` is set."""
    cache_key = (key, int(calls), float(period), state_dir)
    with _SHARED_LOCK:
        limiter = _SHARED.get(cache_key)
        if limiter is None:
            if state_dir:
                import hashlib

                name = hashlib.sha256(key.encode()).hexdigest()[:16]
                limiter = FileRateLimiter(Path(state_dir) / f"shortint-budget-{name}.json", calls, period)
            else:
                limiter = RateLimiter(calls, period)
            _SHARED[cache_key] = limiter
        return limiter
