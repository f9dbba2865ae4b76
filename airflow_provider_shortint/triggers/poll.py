"""The one poll step of both triggers: a symbol's newest trade date, asked from a thread, bounded in time.

The hooks are synchronous (REST: aiohttp on the hook's own event loop; the futu SDK, which starts
threads of its own), so each poll runs in a thread started for it; the event loop only awaits that
thread's future, for at most the time the caller allows. A poll that runs out of time is reported
(``timed_out``) and its thread abandoned, never awaited: a server that drips one byte a second cannot
hold a trigger past its deadline.

Threads: one per in-flight poll, and at most one in flight per trigger run (a poll that finds the
previous one still running waits for that one instead of sending another request). No fixed pool is
shared, so stuck requests of some triggers can never use up the threads a healthy trigger needs; the
count is bounded by the number of running triggers, plus threads abandoned by triggers that ended,
each of which ends with its request (the hook's own timeouts) or when its hook is closed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import math
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from airflow_provider_shortint.exceptions import (
    InvalidParameterError,
    NonRetryableError,
    ShortInterestError,
)
from airflow_provider_shortint.retry import backoff_delay
from airflow_provider_shortint.text import clip
from airflow_provider_shortint.transports.settings import TransportSettings

if TYPE_CHECKING:
    from airflow_provider_shortint.hooks.base import ShortInterestBaseHook

#: Shortest wait between two polls, whatever ``poke_interval`` says (a trigger must never spin).
MIN_POKE_INTERVAL = 0.1

#: The environment variable that sets the poll interval of sensors and triggers given ``poke_interval=None``,
#: read by the process that polls (the triggerer for a deferred sensor or an AssetWatcher, a worker for a
#: sensor in poke or reschedule mode), and its default: 15 minutes, one request per poll.
POKE_INTERVAL_VARIABLE = "SHORTINT_POKE_INTERVAL"
DEFAULT_POKE_INTERVAL = 900.0
MAX_POKE_INTERVAL = 86400.0


def configured_poke_interval() -> float:
    """Seconds between two polls as ``$SHORTINT_POKE_INTERVAL`` of this process says (default 900);
    a value that is not a number of seconds from 0.1 to 86400 raises ``InvalidParameterError``."""
    raw = os.environ.get(POKE_INTERVAL_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_POKE_INTERVAL
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not MIN_POKE_INTERVAL <= seconds <= MAX_POKE_INTERVAL:
        raise InvalidParameterError(
            f"{POKE_INTERVAL_VARIABLE} must be a number of seconds from {MIN_POKE_INTERVAL:g} to "
            f"{MAX_POKE_INTERVAL:g}, got {clip(repr(raw), 40)}"
        )
    return seconds


#: Longest wait for the hook's ``close()`` at the end of a run (the SDK's close joins its threads).
CLOSE_WAIT = 5.0

#: The connection defaults (DESIGN.md §4, declared in ``connection.py``), for a hook whose settings do
#: not name them.
_DEFAULT_TIMEOUT = TransportSettings.timeout
_DEFAULT_PERIOD = TransportSettings.rate_limit_period

PollKind = Literal["newest", "transient", "permanent"]
_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class PollResult:
    """What one poll found: the newest trade date (``kind="newest"``, None when there is no data yet),
    or a failure another poll may fix (``"transient"``) or cannot (``"permanent"``).

    ``message`` is one line, the provider's own text (never the token); ``timed_out`` marks a poll that
    ran out of time, its request perhaps still running in its thread.
    """

    kind: PollKind
    newest: dt.date | None = None
    message: str = ""
    timed_out: bool = False


def failure_message(err: BaseException) -> str:
    """One line for ``err``: the provider's message, or only the type of an unexpected error (its text
    may quote a request header, i.e. the token)."""
    if isinstance(err, ShortInterestError):
        return clip(err.message)
    return f"unexpected {type(err).__name__}"


def classify(err: BaseException) -> PollResult:
    """A failed poll: -3/-7/-8/401/403 (and a connection this provider cannot use) are permanent;
    -5, HTTP 429/5xx, timeouts, garbled bodies, a missing connection and anything unexpected are
    transient."""
    kind: PollKind = "permanent" if isinstance(err, NonRetryableError) else "transient"
    return PollResult(kind, message=failure_message(err))


def retry_wait(poke_interval: float, failures: int, max_backoff: float) -> float:
    """Seconds before the next poll after ``failures`` consecutive failed polls (the one retry policy's
    backoff with jitter): drawn from [p * 2**(n-1), p * 2**n] with p = ``poke_interval``, capped at
    ``max_backoff``, and never shorter than ``poke_interval``."""
    base = max(poke_interval, MIN_POKE_INTERVAL)
    return max(base, backoff_delay(failures + 1, base, max(max_backoff, base)))


def poll_wait(poke_interval: float) -> float:
    """Seconds before the next poll after a successful one."""
    return max(poke_interval, MIN_POKE_INTERVAL)


def poll_limit(hook: ShortInterestBaseHook) -> float:
    """Longest one poll may take when the caller has no nearer deadline: the connection's request
    timeout plus one budget period (a poll may wait that long for a slot), plus a second of slack."""
    settings: Any = getattr(hook, "settings", None)  # already loaded by ahook_for
    timeout = float(getattr(settings, "timeout", _DEFAULT_TIMEOUT))
    period = float(getattr(settings, "rate_limit_period", _DEFAULT_PERIOD))
    return timeout + period + 1.0


async def open_hook(conn_id: str) -> ShortInterestBaseHook:
    """The hook the connection's type registers (REST or OpenD), its settings read with
    ``aget_connection``; one attempt per request: the trigger's own loop is the retry."""
    from airflow_provider_shortint.hooks.base import ahook_for

    return await ahook_for(conn_id, max_retries=0)


