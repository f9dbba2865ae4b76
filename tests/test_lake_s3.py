"""The lake on object storage: s3://conn_id@bucket/prefix through moto's standalone server on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from airflow_provider_shortint.lake import open_lake
from airflow_provider_shortint.records import COLUMNS, lake_schema, rows_to_table

D2, D3 = dt.date(2025, 12, 31), dt.date(2026, 5, 15)  # two years: two partitions per market
T0 = dt.datetime(2026, 5, 16, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 5, 17, tzinfo=dt.UTC)


def rows(symbols: list[str], days: list[dt.date], price: float = 1.0) -> list[dict[str, Any]]:
    return [
        {"symbol": s, "trade_date": d, "timestamp": 1, "close_price": price + i, "shares_short": 10 + i}
        for d in days
        for i, s in enumerate(symbols)
    ]


def test_upsert_layout_idempotency_and_readback(s3_server: Any, s3_prefix: str) -> None:
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    lake = open_lake(s3_server.url(s3_prefix))
    assert lake.uri == f"s3://{s3_server.bucket}/{s3_prefix}"  # no connection id, no credentials
    table = rows_to_table(rows(["HK.00700", "HK.00005", "US.AAPL"], [D2, D3]), ingested_at=T0)
    first = lake.upsert(table)
    assert first.rows_written == 6
    assert first.partitions_written == (
        "market=HK/year=2025",
        "market=HK/year=2026",
        "market=US/year=2025",
        "market=US/year=2026",
    )
    stored = s3_server.objects(s3_prefix)
    assert sorted(stored) == [f"{p}/part-0.parquet" for p in first.partitions_written]
    assert (
        lake.partition_path("HK", D3)
        == f"s3://{s3_server.bucket}/{s3_prefix}/market=HK/year=2026/part-0.parquet"
    )

    puts = s3_server.requests(s3_prefix)["PUT"]
    again = lake.upsert(rows_to_table(rows(["HK.00700", "HK.00005", "US.AAPL"], [D2, D3]), ingested_at=T1))
    assert (again.rows_written, again.rows_unchanged, again.partitions_written) == (0, 6, ())
    assert s3_server.requests(s3_prefix)["PUT"] == puts  # no object rewritten (the server's own count)
    assert s3_server.objects(s3_prefix) == stored

    assert lake.latest_dates() == {"HK.00005": D3, "HK.00700": D3, "US.AAPL": D3}
    assert lake.latest_dates(["US.AAPL", "US.NOPE"]) == {"US.AAPL": D3}
    whole = lake.read()
    assert whole.num_rows == 6 and whole.column_names == [*COLUMNS, "market", "year"]
    assert set(whole.column("ingested_at").to_pylist()) == {T0}

    # Read back with plain pyarrow over the connection's filesystem (what ObjectStoragePath resolves).
    from airflow.sdk import ObjectStoragePath
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    base = ObjectStoragePath(s3_server.url(s3_prefix))
    with (base / "market=US/year=2026/part-0.parquet").open("rb") as handle:
        one = pq.read_table(handle)
    assert one.schema.equals(lake_schema())
    assert one.column("symbol").to_pylist() == ["US.AAPL"]
    dataset = ds.dataset(
        f"{s3_server.bucket}/{s3_prefix}",
        filesystem=PyFileSystem(FSSpecHandler(base.fs)),
        format="parquet",
        partitioning="hive",
    )
    assert dataset.to_table().num_rows == 6


def test_changed_row_rewrites_only_its_partition(s3_server: Any, s3_prefix: str) -> None:
    from airflow.sdk import ObjectStoragePath

    lake = open_lake(ObjectStoragePath(s3_server.url(s3_prefix)))
    lake.upsert(rows_to_table(rows(["HK.00700", "HK.00005"], [D2, D3]), ingested_at=T0))
    before = s3_server.objects(s3_prefix)
    changed = rows(["HK.00700", "HK.00005"], [D3])
    changed[0]["close_price"] = 99.0
    result = lake.upsert(rows_to_table(changed, ingested_at=T1))
    assert (result.rows_written, result.rows_unchanged) == (1, 1)
    assert result.partitions_written == ("market=HK/year=2026",)
    after = s3_server.objects(s3_prefix)
    assert after["market=HK/year=2025/part-0.parquet"] == before["market=HK/year=2025/part-0.parquet"]
    assert after["market=HK/year=2026/part-0.parquet"] != before["market=HK/year=2026/part-0.parquet"]
    by_symbol = {r["symbol"]: r for r in lake.read().to_pylist() if r["trade_date"] == D3}
    assert by_symbol["HK.00700"]["close_price"] == 99.0 and by_symbol["HK.00700"]["ingested_at"] == T1
    assert by_symbol["HK.00005"]["ingested_at"] == T0


def test_empty_prefix_reads_as_empty_lake(s3_server: Any, s3_prefix: str) -> None:
    lake = open_lake(f"{s3_server.url(s3_prefix)}/nothing-here")
    assert lake.latest_dates() == {}
    assert lake.read().num_rows == 0


def test_operator_loads_into_s3(s3_server: Any, s3_prefix: str, sandbox: Any, use_conn: Any) -> None:
    """The operator on lake_path="s3://conn@bucket/prefix": a full load, then an up-to-date run."""
    from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator

    use_conn(sandbox.url)
    lake_path = s3_server.url(s3_prefix)
    symbols = ["HK.00700", "US.AAPL"]
    full = ShortInterestToParquetOperator(
        task_id="s3_full", symbols=symbols, lake_path=lake_path, mode="full"
    )
    assert [a.uri for a in full.outlets] == [
        f"s3://{s3_server.bucket}/{s3_prefix}/market=HK",
        f"s3://{s3_server.bucket}/{s3_prefix}/market=US",
    ]
    summary = full.execute(context={})  # type: ignore[arg-type]
    expected = {symbol: sandbox.history(symbol) for symbol in symbols}
    assert summary["rows_written"] == sum(len(h) for h in expected.values())
    assert summary["lake"] == f"s3://{s3_server.bucket}/{s3_prefix}"
    keys = s3_server.objects(s3_prefix)
    assert len(keys) == len({(s[:2], item["timestamp_str"][:4]) for s, h in expected.items() for item in h})
    assert open_lake(lake_path).latest_dates(symbols) == {s: dt.date(2026, 5, 15) for s in symbols}

    sandbox.reset_stats()
    again = ShortInterestToParquetOperator(task_id="s3_incr", symbols=symbols, lake_path=lake_path)
    summary = again.execute(context={})  # type: ignore[arg-type]
    assert summary["requests"] == 2 and summary["rows_written"] == 0
    assert s3_server.objects(s3_prefix) == keys  # nothing rewritten: same ETags and times


# ------------------------------------------------------------------------------------------------
# Compare-and-swap writes (DESIGN.md §10)
# ------------------------------------------------------------------------------------------------


def test_conditional_put_refuses_a_stale_version(s3_server: Any, s3_prefix: str) -> None:
    from airflow_provider_shortint.lake.stores.base import Stored, WriteConflict

    lake = open_lake(s3_server.url(s3_prefix))
    assert lake.write_guard == "compare-and-swap"
    store = lake._store
    rel = "market=HK/year=2026/part-0.parquet"
    absent = store.read(rel)
    assert absent == Stored(None)
    store.write(rel, b"v1", absent)  # If-None-Match: * on a new key
    first = store.read(rel)
    assert first.data == b"v1" and first.version
    with pytest.raises(WriteConflict):
        store.write(rel, b"other", absent)  # the key exists now
    store.write(rel, b"v2", first)  # If-Match: the ETag read
    with pytest.raises(WriteConflict):
        store.write(rel, b"v3", first)  # stale ETag: 412
    assert store.read(rel).data == b"v2"
    assert (
        s3_server.client().get_object(Bucket=s3_server.bucket, Key=f"{s3_prefix}/{rel}")["Body"].read()
        == b"v2"
    )


def test_conflict_rereads_and_merges_the_other_writers_rows(s3_server: Any, s3_prefix: str) -> None:
    from airflow_provider_shortint.lake import ParquetLake

    lake, other = open_lake(s3_server.url(s3_prefix)), open_lake(s3_server.url(s3_prefix))
    lake.upsert(rows_to_table(rows(["HK.00005"], [D3]), ingested_at=T0))
    original = ParquetLake._write_partition
    interleaved: list[str] = []

    def other_writes_first(self: ParquetLake, partition: Any, table: Any, expected: Any) -> None:
        if self is lake and not interleaved:  # between our read and our write, another writer commits
            interleaved.append(partition.name)
            other.upsert(rows_to_table(rows(["HK.09988"], [D3]), ingested_at=T0))
        original(self, partition, table, expected)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ParquetLake, "_write_partition", other_writes_first)
        patch.setattr(lake, "_sleep", lambda seconds: None)
        result = lake.upsert(rows_to_table(rows(["HK.00700"], [D3]), ingested_at=T1))
    assert interleaved == ["market=HK/year=2026"]
    assert result.conflicts == 1 and result.rows_written == 1
    assert sorted(lake.read().column("symbol").to_pylist()) == ["HK.00005", "HK.00700", "HK.09988"]


def test_conflicts_past_the_bound_fail_clearly(s3_server: Any, s3_prefix: str) -> None:
    from airflow_provider_shortint.lake import LakeConflictError
    from airflow_provider_shortint.lake.parquet_lake import MAX_WRITE_ATTEMPTS
    from airflow_provider_shortint.lake.stores.base import WriteConflict

    lake = open_lake(s3_server.url(s3_prefix))
    attempts: list[str] = []

    def always_beaten(rel: str, data: bytes, expected: Any) -> None:
        attempts.append(rel)
        if rel.startswith("market=US"):
            raise WriteConflict(rel)
        type(lake._store).write(lake._store, rel, data, expected)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lake._store, "write", always_beaten)
        patch.setattr(lake, "_sleep", lambda seconds: None)
        with pytest.raises(LakeConflictError) as info:
            lake.upsert(rows_to_table(rows(["HK.00700", "US.AAPL"], [D2, D3])))
    message, notes = str(info.value), " ".join(info.value.__notes__)
    assert f"s3://{s3_server.bucket}/{s3_prefix}" in message and "market=US/year=2025" in message
    assert f"{MAX_WRITE_ATTEMPTS} attempts" in message
    assert "['market=HK/year=2025', 'market=HK/year=2026']" in notes  # written
    assert "not written: ['market=US/year=2025', 'market=US/year=2026']" in notes
    assert len(attempts) == 2 + MAX_WRITE_ATTEMPTS
    assert sorted(s3_server.objects(s3_prefix)) == [
        "market=HK/year=2025/part-0.parquet",
        "market=HK/year=2026/part-0.parquet",
    ]


def test_failed_put_names_lake_and_partitions(s3_server: Any, s3_prefix: str) -> None:
    from airflow_provider_shortint.lake import LakeWriteError

    lake = open_lake(s3_server.url(s3_prefix))
    calls: list[str] = []

    def quota_exceeded(rel: str, data: bytes, expected: Any) -> None:
        calls.append(rel)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        type(lake._store).write(lake._store, rel, data, expected)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lake._store, "write", quota_exceeded)
        with pytest.raises(LakeWriteError) as info:
            lake.upsert(rows_to_table(rows(["HK.00700"], [D2, D3])))
    assert isinstance(info.value, OSError) and info.value.errno == 28
    assert str(info.value).startswith(
        f"lake s3://{s3_server.bucket}/{s3_prefix}: writing partition market=HK/year=2026"
    )
    assert "No space left on device" in str(info.value)
    assert "not written: ['market=HK/year=2026']" in " ".join(info.value.__notes__)


# ------------------------------------------------------------------------------------------------
# Long-lived readers
# ------------------------------------------------------------------------------------------------

REWRITE = """
import datetime as dt, sys
from airflow_provider_shortint.lake import open_lake
from airflow_provider_shortint.records import rows_to_table
days = (dt.date(2025, 12, 31), dt.date(2026, 5, 15), dt.date(2026, 5, 18))
rows = [{"symbol": s, "trade_date": d, "timestamp": 2, "close_price": 50.0, "shares_short": 7}
        for s in ("HK.00700", "US.AAPL") for d in days]
