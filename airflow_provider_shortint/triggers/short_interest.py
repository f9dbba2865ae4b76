"""Triggers that wait in the triggerer for a newer short-interest record of one symbol.

* :class:`ShortInterestNewRecordTrigger` - what ``ShortInterestNewRecordSensor(deferrable=True)`` defers
  to: fires one event (success, error or timeout) and ends.
* :class:`ShortInterestNewRecordEventTrigger` - a ``BaseEventTrigger`` for ``AssetWatcher``: runs forever
  and fires once per new trade date, so a DAG can be scheduled on new short-interest data.

Both keep only plain values in their kwargs (never the token, never objects), get the hook the
connection's type registers (REST or OpenD) with the connection read once per run through
``aget_connection``, and poll through the one poll step of :mod:`.poll`: each request in a thread of
its own, bounded by the time left, so the triggerer's loop never blocks, a stuck request cannot hold a
trigger past its deadline, and stuck triggers never starve the others.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, BaseTrigger, TriggerEvent

from airflow_provider_shortint.exceptions import InvalidParameterError
from airflow_provider_shortint.symbols import normalize_symbol
from airflow_provider_shortint.triggers.poll import (
    DEFAULT_POKE_INTERVAL,
    MIN_POKE_INTERVAL,
    Poller,
    PollResult,
    classify,
    configured_poke_interval,
    failure_message,
    open_hook,
    poll_limit,
    poll_wait,
    retry_wait,
)
from airflow_provider_shortint.validation import is_template, positive_int

__all__ = ["MIN_POKE_INTERVAL", "ShortInterestNewRecordEventTrigger", "ShortInterestNewRecordTrigger"]

_MODULE = __name__


def _iso(value: object, name: str) -> str | None:
    """Validate an ISO date (str/date/datetime/None) and return it as ``YYYY-MM-DD`` (or None)."""
    from airflow_provider_shortint.validation import to_date

    day = to_date(value, name)
    return None if day is None else day.isoformat()


def _interval(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InvalidParameterError(f"{name} must be a non-negative number of seconds, got {value!r}")
    return float(value)


def _poke_interval(value: object) -> float | None:
    """``poke_interval`` as given; None stays None: ``$SHORTINT_POKE_INTERVAL`` of the triggerer decides."""
    return None if value is None else _interval(value, "poke_interval")


def _event(payload: dict[str, Any]) -> TriggerEvent:
    return TriggerEvent(payload)  # type: ignore[no-untyped-call]


def _serialized(trigger: BaseTrigger, names: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """A trigger's class path and its constructor kwargs (plain values only: never the token)."""
    return f"{_MODULE}.{type(trigger).__name__}", {name: getattr(trigger, name) for name in names}


