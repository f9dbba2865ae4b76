"""Request budget: at most ``calls`` requests in any window of ``period`` seconds (30 / 30 s by default).

A slot is taken before a request is sent and stamped with the time its response *ended*, so the next
request that reuses it starts at least ``period`` after the server saw the old one, whatever the
latency. The slots live in memory (threads of one process), in a locked file (processes of one
machine: :mod:`.file_window`) or in Redis (every machine: :mod:`.redis_window`).

Liveness (docs/BUDGET.md): a shared slot in flight holds a short *lease* that a
heartbeat thread renews; a holder that dies or is stopped stops renewing, and its slot counts as ended
when the lease runs out, so it frees within ``lease + period``. Stamps in the future (a clock stepped
back) are clamped to now, non-finite values are dropped, and the file lock is taken with a timeout.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

# A slot is [end_time, slot_id]; while its request is in flight end_time lies in the future.
Slot = list[float | str]


def default_lease(period: float) -> float:
    """Lease of an in-flight shared slot: a tenth of the period, between 0.5 s and 5 s."""
    return min(max(period / 10.0, 0.5), 5.0)


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
        if int(calls) < 1 or not 0 < float(period) < math.inf:
            raise ValueError(f"rate limit must be at least 1 call per positive period, got {calls}/{period}s")
        self.calls = int(calls)
        self.period = float(period)
        # Longest time an in-flight slot counts as in flight (a thread cannot die holding one here:
        # slot() releases in ``finally``); shared backends replace it with a renewed lease.
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
        told = ""
        while True:
            taken = self.try_acquire()
            if isinstance(taken, str):
                return taken
            wait, why = taken
            # Say why a task is quiet (once per reason); short waits are routine.
            if (wait >= 1.0 or not why.startswith("full")) and why != told:
                log.info(
                    "waiting %.1f s for the API budget (%d requests / %g s): %s",
                    wait,
                    self.calls,
                    self.period,
                    why,
                )
                told = why
            self.sleep(wait)

    def try_acquire(self) -> str | tuple[float, str]:
        """Take a slot only if one is free now: its id (for :meth:`release`), else the wait and why."""
        taken = self._try_take()
        if isinstance(taken, str):
            self._taken(taken)
        return taken

    def _try_take(self) -> str | tuple[float, str]:
        """A new slot id, or how long to wait and why."""
        with self._state() as slots:
            now = self.clock()
            self._tidy(slots, now)
            if len(slots) < self.calls:
                slot_id = uuid.uuid4().hex
                slots.append([now + self._hold, slot_id])
                return slot_id
            return self._wait(slots, now)

    @property
    def _hold(self) -> float:
        """How far ahead an in-flight slot is stamped."""
        return self.max_hold

    def _tidy(self, slots: list[Slot], now: float) -> None:
        """Clamp stamps lying further ahead than any live hold (a clock stepped back), drop freed ones."""
        ahead = [slot for slot in slots if float(slot[0]) > now + self._hold]
        if ahead:
            log.warning(
                "%d budget slots were stamped up to %.0f s in the future (clock stepped back?): "
                "counted as ending now",
                len(ahead),
                max(float(slot[0]) for slot in ahead) - now,
            )
            for slot in ahead:
                slot[0] = now
        slots[:] = [slot for slot in slots if float(slot[0]) > now - self.period]

    def _wait(self, slots: list[Slot], now: float) -> tuple[float, str]:
        """Seconds until a slot can free: an ended one ``period`` after its stamp, one in flight no
        sooner than ``period`` from now."""
        in_flight = sum(1 for slot in slots if float(slot[0]) > now)
        earliest = min(min(float(slot[0]) for slot in slots), now)
        why = f"full, {len(slots) - in_flight} used in the last period and {in_flight} in flight"
        return max(earliest + self.period - now, 0.001), why

    def _taken(self, slot_id: str) -> None:
        """Hook for backends whose in-flight slots need a heartbeat."""

    def release(self, slot_id: str) -> None:
        """Stamp the slot with the time its request ended (it stays counted for one more period)."""
        with self._state() as slots:
            now = self.clock()
            for slot in slots:
                if slot[1] == slot_id:
                    slot[0] = now
                    return
            slots.append([now, slot_id])  # pruned while in flight (lease ran out): still counts

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the duration of a request."""
        slot_id = self.acquire()
        try:
            yield
        finally:
            self.release(slot_id)


