"""Triggers against a server that never finishes an answer: deadlines hold, no trigger starves another.

The hostile server (tests/_fixtures_slow.py) drips one byte every 0.2 s, so the connection's per-read
timeout never fires; the triggers run together in one event loop, as in the triggerer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from airflow_provider_shortint.sandbox import SandboxServer
from airflow_provider_shortint.triggers import short_interest as short_interest_triggers
from airflow_provider_shortint.triggers.short_interest import (
    ShortInterestNewRecordEventTrigger,
    ShortInterestNewRecordTrigger,
)
from tests._fixtures_slow import DripServer, heartbeat

STUCK = 5  # more than the 4 threads of the pool the triggers used to share


def import_transport() -> None:
    """Import what a first request imports, so that on a busy machine the request reaches the server
    well before a short deadline."""
    from airflow_provider_shortint.hooks.base import hook_for

    hook_for("shortint_stuck").close()
    import aiohttp  # noqa: F401


async def watch_held(server: DripServer, held: list[int], stop: asyncio.Event) -> None:
    """Every 20 ms until ``stop``: how many requests ``server`` holds open."""
    while not stop.is_set():
        await asyncio.sleep(0.02)
        held.append(server.open_connections)


def poll_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("shortint-poll-")]


async def close_all(gens: Sequence[AsyncIterator[Any]], tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Cancel pending first events, then close the generators (as the triggerer cancels a trigger)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for gen in gens:
        await gen.aclose()  # type: ignore[attr-defined]


def test_deadline_is_kept_while_the_request_is_stuck(
    drip_server: DripServer, use_conn: Callable[..., str]
) -> None:
    conn_id = use_conn(drip_server.url, conn_id="shortint_stuck", timeout=30)
    import_transport()
    deadline_in = 2.0
    trigger = ShortInterestNewRecordTrigger(
        symbol="HK.00700",
        shortint_conn_id=conn_id,
        poke_interval=0.2,
        deadline=time.time() + deadline_in,
    )

    async def main() -> tuple[Any, float, int, list[float], list[int]]:
        gaps: list[float] = []
        held: list[int] = []  # per loop tick: requests the server holds open at that moment
        stop = asyncio.Event()
        beat = asyncio.ensure_future(heartbeat(gaps, stop))
        watch = asyncio.ensure_future(watch_held(drip_server, held, stop))
        started = time.monotonic()
        gen = trigger.run()
        try:
            event = await asyncio.wait_for(anext(gen), 30)
            stuck_now = drip_server.open_connections
        finally:
            await gen.aclose()  # type: ignore[attr-defined]
            stop.set()
            await beat
            await watch
        return event, time.monotonic() - started, stuck_now, gaps, held

    event, elapsed, stuck_now, gaps, held = asyncio.run(main())
    print(
        f"\ndeadline {deadline_in} s: timeout event after {elapsed:.2f} s, longest loop gap {max(gaps):.3f} s"
    )
    assert event.payload["status"] == "timeout"
    assert event.payload["symbol"] == "HK.00700"
    assert "still running" in event.payload["message"]
    # The order that matters: the timeout came while the server (holding it for 60 s) still had the
    # request open, and the event loop kept running while it did (never blocked by the request).
    assert stuck_now == 1
    assert drip_server.accepted == 1
    assert any(held), "no loop tick while the request was held by the server"


def test_healthy_trigger_fires_beside_stuck_ones(
    drip_server: DripServer, sandbox: SandboxServer, use_conn: Callable[..., str]
) -> None:
    stuck_conn = use_conn(drip_server.url, conn_id="shortint_stuck", timeout=30)
    healthy_conn = use_conn(sandbox.url, conn_id="shortint_healthy")
    stuck = [
        ShortInterestNewRecordTrigger(
            symbol=f"HK.{700 + n:05d}",
            shortint_conn_id=stuck_conn,
            poke_interval=0.2,
            deadline=time.time() + 120,
        )
        for n in range(STUCK)
    ]
    healthy = ShortInterestNewRecordTrigger(
        symbol="HK.00700", after="2026-05-08", shortint_conn_id=healthy_conn, poke_interval=0.2
    )

    async def main() -> tuple[Any, bool, int]:
        gens = [t.run() for t in stuck]
        tasks = [asyncio.ensure_future(anext(g)) for g in gens]
        healthy_gen = healthy.run()
        try:
            all_stuck = await asyncio.to_thread(drip_server.wait_for_open, STUCK)
            threads = len(poll_threads())
            started = time.monotonic()
            event = await asyncio.wait_for(anext(healthy_gen), 30)
            print(f"\nhealthy trigger beside {STUCK} stuck: event after {time.monotonic() - started:.2f} s")
            assert not any(task.done() for task in tasks)  # the stuck ones are still waiting
        finally:
            await healthy_gen.aclose()  # type: ignore[attr-defined]
            await close_all(gens, tasks)
        return event, all_stuck, threads

    event, all_stuck, threads = asyncio.run(main())
    assert all_stuck, f"only {drip_server.open_connections} of {STUCK} requests reached the slow server"
    assert threads >= STUCK  # one thread per stuck request: no shared pool for them to use up
    assert event.payload == {"status": "success", "symbol": "HK.00700", "trade_date": "2026-05-15"}
    assert sandbox.stats()["requests"] == 1


def test_many_short_deadlines_all_end_in_time(drip_server: DripServer, use_conn: Callable[..., str]) -> None:
    conn_id = use_conn(drip_server.url, conn_id="shortint_stuck", timeout=30)
    triggers = [
        ShortInterestNewRecordTrigger(
            symbol=f"US.T{n}", shortint_conn_id=conn_id, poke_interval=0.2, deadline=time.time() + 1.0
        )
        for n in range(8)
    ]

    async def main() -> tuple[list[Any], float, int]:
        started = time.monotonic()
        gens = [t.run() for t in triggers]
        try:
            events = await asyncio.wait_for(asyncio.gather(*(anext(g) for g in gens)), 30)
            still_held = drip_server.open_connections
        finally:
            for gen in gens:
                await gen.aclose()  # type: ignore[attr-defined]
        return events, time.monotonic() - started, still_held

    events, elapsed, still_held = asyncio.run(main())
    print(f"\n8 triggers, 1-s deadlines, all stuck: all timeout events after {elapsed:.2f} s")
    assert [e.payload["status"] for e in events] == ["timeout"] * 8
    assert drip_server.accepted == 8
    # Every deadline ended its trigger while the server (holding each request 60 s) still held all 8.
    assert still_held == 8


def test_event_trigger_counts_a_stuck_poll_as_failed_and_keeps_one_thread(
    drip_server: DripServer,
    use_conn: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # The request's own bound (30 s) is far; the poll's limit (normally timeout + one budget period + 1 s)
    # is cut to 0.8 s so that the trigger's own bound is what ends each poll.
    monkeypatch.setattr(short_interest_triggers, "poll_limit", lambda hook: 0.8)
    conn_id = use_conn(drip_server.url, conn_id="shortint_stuck", timeout=30)
    trigger = ShortInterestNewRecordEventTrigger(
        symbol="HK.00700", shortint_conn_id=conn_id, poke_interval=0.1, max_backoff=0.2
    )

    async def main() -> int:
        gen = trigger.run()
        task = asyncio.ensure_future(anext(gen))
        most = 0
        try:
            for _ in range(40):  # about 4 s: several poll limits
                await asyncio.sleep(0.1)
                most = max(most, len([t for t in poll_threads() if t.name.endswith("HK.00700")]))
            assert not task.done()  # failures never fire an event
        finally:
            await close_all([gen], [task])
        return most

    most = asyncio.run(main())
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert logged.count("no answer within 0.8 s (request still running)") >= 2
    assert most == 1  # a poll that finds the previous request still running waits for it
    assert drip_server.accepted == 1  # ... instead of sending another one
