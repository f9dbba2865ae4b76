"""Both triggers over a ``futu_opend`` connection: the real futu-api client against the sandbox's OpenD door.

The connection goes through ``shortint_conn_id`` unchanged; the hook is the one its conn_type registers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from airflow_provider_shortint.sandbox import SandboxServer
from airflow_provider_shortint.triggers.short_interest import (
    ShortInterestNewRecordEventTrigger,
    ShortInterestNewRecordTrigger,
)
from tests._fixtures_opend_hook import opend_conn
from tests._fixtures_slow import heartbeat, our_threads


@pytest.fixture
def opend(opend_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Register a ``futu_opend`` connection on the sandbox's OpenD port; returns its conn id."""

    def register(conn_id: str = "shortint_default", **extra: Any) -> str:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", opend_conn(opend_sandbox.opend_port, **extra))
        return conn_id

    return register


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

    async def main() -> tuple[Any, int, list[float]]:
        gaps: list[float] = []
        stop = asyncio.Event()
        beat = asyncio.ensure_future(heartbeat(gaps, stop))
        gen = trigger.run()
        task = asyncio.ensure_future(anext(gen))
        try:
            await asyncio.sleep(1.0)
            assert not task.done()
            polls = opend_sandbox.stats()["by_transport"]["opend"]
            assert opend_sandbox.publish("HK") == dt.date(2026, 5, 22)
            event = await asyncio.wait_for(task, 30)
        finally:
            await gen.aclose()  # type: ignore[attr-defined]
            stop.set()
            await beat
        return event, polls, gaps

    event, polls_before, gaps = asyncio.run(main())
    assert event.payload == {"status": "success", "symbol": "HK.00700", "trade_date": "2026-05-22"}
    assert polls_before >= 2  # it polled over OpenD while nothing was new
    stats = opend_sandbox.stats()
    assert stats["by_transport"]["rest"] == 0
    assert max(gaps) < 1.0  # the synchronous SDK never blocked the event loop
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