#: While a heartbeat's renewals keep failing (its store down), the failure is logged once, then at most
#: this often (seconds), then once more when a renewal succeeds again.
RENEW_LOG_EVERY = 60.0


class Throttle:
    """Says a recurring failure once, then at most every ``every`` seconds while it lasts, and its end.

    A store that is down fails every renewal (several a second): the log says so once per outage and then
    at a slow interval, not on every attempt. ``clock`` is injectable for tests.
    """

    def __init__(self, every: float = RENEW_LOG_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = float(every)
        self.clock = clock
        self.since: float | None = None  # when the current run of failures began
        self.failures = 0
        self._told = -math.inf

    def failed(self) -> bool:
        """Count one failure; True when this one should be logged."""
        now = self.clock()
        if self.since is None:
            self.since, self.failures, self._told = now, 0, -math.inf
        self.failures += 1
        if now - self._told >= self.every:
            self._told = now
            return True
        return False

    def recovered(self) -> float | None:
        """Seconds the failures lasted if there were any (the end is worth one line), else None."""
        if self.since is None:
            return None
        lasted, self.since = self.clock() - self.since, None
        return lasted


class Heartbeat:
    """Renews the leases of the slots this process holds, every third of a lease, in a daemon thread.

    A holder that is killed or stopped stops renewing: its slot then counts as ended when its lease runs
    out. ``renew`` gets the ids held at that moment; it runs under a lock that :meth:`drop` also takes, so
    a slot released meanwhile is never renewed after its end was stamped. Failed renewals are logged once
    per outage, then every :data:`RENEW_LOG_EVERY` s (:class:`Throttle`); ``where`` names the store.
    """

    def __init__(
        self,
        interval: float,
        renew: Callable[[list[str]], None],
        name: str,
        *,
        where: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._renew = renew
        self._name = name
        self.where = where
        self.throttle = Throttle(RENEW_LOG_EVERY, clock)
        self._cond = threading.Condition()
        self._held: set[str] = set()
        self._pid = -1

    def add(self, slot_id: str) -> None:
        if self._pid != os.getpid():  # first use, or a forked child: the parent's thread is not here
            self._cond = threading.Condition()
            self._held = set()
            self._pid = os.getpid()
            threading.Thread(target=self._run, name=self._name, daemon=True).start()
        with self._cond:
            self._held.add(slot_id)
            self._cond.notify()

    @contextlib.contextmanager
    def drop(self, slot_id: str) -> Iterator[None]:
        """Stop renewing ``slot_id``; the block (the stamping) runs before any further renewal."""
        with self._cond:
            self._held.discard(slot_id)
            yield

    def _run(self) -> None:
        pid = os.getpid()
        with self._cond:
            while self._pid == pid:
                if not self._held:
                    self._cond.wait()
                    continue
                due = time.monotonic() + self.interval
                while (left := due - time.monotonic()) > 0:
                    self._cond.wait(left)
                if self._held:
                    self.beat(sorted(self._held))

    def beat(self, slot_ids: list[str]) -> None:
        """One renewal of ``slot_ids``; a failure is logged as :class:`Throttle` allows, never raised (the
        leases then run out: safe, only capacity is lost)."""
        try:
            self._renew(slot_ids)
        except Exception as err:
            if self.throttle.failed():
                text = " ".join(str(err).split())[:200]
                if self.throttle.failures == 1:
                    log.warning(
                        "could not renew the lease of %d budget slots%s (%s): they count as ended when "
                        "their lease runs out; said again every %g s while this lasts",
                        len(slot_ids),
                        self.where,
                        text,
                        self.throttle.every,
                    )
                else:
                    log.warning(
                        "still cannot renew the budget leases%s after %.0f s (%d failed renewals): %s",
                        self.where,
                        self.throttle.clock() - (self.throttle.since or 0.0),
                        self.throttle.failures,
                        text,
                    )
            return
        lasted = self.throttle.recovered()
        if lasted is not None:
            log.warning("renewed the budget leases%s again after %.1f s of failures", self.where, lasted)
