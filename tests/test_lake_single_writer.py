"""A store without conditional writes (a fake fsspec filesystem registered here) takes one writer at a time.

``nocas://`` is fsspec's in-memory filesystem under another name: Airflow gives it to ObjectStoragePath
like any filesystem a provider registers, and the lake finds no precondition it could use. The lake must
then refuse a second concurrent writer with a clear message, before writing anything, instead of letting
the last PUT win.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_shortint.records import rows_to_table

D3 = dt.date(2026, 5, 15)
LEASE = "bucket/lake/_locks/writer.lease"


def table(symbols: list[str], price: float = 1.0) -> Any:
    rows = [{"symbol": s, "trade_date": D3, "timestamp": 1, "close_price": price} for s in symbols]
    return rows_to_table(rows)


@pytest.fixture
def nocas() -> Iterator[Any]:
    """Register the ``nocas`` scheme with fsspec and Airflow; yields the (fresh) filesystem."""
    import fsspec
    from airflow.sdk.io.fs import _register_filesystems
    from airflow.sdk.io.store import _STORE_CACHE
    from fsspec.implementations.memory import MemoryFileSystem

    class NoPreconditionFileSystem(MemoryFileSystem):
        protocol = ("nocas",)
        store: dict[str, Any] = {}
        pseudo_dirs = [""]

        @classmethod
        def _strip_protocol(cls, path: str) -> str:
            return str(MemoryFileSystem._strip_protocol(str(path).removeprefix("nocas://")))

    fsspec.register_implementation("nocas", NoPreconditionFileSystem, clobber=True)
    schemes: Any = _register_filesystems()
    schemes["nocas"] = lambda conn_id, options=None: NoPreconditionFileSystem()
    try:
        yield NoPreconditionFileSystem()
    finally:
        schemes.pop("nocas", None)
        for key in [key for key in _STORE_CACHE if str(key).startswith("nocas")]:
            _STORE_CACHE.pop(key, None)
        NoPreconditionFileSystem.store.clear()


def open_fast(path: str) -> Any:
    from airflow_provider_shortint.lake import open_lake

    lake = open_lake(path)
    lake._sleep = lambda seconds: None  # the lease's settle wait
    return lake


def test_single_writer_round_trip_leaves_no_lease(nocas: Any) -> None:
    lake = open_fast("nocas://bucket/lake")
    assert lake.write_guard == "single-writer" and not lake.is_local
    result = lake.upsert(table(["HK.00700", "US.AAPL"]))
    assert result.partitions_written == ("market=HK/dt=2026-05-15", "market=US/dt=2026-05-15")
    assert lake.latest_dates() == {"HK.00700": D3, "US.AAPL": D3}
    assert lake.upsert(table(["HK.00700", "US.AAPL"])).rows_written == 0
    assert not nocas.exists(LEASE)
    assert sorted(p.split("/lake/")[1] for p in nocas.find("bucket/lake")) == [
        "market=HK/dt=2026-05-15/part-0.parquet",
        "market=US/dt=2026-05-15/part-0.parquet",
    ]


def test_second_concurrent_writer_is_refused_before_writing(nocas: Any) -> None:
    from airflow_provider_shortint.lake import LakeConcurrencyError

    first, second = open_fast("nocas://bucket/lake"), open_fast("nocas://bucket/lake")
    first.upsert(table(["HK.00005"]))
    inside, release = threading.Event(), threading.Event()
    original = type(first._store).write

    def slow_write(rel: str, data: bytes, expected: Any) -> None:
        if rel.endswith(".parquet"):
            inside.set()
            assert release.wait(30)
        original(first._store, rel, data, expected)

    first._store.write = slow_write
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(first.upsert(table(["HK.00700"]))))
    thread.start()
    try:
        assert inside.wait(30), "the first writer never reached its write"
        before = nocas.cat_file("bucket/lake/market=HK/dt=2026-05-15/part-0.parquet")
        with pytest.raises(LakeConcurrencyError) as info:
            second.upsert(table(["HK.09988"], price=2.0))
        assert nocas.cat_file("bucket/lake/market=HK/dt=2026-05-15/part-0.parquet") == before
    finally:
        release.set()
        thread.join(30)
    message = str(info.value)
    assert "nocas://bucket/lake" in message and "without conditional writes" in message
    assert "one writer" in message and "nothing was written" in message
    assert outcome and outcome[0].rows_written == 1
    assert second.upsert(table(["HK.09988"], price=2.0)).rows_written == 1  # the lake is free again
    assert sorted(first.read().column("symbol").to_pylist()) == ["HK.00005", "HK.00700", "HK.09988"]


def test_expired_lease_of_a_dead_writer_is_taken_over(nocas: Any) -> None:
    from airflow_provider_shortint.lake import LakeConcurrencyError

    lake = open_fast("nocas://bucket/lake")
    live = {"owner": "someone", "host": "worker-7", "pid": 4242, "expires": time.time() + 60}
    nocas.pipe_file(LEASE, json.dumps(live).encode())
    with pytest.raises(LakeConcurrencyError, match="worker-7"):
        lake.upsert(table(["HK.00700"]))
    assert not nocas.exists("bucket/lake/market=HK")
    nocas.pipe_file(LEASE, json.dumps({**live, "expires": time.time() - 1}).encode())
    assert lake.upsert(table(["HK.00700"])).rows_written == 1
    assert not nocas.exists(LEASE)