result = open_lake(sys.argv[1]).upsert(rows_to_table(rows))
assert result.rows_written == 6, result
"""


def test_reader_sees_files_another_process_replaced(s3_server: Any, s3_prefix: str) -> None:
    """A process that read the lake (listing, files, ETags cached by s3fs) reads the new data later."""
    import os
    import subprocess
    import sys

    from airflow.sdk import ObjectStoragePath

    url = s3_server.url(s3_prefix)
    reader = open_lake(url)
    reader.upsert(rows_to_table(rows(["HK.00700", "US.AAPL"], [D2, D3]), ingested_at=T0))
    for _ in range(2):  # warm every cache a long-lived reader builds
        assert reader.latest_dates(["HK.00700", "US.AAPL"]) == {"HK.00700": D3, "US.AAPL": D3}
        assert set(reader.read(["close_price"]).column(0).to_pylist()) == {1.0, 2.0}
    fs = ObjectStoragePath(url).fs
    fs.find(f"{s3_server.bucket}/{s3_prefix}")  # s3fs now caches the listing and every file's ETag
    with (ObjectStoragePath(url) / "market=HK/year=2026/part-0.parquet").open("rb") as handle:
        handle.read(4)

    done = subprocess.run(
        [sys.executable, "-c", REWRITE, url],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]

    newest = dt.date(2026, 5, 18)
    assert reader.latest_dates(["HK.00700", "US.AAPL"]) == {"HK.00700": newest, "US.AAPL": newest}
    assert reader.latest_dates() == {"HK.00700": newest, "US.AAPL": newest}
    table = reader.read(["symbol", "close_price", "dt"])
    assert table.num_rows == 6 and set(table.column("close_price").to_pylist()) == {50.0}
    again = open_lake(ObjectStoragePath(url))  # the sensor's way: a new lake per poke, same cached fs
    assert again.latest_dates("HK.00700") == {"HK.00700": newest}


# ------------------------------------------------------------------------------------------------
# Ranged reads: the footer and the row groups asked for, of one version of the file
# ------------------------------------------------------------------------------------------------


def big_year(symbols: int, seed: int = 7) -> Any:
    """``symbols`` HK symbols x 20 dates of 2026 with random values (a file well above 64 KiB)."""
    import random

    rng = random.Random(seed)
    days = [dt.date(2026, 1, 2) + dt.timedelta(days=7 * k) for k in range(20)]
    return rows_to_table(
        [
            {
                "symbol": f"HK.{i:05d}",
                "trade_date": day,
                "timestamp": rng.randrange(10**12),
                "close_price": rng.random(),
                "aggregated_short": rng.randrange(10**9),
                "aggregated_short_ratio": rng.random(),
            }
            for i in range(1, symbols + 1)
            for day in days
        ],
        ingested_at=T0,
    )


def test_one_symbol_costs_two_ranged_gets(
    s3_server: Any, s3_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sensor's question on S3: the footer (last 64 KiB), then the row group of that symbol."""
    from airflow_provider_shortint.lake import arrow
    from airflow_provider_shortint.lake.stores.s3 import TAIL_BYTES

    monkeypatch.setattr(arrow, "ROW_GROUP_ROWS", 1000)
    lake = open_lake(s3_server.url(s3_prefix))
    lake.upsert(big_year(400))  # 8,000 rows: 8 row groups
    key = f"{s3_prefix}/market=HK/year=2026/part-0.parquet"
    size = s3_server.client().head_object(Bucket=s3_server.bucket, Key=key)["ContentLength"]
    assert size > 3 * TAIL_BYTES
    before = s3_server.requests(key)["GET"]
    assert lake.latest_dates(["HK.00123"]) == {"HK.00123": dt.date(2026, 5, 15)}
    assert s3_server.requests(key)["GET"] - before == 2


