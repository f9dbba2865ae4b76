"""Stores without conditional replace: a create-only writer lease, or no writing at all.

Two fake fsspec filesystems are registered here (fsspec's in-memory filesystem under other names, which
Airflow hands to ObjectStoragePath like any filesystem a provider registers):

- ``nocas://`` offers no precondition at all (fsspec's default ``mode="create"`` is exists-then-write):
  the lake must refuse to write there, with a clear message, before writing anything;
- ``excl://`` has an atomic create-only write, as gcsfs and adlfs do (declared through
  ``stores.object.CREATE_ONLY_PROTOCOLS``): the lake takes its writer lease with it, so of two writers
  racing for the lease exactly one proceeds and the other is refused before writing.
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


def _register(name: str, atomic_create: bool) -> Any:
    """A fresh in-memory filesystem class registered as ``name`` with fsspec and Airflow."""
    import fsspec
    from airflow.sdk.io.fs import _register_filesystems
    from fsspec.implementations.memory import MemoryFileSystem

    guard = threading.Lock()

    class FakeFileSystem(MemoryFileSystem):
        protocol = (name,)
        store: dict[str, Any] = {}
        pseudo_dirs = [""]
        creates = 0

        @classmethod
        def _strip_protocol(cls, path: str) -> str:
            return str(MemoryFileSystem._strip_protocol(str(path).removeprefix(f"{name}://")))

        def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
            if mode != "create" or not atomic_create:
                super().pipe_file(path, value, mode=mode, **kwargs)
                return
            with guard:  # the service's create-only precondition: check and write are one step
                type(self).creates += 1
                if self.exists(path):
                    raise FileExistsError(path)
                super().pipe_file(path, value, **kwargs)

    fsspec.register_implementation(name, FakeFileSystem, clobber=True)
    schemes: Any = _register_filesystems()
    schemes[name] = lambda conn_id, options=None: FakeFileSystem()
    return FakeFileSystem


def _unregister(name: str, cls: Any) -> None:
    from airflow.sdk.io.fs import _register_filesystems
    from airflow.sdk.io.store import _STORE_CACHE

    schemes: Any = _register_filesystems()
    schemes.pop(name, None)
    for key in [key for key in _STORE_CACHE if str(key).startswith(name)]:
        _STORE_CACHE.pop(key, None)
    cls.store.clear()


@pytest.fixture
def nocas() -> Iterator[Any]:
    """``nocas://``: no precondition of any kind; yields the (fresh) filesystem."""
    cls = _register("nocas", atomic_create=False)
    try:
        yield cls()
    finally:
        _unregister("nocas", cls)