class Poller:
    """One trigger run's polls of ``symbol`` through ``hook``: at most one request thread at a time,
    each poll bounded by the time its caller gives; :meth:`aclose` closes the hook."""

    def __init__(self, hook: ShortInterestBaseHook, symbol: str) -> None:
        self.hook = hook
        self.symbol = symbol
        self._pending: concurrent.futures.Future[dt.date | None] | None = None

    @property
    def busy(self) -> bool:
        """A request of an earlier poll is still running in its thread."""
        return self._pending is not None and not self._pending.done()

    async def poll_newest(self, limit: float) -> PollResult:
        """The newest trade date of the symbol (one request, count=1), waiting at most ``limit`` s.

        If the previous poll's request is still running, this poll waits for that one instead of
        starting another (its answer is just as new).
        """
        pending = self._pending if self._pending is not None and self.busy else self._start()
        self._pending = pending
        future = asyncio.wrap_future(pending)
        done, _ = await asyncio.wait({future}, timeout=max(limit, 0.0))
        if not done:
            future.cancel()  # only this wrapper: the thread's request cannot be cancelled, it is left
            return PollResult(
                "transient",
                message=f"{self.symbol}: no answer within {max(limit, 0.0):.1f} s (request still running)",
                timed_out=True,
            )
        try:
            return PollResult("newest", newest=future.result())
        except Exception as err:
            return classify(err)

    def _start(self) -> concurrent.futures.Future[dt.date | None]:
        return _in_thread(self._newest, f"shortint-poll-{self.symbol}")

    def _newest(self) -> dt.date | None:
        latest = self.hook.get_latest(self.symbol)
        return None if latest is None else latest["trade_date"]

    async def aclose(self) -> None:
        """Close the hook without blocking the loop: after the running request if one is stuck (in its
        thread, so it is abandoned, not awaited), else in a thread awaited for at most ``CLOSE_WAIT`` s."""
        hook, pending = self.hook, self._pending
        if pending is not None and not pending.done():
            pending.add_done_callback(lambda _: _close_quietly(hook))
            return
        closing = _in_thread(lambda: _close_quietly(hook), f"shortint-close-{self.symbol}")
        await asyncio.wait({asyncio.wrap_future(closing)}, timeout=CLOSE_WAIT)


def _in_thread(call: Callable[[], _T], name: str) -> concurrent.futures.Future[_T]:
    """Run ``call`` in a thread started for it (daemon: an abandoned one never blocks the process's exit);
    its outcome as a future."""
    outcome: concurrent.futures.Future[_T] = concurrent.futures.Future()
    outcome.set_running_or_notify_cancel()

    def run() -> None:
        try:
            value = call()
        except BaseException as err:  # handed to whoever awaits the future
            outcome.set_exception(err)
            return
        outcome.set_result(value)

    threading.Thread(target=run, name=name, daemon=True).start()
    return outcome


def _close_quietly(hook: ShortInterestBaseHook) -> None:
    try:
        hook.close()
    except Exception as err:  # a failing close must not hide the trigger's event
        hook.log.warning("closing the hook failed: %s", failure_message(err))