def _connection_failure(conn_id: str, symbol: str, err: Exception) -> PollResult:
    """A connection that cannot give a hook: permanent if its settings are wrong, else (e.g. not defined
    yet on this host) transient."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    # "The conn_id `x` isn't defined" holds no secret; other errors are described as the poll step does.
    not_found = isinstance(err, AirflowNotFoundException)
    reason = " ".join(str(err).split()) if not_found else failure_message(err)
    return PollResult(classify(err).kind, message=f"{symbol}: cannot use connection {conn_id!r}: {reason}")


class ShortInterestNewRecordTrigger(BaseTrigger):
    """Poll until ``symbol``'s newest record has ``trade_date > after`` (any record if ``after`` is None).

    Events (one, then the trigger ends):

    * ``{"status": "success", "symbol": "HK.00700", "trade_date": "2026-05-22"}``
    * ``{"status": "error", "symbol": ..., "message": ..., "retryable": bool}`` - at once for -3/-7/-8/401/403
      (``retryable`` False), or after ``max_failures`` consecutive failed polls (``retryable`` True)
    * ``{"status": "timeout", "symbol": ..., "message": ...}`` - ``deadline`` (Unix time) passed, also
      while a request was stuck (the poll waits only for the time left; the stuck thread is abandoned)

    :param symbol: "HK.00700", "US.AAPL" (normalised; validated here, before any request)
    :param after: ISO date ``YYYY-MM-DD`` or None
    :param shortint_conn_id: the Airflow connection to use
    :param poke_interval: seconds between polls (at least 0.1); slept after every poll that did not end;
        None: ``$SHORTINT_POKE_INTERVAL`` of the triggerer (default 900), read when the trigger starts
    :param max_failures: consecutive failed polls (5xx, 429, -5, timeouts) before an error event
    :param max_backoff: cap of the doubling, jittered wait after failures (never below ``poke_interval``)
    :param deadline: Unix time after which a ``timeout`` event ends the wait (None: only Airflow's
        deferral timeout applies)
    """

    def __init__(
        self,
        symbol: str,
        after: str | dt.date | None = None,
        shortint_conn_id: str = "shortint_default",
        poke_interval: float | None = 60.0,
        max_failures: int = 10,
        max_backoff: float = 600.0,
        deadline: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.symbol = normalize_symbol(symbol)
        self.after = _iso(after, "after")
        self.shortint_conn_id = str(shortint_conn_id)
        self.poke_interval = _poke_interval(poke_interval)
        self.max_failures = positive_int(max_failures, "max_failures")
        self.max_backoff = _interval(max_backoff, "max_backoff")
        self.deadline = None if deadline is None else _interval(deadline, "deadline")

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return _serialized(
            self,
            (
                "symbol",
                "after",
                "shortint_conn_id",
                "poke_interval",
                "max_failures",
                "max_backoff",
                "deadline",
            ),
        )

    def _error(self, message: str, retryable: bool) -> TriggerEvent:
        return _event({"status": "error", "symbol": self.symbol, "message": message, "retryable": retryable})

    def _timeout(self, stuck: bool) -> TriggerEvent:
        detail = " (the last request was still running)" if stuck else ""
        message = (
            f"{self.symbol}: no record newer than {self.after or 'nothing'} appeared before the "
            f"sensor's timeout{detail}"
        )
        return _event({"status": "timeout", "symbol": self.symbol, "message": message})

    def _time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        symbol = self.symbol
        after = None if self.after is None else dt.date.fromisoformat(self.after)
        try:
            interval = configured_poke_interval() if self.poke_interval is None else self.poke_interval
        except InvalidParameterError as err:
            self.log.error("%s: %s", symbol, err.message)
            yield self._error(f"{symbol}: {err.message}", retryable=False)
            return
        try:
            hook = await open_hook(self.shortint_conn_id)
        except Exception as err:
            failure = _connection_failure(self.shortint_conn_id, symbol, err)
            self.log.error("%s", failure.message)
            yield self._error(failure.message, retryable=failure.kind == "transient")
            return
        poller = Poller(hook, symbol)
        try:
            failures = 0
            while True:
                left = self._time_left()
                if left is not None and left <= 0:
                    yield self._timeout(stuck=False)
                    return
                limit = poll_limit(hook) if left is None else min(poll_limit(hook), left)
                result = await poller.poll_newest(limit)
                if result.timed_out and (left := self._time_left()) is not None and left <= 0:
                    self.log.warning("%s; the deadline has passed", result.message)
                    yield self._timeout(stuck=True)
                    return
                if result.kind == "permanent":
                    self.log.error("%s: not retrying: %s", symbol, result.message)
                    yield self._error(result.message, retryable=False)
                    return
                if result.kind == "transient":
                    failures += 1
                    if failures >= self.max_failures:
                        summary = (
                            f"{symbol}: {failures} consecutive polls failed; last error: {result.message}"
                        )
                        self.log.error("%s", summary)
                        yield self._error(summary, retryable=True)
                        return
                    delay = retry_wait(interval, failures, self.max_backoff)
                    self.log.warning(
                        "%s: poll failed (%d of %d allowed in a row), next poll in %.1f s: %s",
                        symbol,
                        failures,
                        self.max_failures,
                        delay,
                        result.message,
                    )
                else:
                    failures = 0
                    newest = result.newest
                    if newest is not None and (after is None or newest > after):
                        self.log.info("%s: new record %s (after %s)", symbol, newest, self.after)
                        yield _event(
                            {"status": "success", "symbol": symbol, "trade_date": newest.isoformat()}
                        )
                        return
                    delay = poll_wait(interval)
                    self.log.info(
                        "%s: newest record %s, waiting for one after %s; next poll in %.1f s",
                        symbol,
                        newest or "none",
                        self.after,
                        delay,
                    )
                if (left := self._time_left()) is not None:
                    delay = max(min(delay, left), 0.0)
                await asyncio.sleep(delay)
        finally:
            await poller.aclose()


class ShortInterestNewRecordEventTrigger(BaseEventTrigger):
    """Event-driven scheduling: fire once per new trade date of ``symbol`` (for ``AssetWatcher``).

    Runs forever in the triggerer. Each poll asks for the newest record (one request); when its
    ``trade_date`` is newer than the last one reported, yields
    ``TriggerEvent({"symbol": "HK.00700", "trade_date": "2026-05-22", "previous": "2026-05-15"})``
    (the payload lands in the asset event's ``extra["payload"]``).

    The reference is ``after`` at first; with ``after=None`` the first successful poll only records the
    current newest date (no event), so deploying a DAG does not fire for data that already existed.
    The last reported date is kept in memory and, when the triggerer provides one (Airflow >= 3.3,
    a trigger watching a single asset), in the asset's state store, so a triggerer restart does not
    fire twice for the same date.

    Errors never end the trigger (an event would schedule the DAG): transient ones (including a poll
    that got no answer within the connection's timeout plus one budget period) back off (doubling, with
    jitter, up to ``max_backoff``); non-retryable ones (-7/-8/-3, 401/403) are logged as errors and
    retried only every ``max_backoff`` seconds.

    All kwargs are static values (no templates): Airflow identifies a watcher by the hash of its
    classpath and kwargs, so they must not change from one DAG parse to the next.
    """

    STATE_KEY_PREFIX = "shortint.last_trade_date"

    def __init__(
        self,
        symbol: str,
        after: str | dt.date | None = None,
        shortint_conn_id: str = "shortint_default",
        poke_interval: float | None = 300.0,
        max_backoff: float = 3600.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if is_template(symbol):
            raise InvalidParameterError(f"symbol of an event trigger cannot be a template: {symbol!r}")
        self.symbol = normalize_symbol(symbol)
        self.after = _iso(after, "after")
        self.shortint_conn_id = str(shortint_conn_id)
        self.poke_interval = _poke_interval(poke_interval)
        self.max_backoff = _interval(max_backoff, "max_backoff")
        self.last_reported: dt.date | None = None  # runtime state, not a kwarg

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return _serialized(self, ("symbol", "after", "shortint_conn_id", "poke_interval", "max_backoff"))

    @property
    def state_key(self) -> str:
        return f"{self.STATE_KEY_PREFIX}.{self.symbol}"

    async def _load_state(self) -> dt.date | None:
        store = getattr(self, "asset_state_store", None)
        if store is None:
            return None
        try:
            if hasattr(store, "aget"):
                value = await store.aget(self.state_key, default=None)
            else:
                value = await asyncio.to_thread(store.get, self.state_key, default=None)
            return dt.date.fromisoformat(value) if isinstance(value, str) else None
        except Exception as err:  # several watched assets, old Airflow, store down: in-memory only
            self.log.warning(
                "%s: no persistent state (%s); keeping the last date in memory", self.symbol, err
            )
            return None

    async def _save_state(self, day: dt.date) -> None:
        store = getattr(self, "asset_state_store", None)
        if store is None:
            return
        try:
            if hasattr(store, "aset"):
                await store.aset(self.state_key, day.isoformat())
            else:
                await asyncio.to_thread(store.set, self.state_key, day.isoformat())
        except Exception as err:
            self.log.warning("%s: could not store the last reported date: %s", self.symbol, err)

    async def _poll(self, poller: Poller | None) -> tuple[Poller | None, PollResult]:
        """One poll; the hook is opened (connection read once) by the first poll that can open it."""
        if poller is None:
            try:
                hook = await open_hook(self.shortint_conn_id)
            except Exception as err:
                return None, _connection_failure(self.shortint_conn_id, self.symbol, err)
            poller = Poller(hook, self.symbol)
        return poller, await poller.poll_newest(poll_limit(poller.hook))

    def _interval(self) -> float:
        """``poke_interval``, or the triggerer's ``$SHORTINT_POKE_INTERVAL``; a bad value is logged and the
        default used (an event trigger never ends: an event would schedule the DAG)."""
        if self.poke_interval is not None:
            return self.poke_interval
        try:
            return configured_poke_interval()
        except InvalidParameterError as err:
            self.log.error("%s: %s; polling every %g s", self.symbol, err.message, DEFAULT_POKE_INTERVAL)
            return DEFAULT_POKE_INTERVAL

    async def run(self) -> AsyncIterator[TriggerEvent]:
        symbol = self.symbol
        after = None if self.after is None else dt.date.fromisoformat(self.after)
        interval = self._interval()
        stored = await self._load_state()
        known = [d for d in (after, stored, self.last_reported) if d is not None]
        last: dt.date | None = max(known) if known else None
        self.last_reported = last
        needs_baseline = last is None  # after=None and nothing stored: the first poll sets the reference
        poller: Poller | None = None
        failures = 0
        try:
            while True:
                poller, result = await self._poll(poller)
                if result.kind == "permanent":
                    delay = max(self.max_backoff, poll_wait(interval))
                    self.log.error("%s: %s; polling again in %.0f s", symbol, result.message, delay)
                elif result.kind == "transient":
                    failures += 1
                    delay = retry_wait(interval, failures, self.max_backoff)
                    self.log.warning(
                        "%s: poll failed (%d in a row), next poll in %.1f s: %s",
                        symbol,
                        failures,
                        delay,
                        result.message,
                    )
                else:
                    failures = 0
                    delay = poll_wait(interval)
                    newest = result.newest
                    if needs_baseline:
                        # No data yet (-10) leaves the reference empty: the first record will count.
                        needs_baseline = False
                        if newest is not None:
                            self.log.info("%s: newest record %s; waiting for a newer one", symbol, newest)
                            last = self.last_reported = newest
                            await self._save_state(newest)
                    elif newest is not None and (last is None or newest > last):
                        self.log.info("%s: new record %s (previous %s)", symbol, newest, last)
                        payload = {
                            "symbol": symbol,
                            "trade_date": newest.isoformat(),
                            "previous": None if last is None else last.isoformat(),
                        }
                        last = self.last_reported = newest
                        await self._save_state(newest)
                        yield _event(payload)
                await asyncio.sleep(delay)
        finally:
            if poller is not None:
                await poller.aclose()
