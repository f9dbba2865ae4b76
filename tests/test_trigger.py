"""ShortInterestNewRecordTrigger and ShortInterestNewRecordEventTrigger against a real sandbox over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from airflow_provider_shortint.exceptions import InvalidParameterError, UnsupportedSecurityError
from airflow_provider_shortint.sandbox import SandboxServer
from airflow_provider_shortint.triggers.short_interest import (
    ShortInterestNewRecordEventTrigger,
    ShortInterestNewRecordTrigger,
)

TOKEN = "s3cr3t-token"


def first_event(trigger: Any, timeout: float = 20.0) -> Any:
    """Run ``trigger.run()`` until its first event, as the triggerer (and `airflow dags test`) would."""

    async def main() -> Any:
        gen = trigger.run()
        try:
            return await asyncio.wait_for(anext(gen), timeout)
        finally:
            await gen.aclose()

    return asyncio.run(main())


def rebuild(trigger: Any) -> Any:
    """What the triggerer does: import the class path and call it with the serialized kwargs."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    json.dumps(kwargs)  # plain values only
    return getattr(importlib.import_module(module), name)(**kwargs)


# -- ShortInterestNewRecordTrigger ---------------------------------------------------------------------------


def test_serialize_round_trip_and_plain_kwargs() -> None:
    trigger = ShortInterestNewRecordTrigger(
        symbol="hk.700",
        after=dt.date(2026, 5, 15),
        shortint_conn_id="my_conn",
        poke_interval=30,
        max_failures=4,
        max_backoff=120,
        deadline=1_900_000_000,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_shortint.triggers.short_interest.ShortInterestNewRecordTrigger"
    assert kwargs == {
        "symbol": "HK.00700",
        "after": "2026-05-15",
        "shortint_conn_id": "my_conn",
        "poke_interval": 30.0,
        "max_failures": 4,
        "max_backoff": 120.0,
        "deadline": 1_900_000_000.0,
    }
    again = rebuild(trigger)
    assert type(again) is ShortInterestNewRecordTrigger
    assert again.serialize() == (classpath, kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"symbol": "HK.ABC"}, InvalidParameterError),
        ({"symbol": "SH.600000"}, UnsupportedSecurityError),
        ({"symbol": "HK.00700", "after": "15/05/2026"}, InvalidParameterError),
        ({"symbol": "HK.00700", "poke_interval": -1}, InvalidParameterError),
        ({"symbol": "HK.00700", "max_failures": 0}, InvalidParameterError),
    ],
)
def test_bad_kwargs_rejected(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        ShortInterestNewRecordTrigger(**kwargs)


def test_fires_at_once_when_newer_exists(sandbox: SandboxServer, use_conn: Callable[..., str]) -> None:
    use_conn(sandbox.url)
    event = first_event(
        ShortInterestNewRecordTrigger(symbol="HK.00700", after="2026-05-08", poke_interval=0.2)
    )
    assert event.payload == {"status": "success", "symbol": "HK.00700", "trade_date": "2026-05-15"}
    assert sandbox.stats()["requests"] == 1


def test_waits_then_fires_after_publish(sandbox: SandboxServer, use_conn: Callable[..., str]) -> None:
    use_conn(sandbox.url)
    trigger = rebuild(ShortInterestNewRecordTrigger(symbol="HK.00700", after="2026-05-15", poke_interval=0.2))

    async def polled_twice() -> None:
        while sandbox.stats()["requests"] < 2:
            await asyncio.sleep(0.01)

    async def main() -> tuple[Any, int, float]:
        gen = trigger.run()
        task = asyncio.ensure_future(anext(gen))
        await asyncio.wait_for(polled_twice(), 30)  # the guard only stops a hang
        assert not task.done()  # two polls found nothing new: no event
        before = sandbox.stats()["requests"]
        published_at = time.monotonic()
        assert sandbox.publish("HK") == dt.date(2026, 5, 22)
        event = await asyncio.wait_for(task, 5)
        await gen.aclose()
        return event, before, time.monotonic() - published_at

    event, polls_before, latency = asyncio.run(main())
    print(f"\nnew record seen {latency:.2f} s after it was published")
    assert event.payload == {"status": "success", "symbol": "HK.00700", "trade_date": "2026-05-22"}
    assert polls_before >= 2  # it polled while nothing was new
    # Seen by the first poll after the publish (or the one in flight then): no more than two requests.
    assert sandbox.stats()["requests"] - polls_before <= 2


def test_no_data_keeps_waiting(sandbox: SandboxServer, use_conn: Callable[..., str]) -> None:
    use_conn(sandbox.url)
    trigger = ShortInterestNewRecordTrigger(symbol="HK.99997", poke_interval=0.2, deadline=time.time() + 0.7)
    event = first_event(trigger)
    assert event.payload["status"] == "timeout"
    assert 1 <= sandbox.stats()["requests"] <= 5  # polls until the deadline, one per 0.2 s: no hot loop


def test_deadline_yields_timeout_event(sandbox: SandboxServer, use_conn: Callable[..., str]) -> None:
    use_conn(sandbox.url)
    trigger = ShortInterestNewRecordTrigger(
        symbol="HK.00700", after="2026-05-15", poke_interval=0.2, deadline=time.time() + 0.5
    )
    started = time.monotonic()
    event = first_event(trigger)
    print(f"\n0.5-s deadline: timeout event after {time.monotonic() - started:.2f} s")
    assert event.payload["status"] == "timeout"
    assert "HK.00700" in event.payload["message"]
    assert 1 <= sandbox.stats()["requests"] <= 4  # it polled until the deadline, one poll per 0.2 s


def test_always_failing_api_backs_off_then_errors(
    sandbox: SandboxServer,
    use_conn: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    sandbox.configure(http5xx_rate=1.0, token=TOKEN)
    use_conn(sandbox.url, password=TOKEN)
    trigger = ShortInterestNewRecordTrigger(
        symbol="HK.00700", after="2026-05-15", poke_interval=0.2, max_failures=4
    )
    assert TOKEN not in repr(trigger)
    assert TOKEN not in json.dumps(trigger.serialize())
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    event = first_event(trigger)
    elapsed = time.monotonic() - started

    payload = event.payload
    assert payload["status"] == "error"
    assert payload["retryable"] is True
    assert "4 consecutive polls failed" in payload["message"]
    stats = sandbox.stats()
    assert stats["requests"] == 4  # one request per poll: the hook does not retry inside the trigger
    assert set(stats["by_status"]) <= {"500", "502", "503"}
    stamps = stats["timestamps"]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(gap >= 0.2 - 0.01 for gap in gaps), gaps
    # Doubling backoff with jitter: 0.2-0.4, 0.4-0.8, 0.8-1.6 s (lower bounds only: a busy machine
    # can only lengthen a wait).
    assert gaps[1] >= 0.4 - 0.01 and gaps[2] >= 0.8 - 0.01, gaps
    print(f"\n4 failing polls in {elapsed:.2f} s, gaps {[round(g, 2) for g in gaps]}")
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert "poll failed" in logged
    for text in (logged, repr(payload), repr(trigger)):
        assert TOKEN not in text


def test_non_retryable_errors_end_at_once(sandbox: SandboxServer, use_conn: Callable[..., str]) -> None:
    use_conn(sandbox.url)
    for symbol, code in (("HK.99999", "-7"), ("US.VIX", "-8")):
        sandbox.reset_stats()
        event = first_event(ShortInterestNewRecordTrigger(symbol=symbol, poke_interval=0.2))
        assert event.payload["status"] == "error"
        assert event.payload["retryable"] is False
        assert code in event.payload["message"]
        assert sandbox.stats()["requests"] == 1


def test_missing_connection_is_an_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_SHORTINT_NOPE", raising=False)
    event = first_event(ShortInterestNewRecordTrigger(symbol="HK.00700", shortint_conn_id="shortint_nope"))
    assert event.payload["status"] == "error"
    assert "shortint_nope" in event.payload["message"]


def test_refused_token_is_not_retried(
    sandbox: SandboxServer, use_conn: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.configure(token="the-right-one")
    use_conn(sandbox.url, password=TOKEN)
    event = first_event(ShortInterestNewRecordTrigger(symbol="HK.00700", poke_interval=0.2))
    assert event.payload["status"] == "error"
    assert event.payload["retryable"] is False
    assert sandbox.stats()["requests"] == 1
    assert TOKEN not in repr(event.payload) + caplog.text


# -- ShortInterestNewRecordEventTrigger (AssetWatcher) -------------------------------------------------------


def test_event_trigger_construct_serialize_and_hash() -> None:
    from airflow.sdk import Asset, AssetWatcher
    from airflow.triggers.base import BaseEventTrigger

    trigger = ShortInterestNewRecordEventTrigger(symbol="hk.700", poke_interval=60)
    classpath, kwargs = trigger.serialize()
    assert classpath.endswith("short_interest.ShortInterestNewRecordEventTrigger")
    assert kwargs == {
        "symbol": "HK.00700",
        "after": None,
        "shortint_conn_id": "shortint_default",
        "poke_interval": 60.0,
        "max_backoff": 3600.0,
    }
    assert rebuild(trigger).serialize() == (classpath, kwargs)
    # The watcher's identity must not change between DAG parses, nor after the trigger has run.
    same = ShortInterestNewRecordEventTrigger(symbol="HK.00700", poke_interval=60.0)
    same.last_reported = dt.date(2026, 5, 22)
    assert BaseEventTrigger.hash(*trigger.serialize()) == BaseEventTrigger.hash(*same.serialize())
    asset = Asset("shortint://HK.00700", watchers=[AssetWatcher(name="hk_00700_new", trigger=trigger)])
    assert asset.watchers[0].trigger is trigger


def test_event_trigger_in_a_serialized_dag() -> None:
    """The example of docs/SENSOR.md serialises as the DAG processor stores it."""
    from airflow.sdk import DAG, Asset, AssetWatcher
    from airflow.serialization.serialized_objects import DagSerialization

    trigger = ShortInterestNewRecordEventTrigger(symbol="HK.00700", poke_interval=600)
    asset = Asset("shortint://HK.00700", watchers=[AssetWatcher(name="hk_00700_new_record", trigger=trigger)])
    with DAG("on_new_short_interest", schedule=[asset]) as dag:
        pass
    text = json.dumps(DagSerialization.to_dict(dag))
    assert "ShortInterestNewRecordEventTrigger" in text
    assert "HK.00700" in text


def test_docs_asset_watcher_example_parses() -> None:
    """The AssetWatcher example of docs/SENSOR.md builds a DAG scheduled on the watched asset."""
    from pathlib import Path

    from airflow.serialization.serialized_objects import DagSerialization

    pytest.importorskip("airflow_provider_shortint.operators.short_interest")
    text = (Path(__file__).resolve().parents[1] / "docs" / "SENSOR.md").read_text()
    example = next(block for block in text.split("```python")[1:] if "AssetWatcher(" in block)
    namespace: dict[str, Any] = {}
    exec(compile(example.split("```")[0], "SENSOR.md", "exec"), namespace)
    dag = namespace["dag"]
    assert dag.schedule == [namespace["hk_00700"]]
    watcher = namespace["hk_00700"].watchers[0]
    assert isinstance(watcher.trigger, ShortInterestNewRecordEventTrigger)
    assert "ShortInterestNewRecordEventTrigger" in json.dumps(DagSerialization.to_dict(dag))


def test_event_trigger_rejects_templates() -> None:
    with pytest.raises(InvalidParameterError):
        ShortInterestNewRecordEventTrigger(symbol="{{ params.symbol }}")


class EventPump:
    """Read events from a never-ending trigger with timeouts, without cancelling it in between."""

    def __init__(self, trigger: Any) -> None:
        self.gen: AsyncIterator[Any] = trigger.run()
        self.pending: asyncio.Future[Any] | None = None

    async def next(self, timeout: float) -> Any:
        if self.pending is None:
            self.pending = asyncio.ensure_future(anext(self.gen))
        done, _ = await asyncio.wait({self.pending}, timeout=timeout)
        if not done:
            raise TimeoutError
        future, self.pending = self.pending, None
        return future.result()

    async def close(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pending
        await self.gen.aclose()  # type: ignore[attr-defined]


def test_event_trigger_fires_once_per_new_date(sandbox: SandboxServer, use_conn: Callable[..., str]) -> None:
    use_conn(sandbox.url)
    trigger = rebuild(ShortInterestNewRecordEventTrigger(symbol="HK.00700", poke_interval=0.2))

    async def main() -> list[Any]:
        pump = EventPump(trigger)
        events = []
        # Baseline: the newest record at start (2026-05-15) is not new.
        with pytest.raises(asyncio.TimeoutError):
            await pump.next(0.7)
        assert trigger.last_reported == dt.date(2026, 5, 15)
        sandbox.publish("HK")
        events.append(await pump.next(5))
        # The same date does not fire twice.
        with pytest.raises(asyncio.TimeoutError):
            await pump.next(0.7)
        sandbox.publish("HK")
        events.append(await pump.next(5))
        await pump.close()
        return events

    first, second = asyncio.run(main())
    assert first.payload == {"symbol": "HK.00700", "trade_date": "2026-05-22", "previous": "2026-05-15"}
    assert second.payload == {"symbol": "HK.00700", "trade_date": "2026-05-29", "previous": "2026-05-22"}


class FakeStateStore:
    """Stands in for the triggerer's asset state store (Airflow 3.3: aget/aset)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.data[key] = value


def test_event_trigger_after_and_persisted_state(
    sandbox: SandboxServer, use_conn: Callable[..., str]
) -> None:
    use_conn(sandbox.url)
    store = FakeStateStore()
    trigger = ShortInterestNewRecordEventTrigger(symbol="HK.00700", after="2026-05-08", poke_interval=0.2)
    trigger.asset_state_store = store  # type: ignore[assignment]

    async def run_once(t: Any, timeout: float) -> Any:
        pump = EventPump(t)
        try:
            return await pump.next(timeout)
        finally:
            await pump.close()

    event = asyncio.run(run_once(trigger, 5))
    assert event.payload == {"symbol": "HK.00700", "trade_date": "2026-05-15", "previous": "2026-05-08"}
    assert store.data == {"shortint.last_trade_date.HK.00700": "2026-05-15"}

    # A restarted triggerer (new instance, same store) does not fire again for 2026-05-15.
    restarted = rebuild(trigger)
    restarted.asset_state_store = store
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(run_once(restarted, 0.7))


def test_event_trigger_survives_errors(
    sandbox: SandboxServer, use_conn: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.configure(http5xx_rate=1.0, token=TOKEN)
    use_conn(sandbox.url, password=TOKEN)
    trigger = ShortInterestNewRecordEventTrigger(
        symbol="HK.00700", after="2026-05-08", poke_interval=0.1, max_backoff=0.2
    )

    async def main() -> Any:
        pump = EventPump(trigger)
        with pytest.raises(asyncio.TimeoutError):
            await pump.next(0.8)  # failures never end the trigger nor fire an event
        sandbox.configure(http5xx_rate=0.0)
        event = await pump.next(5)
        await pump.close()
        return event

    event = asyncio.run(main())
    assert event.payload["trade_date"] == "2026-05-15"
    assert TOKEN not in caplog.text


# -- the poll interval setting ($SHORTINT_POKE_INTERVAL, read where the polling happens) -------------------


def test_poke_interval_none_is_read_by_the_triggerer_when_it_runs(
    sandbox: SandboxServer,
    use_conn: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """poke_interval=None travels as None in the kwargs; the process that runs the trigger decides."""
    use_conn(sandbox.url)
    monkeypatch.setenv("SHORTINT_POKE_INTERVAL", "7")  # the DAG's process: not read
    trigger = ShortInterestNewRecordTrigger(
        symbol="HK.00700", after="2026-05-15", poke_interval=None, deadline=time.time() + 0.6
    )
    assert trigger.serialize()[1]["poke_interval"] is None
    monkeypatch.setenv("SHORTINT_POKE_INTERVAL", "0.2")  # the triggerer's
    caplog.set_level(logging.INFO)
    assert first_event(rebuild(trigger)).payload["status"] == "timeout"
    logged = caplog.text + "".join(capfd.readouterr())
    assert "next poll in 0.2 s" in logged and "next poll in 7.0 s" not in logged


@pytest.mark.parametrize("value", ["fast", "0", "-5", "nan", "1e9"])
def test_a_bad_poke_interval_setting_is_one_clear_error(
    sandbox: SandboxServer, use_conn: Callable[..., str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    use_conn(sandbox.url)
    monkeypatch.setenv("SHORTINT_POKE_INTERVAL", value)
    event = first_event(ShortInterestNewRecordTrigger(symbol="HK.00700", poke_interval=None))
    assert event.payload["status"] == "error" and event.payload["retryable"] is False
    assert "SHORTINT_POKE_INTERVAL must be a number of seconds" in event.payload["message"]
    assert sandbox.stats()["requests"] == 0


def test_event_trigger_with_a_bad_setting_logs_it_and_polls_at_the_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHORTINT_POKE_INTERVAL", "soon")
    trigger = ShortInterestNewRecordEventTrigger(symbol="HK.00700", poke_interval=None)
    assert trigger._interval() == 900.0
    assert "SHORTINT_POKE_INTERVAL must be a number of seconds" in caplog.text + "".join(capfd.readouterr())
    monkeypatch.setenv("SHORTINT_POKE_INTERVAL", "2.5")
    assert trigger._interval() == 2.5
    assert ShortInterestNewRecordEventTrigger(symbol="HK.00700", poke_interval=4)._interval() == 4.0