@pytest.fixture
def excl(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``excl://``: an atomic create-only write, like gcsfs/adlfs; yields the (fresh) filesystem."""
    from airflow_provider_shortint.lake.stores import object as object_store

    monkeypatch.setattr(object_store, "CREATE_ONLY_PROTOCOLS", (*object_store.CREATE_ONLY_PROTOCOLS, "excl"))
    cls = _register("excl", atomic_create=True)
    try:
        yield cls()
    finally:
        _unregister("excl", cls)


def test_store_without_any_precondition_is_refused_before_writing(nocas: Any) -> None:
    from airflow_provider_shortint.lake import LakeConcurrencyError, open_lake

    lake = open_lake("nocas://bucket/lake")
    assert lake.write_guard == "single-writer"
    with pytest.raises(LakeConcurrencyError) as info:
        lake.upsert(table(["HK.00700"]))
    message = str(info.value)
    assert "nocas://bucket/lake" in message and "neither conditional nor create-only" in message
    assert "nothing was written" in message
    assert not nocas.exists("bucket/lake")  # not even a lease
    assert lake.read().num_rows == 0  # reading is still allowed


def test_single_writer_round_trip_leaves_no_lease(excl: Any) -> None:
    from airflow_provider_shortint.lake import open_lake

    lake = open_lake("excl://bucket/lake")
    assert lake.write_guard == "single-writer" and not lake.is_local
    result = lake.upsert(table(["HK.00700", "US.AAPL"]))
    assert result.partitions_written == ("market=HK/year=2026", "market=US/year=2026")
    assert type(excl).creates == 1  # the lease was taken with a create-only write
    assert lake.latest_dates() == {"HK.00700": D3, "US.AAPL": D3}
    assert lake.upsert(table(["HK.00700", "US.AAPL"])).rows_written == 0
    assert not excl.exists(LEASE)
    assert sorted(p.split("/lake/")[1] for p in excl.find("bucket/lake")) == [
        "market=HK/year=2026/part-0.parquet",
        "market=US/year=2026/part-0.parquet",
    ]


def test_second_concurrent_writer_is_refused_before_writing(excl: Any) -> None:
    from airflow_provider_shortint.lake import LakeConcurrencyError, open_lake

    first, second = open_lake("excl://bucket/lake"), open_lake("excl://bucket/lake")
    first.upsert(table(["HK.00005"]))
    inside, release = threading.Event(), threading.Event()
    original = type(first._store).write

    def slow_write(rel: str, data: bytes, expected: Any) -> None:
        if rel.endswith(".parquet"):
            inside.set()
            assert release.wait(30)
        original(first._store, rel, data, expected)

    first._store.write = slow_write  # type: ignore[method-assign]
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(first.upsert(table(["HK.00700"]))))
    thread.start()
    try:
        assert inside.wait(30), "the first writer never reached its write"
        before = excl.cat_file("bucket/lake/market=HK/year=2026/part-0.parquet")
        with pytest.raises(LakeConcurrencyError) as info:
            second.upsert(table(["HK.09988"], price=2.0))
        assert excl.cat_file("bucket/lake/market=HK/year=2026/part-0.parquet") == before
    finally:
        release.set()
        thread.join(30)
    message = str(info.value)
    assert "excl://bucket/lake" in message and "without conditional writes" in message
    assert "one writer" in message and "nothing was written" in message
    assert outcome and outcome[0].rows_written == 1
    assert second.upsert(table(["HK.09988"], price=2.0)).rows_written == 1  # the lake is free again
    assert sorted(first.read().column("symbol").to_pylist()) == ["HK.00005", "HK.00700", "HK.09988"]


def _race_for_the_lease(writers: int) -> list[str]:
    """``writers`` threads enter the lease at once; the winner holds it until all others were refused."""
    from airflow_provider_shortint.lake import LakeConcurrencyError
    from airflow_provider_shortint.lake.lease import WriterLease
    from airflow_provider_shortint.lake.location import parse_location
    from airflow_provider_shortint.lake.stores import open_store

    start = threading.Barrier(writers)
    outcomes: list[str] = []
    everyone_refused = threading.Event()

    def contend() -> None:
        lease = WriterLease(open_store(parse_location("excl://bucket/lake")))  # type: ignore[arg-type]
        start.wait(30)
        try:
            with lease:
                outcomes.append("won")
                everyone_refused.wait(30)
        except LakeConcurrencyError:
            outcomes.append("refused")
            if outcomes.count("refused") == writers - 1:
                everyone_refused.set()

    threads = [threading.Thread(target=contend) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def test_writers_racing_for_the_lease_exactly_one_proceeds(excl: Any) -> None:
    """A create-only lease admits exactly one of the writers that race for it."""
    for _trial in range(5):
        assert sorted(_race_for_the_lease(8)) == ["refused"] * 7 + ["won"]
        assert not excl.exists(LEASE)


def test_expired_lease_of_a_dead_writer_is_taken_over(excl: Any) -> None:
    from airflow_provider_shortint.lake import LakeConcurrencyError, open_lake

    lake = open_lake("excl://bucket/lake")
    live = {"owner": "someone", "host": "worker-7", "pid": 4242, "expires": time.time() + 60}
    excl.pipe_file(LEASE, json.dumps(live).encode())
    with pytest.raises(LakeConcurrencyError, match="worker-7"):
        lake.upsert(table(["HK.00700"]))
    assert not excl.exists("bucket/lake/market=HK")
    excl.pipe_file(LEASE, json.dumps({**live, "expires": time.time() - 1}).encode())
    assert lake.upsert(table(["HK.00700"])).rows_written == 1
    assert not excl.exists(LEASE)
