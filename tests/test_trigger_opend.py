"""Both triggers over a ``futu_opend`` connection: the real futu-api client against the sandbox's OpenD door.

The connection goes through ``shortint_conn_id`` unchanged; the hook is the one its conn_type registers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from airflow_provider_shortint.sandbox import SandboxServer
from airflow_provider_shortint.triggers.short_interest import (
    ShortInterestNewRecordEventTrigger,
    ShortInterestNewRecordTrigger,
)
from tests._fixtures_opend_hook import opend_conn
from tests._fixtures_opend_hostile import HostileGateway
from tests._fixtures_slow import heartbeat, our_threads
from tests._helpers import wait_until


@pytest.fixture
def opend(opend_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Register a ``futu_opend`` connection on the sandbox's OpenD port; returns its conn id."""

    def register(conn_id: str = "shortint_default", **extra: Any) -> str:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", opend_conn(opend_sandbox.opend_port, **extra))
        return conn_id

    return register


async def watch_polls(seen: list[int], stop: asyncio.Event) -> None:
    """Every 20 ms until ``stop``: how many trigger polls are running in their own threads."""
    while not stop.is_set():
        await asyncio.sleep(0.02)
        seen.append(sum(1 for t in threading.enumerate() if t.name.startswith("shortint-poll-")))


def test_deferrable_trigger_over_opend_sees_a_published_date(
    opend_sandbox: SandboxServer, opend: Callable[..., str]
) -> None:
    conn_id = opend()
    trigger = ShortInterestNewRecordTrigger(
        symbol="HK.00700", after="2026-05-15", shortint_conn_id=conn_id, poke_interval=0.2
    )
    from airflow.sdk import BaseHook

    asyncio.run(BaseHook.aget_connection(conn_id))  # starts Airflow's own lookup thread (asgiref), once
    before = our_threads()

    # Every OpenD answer held 0.5 s: a poll in flight is then long enough to be seen by the loop.
    opend_sandbox.configure(delay_rate=1.0, delay_seconds=0.5)

    async def main() -> tuple[Any, int, list[float], list[int]]:
        gaps: list[float] = []
        in_flight: list[int] = []  # per loop tick: SDK polls running in their threads at that moment
        stop = asyncio.Event()
        beat = asyncio.ensure_future(heartbeat(gaps, stop))
        watch = asyncio.ensure_future(watch_polls(in_flight, stop))
        gen = trigger.run()
        task = asyncio.ensure_future(anext(gen))
        try:
            polls = 0
            for _ in range(400):  # bounded: at most ~20 s
                polls = opend_sandbox.stats()["by_transport"]["opend"]
                if polls >= 2 and any(in_flight):
                    break
                await asyncio.sleep(0.05)
            assert not task.done()
            opend_sandbox.configure(delay_rate=0.0)
            assert opend_sandbox.publish("HK") == dt.date(2026, 5, 22)
            event = await asyncio.wait_for(task, 30)
        finally:
            await gen.aclose()  # type: ignore[attr-defined]
            stop.set()
            await beat
            await watch
        return event, polls, gaps, in_flight

    event, polls_before, gaps, in_flight = asyncio.run(main())
    print(f"\nlongest event-loop gap {max(gaps):.3f} s; {sum(1 for n in in_flight if n)} ticks during a poll")
    assert event.payload == {"status": "success", "symbol": "HK.00700", "trade_date": "2026-05-22"}
    assert polls_before >= 2  # it polled over OpenD while nothing was new
    stats = opend_sandbox.stats()
    assert stats["by_transport"]["rest"] == 0
    # The synchronous SDK never blocked the event loop: the loop ran while a poll was in flight.
    assert any(in_flight), "no loop tick while an SDK call was in flight"
    leftover = our_threads() - before
    assert not leftover, leftover  # the trigger closed its OpenQuoteContext: no SDK thread of ours left


def test_deferrable_trigger_over_opend_rejected_symbol(opend: Callable[..., str]) -> None:
    conn_id = opend()

    async def main() -> Any:
        gen = ShortInterestNewRecordTrigger(
            symbol="HK.99999", shortint_conn_id=conn_id, poke_interval=0.2
        ).run()
        try:
            return await asyncio.wait_for(anext(gen), 30)
        finally:
            await gen.aclose()  # type: ignore[attr-defined]

    payload = asyncio.run(main()).payload
    assert payload["status"] == "error"
    assert payload["retryable"] is False
    assert "HK.99999" in payload["message"]