def test_a_file_replaced_between_two_ranged_reads_is_read_again(s3_server: Any, s3_prefix: str) -> None:
    """If-Match on the first ETag: a reader never mixes two versions of a file; it starts it again."""
    from airflow_provider_shortint.lake.stores.s3 import RangedObject

    lake = open_lake(s3_server.url(s3_prefix))
    lake.upsert(big_year(400))
    newer = big_year(400, seed=8)
    original = RangedObject._fetch
    replaced: list[int] = []

    def another_writer_first(self: RangedObject, start: int, end: int) -> bytes:
        if not replaced:  # between the footer and the row groups, another writer replaces the file
            replaced.append(start)
            open_lake(s3_server.url(s3_prefix)).upsert(newer)
        return original(self, start, end)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RangedObject, "_fetch", another_writer_first)
        table = lake.read(["symbol", "trade_date", "close_price"])
    assert replaced, "no ranged read happened"
    assert table.num_rows == newer.num_rows
    assert sorted(table.column("close_price").to_pylist()) == sorted(newer.column("close_price").to_pylist())


def test_client_pools_a_connection_per_parallel_read_and_keeps_the_connections_settings(
    s3_server: Any, s3_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """boto3 pools 10 connections by default: the lake's parallel reads get one each (no "connection
    pool is full" warning), and the botocore settings of the Airflow connection stay as they are."""
    import json

    from airflow_provider_shortint.lake.stores import s3 as s3_store

    conn = json.loads(s3_server.env[f"AIRFLOW_CONN_{s3_server.conn_id.upper()}"])
    conn["extra"]["config_kwargs"] = {"connect_timeout": 7}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_TUNED", json.dumps(conn))
    lake = open_lake(f"s3://aws_tuned@{s3_server.bucket}/{s3_prefix}")
    config = lake._store.client.meta.config
    assert config.max_pool_connections == s3_store._PARALLEL_READS > 10
    assert config.connect_timeout == 7