def test_event_trigger_over_opend_fires_once_per_new_date(
    opend_sandbox: SandboxServer, opend: Callable[..., str]
) -> None:
    conn_id = opend()
    trigger = ShortInterestNewRecordEventTrigger(
        symbol="HK.00700", shortint_conn_id=conn_id, poke_interval=0.2
    )

    async def next_event(gen: AsyncIterator[Any], pending: asyncio.Future[Any] | None, wait: float) -> Any:
        task = pending or asyncio.ensure_future(anext(gen))
        done, _ = await asyncio.wait({task}, timeout=wait)
        return (task.result(), None) if done else (None, task)

    async def main() -> list[Any]:
        gen = trigger.run()
        events = []
        pending: asyncio.Future[Any] | None = None
        try:
            event, pending = await next_event(gen, pending, 1.0)
            assert event is None  # the newest date at start is the baseline, not an event
            assert trigger.last_reported == dt.date(2026, 5, 15)
            opend_sandbox.publish("HK")
            event, pending = await next_event(gen, pending, 30)
            events.append(event)
            event, pending = await next_event(gen, pending, 0.7)
            assert event is None  # the same date does not fire twice
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
            await gen.aclose()  # type: ignore[attr-defined]
        return events

    (event,) = asyncio.run(main())
    assert event.payload == {"symbol": "HK.00700", "trade_date": "2026-05-22", "previous": "2026-05-15"}
    assert opend_sandbox.stats()["by_transport"]["rest"] == 0


@pytest.mark.parametrize("case", ["silent InitConnect", "unresolvable host"])
def test_cancelled_watcher_leaves_no_thread(
    hostile_opend: HostileGateway,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    # A gateway that never answers InitConnect (each poll's attempt ends at the 0.5 s timeout), or a host
    # that does not resolve (futu-api alone waited for ever on it).
    hostile_opend.behave(init="silent")
    host = "opend.shortint.invalid" if case == "unresolvable host" else "127.0.0.1"
    monkeypatch.setenv("AIRFLOW_CONN_WATCHED_OPEND", opend_conn(hostile_opend.port, host=host, timeout=0.5))
    trigger = ShortInterestNewRecordEventTrigger(
        symbol="HK.00700", shortint_conn_id="watched_opend", poke_interval=0.2
    )
    from airflow.sdk import BaseHook

    asyncio.run(BaseHook.aget_connection("watched_opend"))  # Airflow's own lookup thread, started once
    before = our_threads()

    from airflow_provider_shortint.triggers.poll import open_hook as real_open_hook

    hooks: list[Any] = []

    async def open_hook(conn_id: str) -> Any:  # the real hook, remembered to see its requests
        hooks.append(await real_open_hook(conn_id))
        return hooks[-1]

    monkeypatch.setattr("airflow_provider_shortint.triggers.short_interest.open_hook", open_hook)

    def polled() -> bool:  # a poll took its budget slot: it is in flight, or it has failed
        return any(hook.requests_made for hook in hooks)

    async def main() -> None:
        gen = trigger.run()
        task = asyncio.ensure_future(anext(gen))
        for _ in range(1500):  # bounded: until the first poll is in flight or has failed
            if polled():
                break
            await asyncio.sleep(0.02)
        assert polled() and not task.done()
        task.cancel()  # what the triggerer does to a watcher whose DAG went away
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await gen.aclose()  # type: ignore[attr-defined]

    asyncio.run(main())
    # The poll thread ends with its bounded attempt and closes the hook: no SDK, relay or poll thread stays.
    assert wait_until(lambda: not (our_threads() - before), guard=30), our_threads() - before


def test_deferrable_trigger_on_an_unresolvable_host_reports_a_permanent_error(
    futu_quiet: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_NOWHERE", opend_conn(11111, host="opend.shortint.invalid"))

    async def main() -> Any:
        gen = ShortInterestNewRecordTrigger(
            symbol="HK.00700", shortint_conn_id="nowhere", poke_interval=0.2
        ).run()
        try:
            return await asyncio.wait_for(anext(gen), 30)
        finally:
            await gen.aclose()  # type: ignore[attr-defined]

    payload = asyncio.run(main()).payload
    assert payload["status"] == "error" and payload["retryable"] is False
    assert "'opend.shortint.invalid' does not resolve" in payload["message"]
