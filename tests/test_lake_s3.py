"""The lake on object storage: s3://conn_id@bucket/prefix through moto's standalone server on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("moto", reason="moto[server] is not installed: no local S3 to test against")
pytest.importorskip("s3fs", reason="s3fs is not installed: Airflow's s3:// ObjectStoragePath needs it")

from airflow_provider_shortint.lake import open_lake
from airflow_provider_shortint.records import COLUMNS, lake_schema, rows_to_table

CONN_ID = "aws_test"
BUCKET = "shortint-lake"
D2, D3 = dt.date(2026, 5, 14), dt.date(2026, 5, 15)
T0 = dt.datetime(2026, 5, 16, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 5, 17, tzinfo=dt.UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rows(symbols: list[str], days: list[dt.date], price: float = 1.0) -> list[dict[str, Any]]:
    return [
        {"symbol": s, "trade_date": d, "timestamp": 1, "close_price": price + i, "shares_short": 10 + i}
        for d in days
        for i, s in enumerate(symbols)
    ]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto_server on a free loopback port, the bucket, and the Airflow connection in the environment."""
    port = free_port()
    moto_server = Path(sys.executable).with_name("moto_server")
    command = [str(moto_server)] if moto_server.exists() else [sys.executable, "-m", "moto.server"]
    server = subprocess.Popen(
        [*command, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.1)
    from airflow.sdk.io.store import _STORE_CACHE

    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            patch.setenv(name, value)
        conn = {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
        patch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
        s3(endpoint).create_bucket(Bucket=BUCKET)
        _STORE_CACHE.pop(f"s3-{CONN_ID}", None)  # an fs cached for another endpoint must not be reused
        try:
            yield endpoint
        finally:
            _STORE_CACHE.pop(f"s3-{CONN_ID}", None)
            server.terminate()
            server.wait(timeout=10)


def s3(endpoint: str | None = None) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def prefix(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh key prefix per test in the module's bucket."""
    return f"lakes/{request.node.name.replace('[', '_').replace(']', '')}"


def objects(endpoint: str, prefix: str) -> dict[str, tuple[str, Any]]:
    listing = s3(endpoint).list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("Contents", [])
    return {o["Key"][len(prefix) + 1 :]: (o["ETag"], o["LastModified"]) for o in listing}


def test_upsert_layout_idempotency_and_readback(s3_endpoint: str, prefix: str) -> None:
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    lake = open_lake(f"s3://{CONN_ID}@{BUCKET}/{prefix}")
    assert lake.uri == f"s3://{BUCKET}/{prefix}"  # no connection id, no credentials
    table = rows_to_table(rows(["HK.00700", "HK.00005", "US.AAPL"], [D2, D3]), ingested_at=T0)
    first = lake.upsert(table)
    assert first.rows_written == 6
    assert first.partitions_written == (
        "market=HK/dt=2026-05-14",
        "market=HK/dt=2026-05-15",
        "market=US/dt=2026-05-14",
        "market=US/dt=2026-05-15",
    )
    stored = objects(s3_endpoint, prefix)
    assert sorted(stored) == [f"{p}/part-0.parquet" for p in first.partitions_written]
    assert lake.partition_path("HK", D3) == f"s3://{BUCKET}/{prefix}/market=HK/dt=2026-05-15/part-0.parquet"

    time.sleep(1.1)  # LastModified has one-second resolution
    again = lake.upsert(rows_to_table(rows(["HK.00700", "HK.00005", "US.AAPL"], [D2, D3]), ingested_at=T1))
    assert (again.rows_written, again.rows_unchanged, again.partitions_written) == (0, 6, ())
    assert objects(s3_endpoint, prefix) == stored  # no object rewritten

    assert lake.latest_dates() == {"HK.00005": D3, "HK.00700": D3, "US.AAPL": D3}
    assert lake.latest_dates(["US.AAPL", "US.NOPE"]) == {"US.AAPL": D3}
    whole = lake.read()
    assert whole.num_rows == 6 and whole.column_names == [*COLUMNS, "market", "dt"]
    assert set(whole.column("ingested_at").to_pylist()) == {T0}

    # Read back with plain pyarrow over the connection's filesystem (what ObjectStoragePath resolves).
    from airflow.sdk import ObjectStoragePath
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    base = ObjectStoragePath(f"s3://{CONN_ID}@{BUCKET}/{prefix}")
    with (base / "market=US/dt=2026-05-15/part-0.parquet").open("rb") as handle:
        one = pq.read_table(handle)
    assert one.schema.equals(lake_schema())
    assert one.column("symbol").to_pylist() == ["US.AAPL"]
    dataset = ds.dataset(
        f"{BUCKET}/{prefix}",
        filesystem=PyFileSystem(FSSpecHandler(base.fs)),
        format="parquet",
        partitioning="hive",
    )
    assert dataset.to_table().num_rows == 6


def test_changed_row_rewrites_only_its_partition(s3_endpoint: str, prefix: str) -> None:
    from airflow.sdk import ObjectStoragePath

    lake = open_lake(ObjectStoragePath(f"s3://{CONN_ID}@{BUCKET}/{prefix}"))
    lake.upsert(rows_to_table(rows(["HK.00700", "HK.00005"], [D2, D3]), ingested_at=T0))
    before = objects(s3_endpoint, prefix)
    changed = rows(["HK.00700", "HK.00005"], [D3])
    changed[0]["close_price"] = 99.0
    result = lake.upsert(rows_to_table(changed, ingested_at=T1))
    assert (result.rows_written, result.rows_unchanged) == (1, 1)
    assert result.partitions_written == ("market=HK/dt=2026-05-15",)
    after = objects(s3_endpoint, prefix)
    assert after["market=HK/dt=2026-05-14/part-0.parquet"] == before["market=HK/dt=2026-05-14/part-0.parquet"]
    assert after["market=HK/dt=2026-05-15/part-0.parquet"] != before["market=HK/dt=2026-05-15/part-0.parquet"]
    by_symbol = {r["symbol"]: r for r in lake.read().to_pylist() if r["trade_date"] == D3}
    assert by_symbol["HK.00700"]["close_price"] == 99.0 and by_symbol["HK.00700"]["ingested_at"] == T1
    assert by_symbol["HK.00005"]["ingested_at"] == T0


def test_empty_prefix_reads_as_empty_lake(s3_endpoint: str, prefix: str) -> None:
    lake = open_lake(f"s3://{CONN_ID}@{BUCKET}/{prefix}/nothing-here")
    assert lake.latest_dates() == {}
    assert lake.read().num_rows == 0


def test_operator_loads_into_s3(s3_endpoint: str, prefix: str, sandbox: Any, use_conn: Any) -> None:
    """The operator on lake_path="s3://conn@bucket/prefix": a full load, then an up-to-date run."""
    from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator

    use_conn(sandbox.url)
    lake_path = f"s3://{CONN_ID}@{BUCKET}/{prefix}"
    symbols = ["HK.00700", "US.AAPL"]
    full = ShortInterestToParquetOperator(
        task_id="s3_full", symbols=symbols, lake_path=lake_path, mode="full"
    )
    assert [a.uri for a in full.outlets] == [
        f"s3://{BUCKET}/{prefix}/market=HK",
        f"s3://{BUCKET}/{prefix}/market=US",
    ]
    summary = full.execute(context={})  # type: ignore[arg-type]
    expected = {symbol: sandbox.history(symbol) for symbol in symbols}
    assert summary["rows_written"] == sum(len(h) for h in expected.values())
    assert summary["lake"] == f"s3://{BUCKET}/{prefix}"
    keys = objects(s3_endpoint, prefix)
    assert len(keys) == len({(s[:2], item["timestamp_str"]) for s, h in expected.items() for item in h})
    assert open_lake(lake_path).latest_dates(symbols) == {s: dt.date(2026, 5, 15) for s in symbols}

    sandbox.reset_stats()
    again = ShortInterestToParquetOperator(task_id="s3_incr", symbols=symbols, lake_path=lake_path)
    summary = again.execute(context={})  # type: ignore[arg-type]
    assert summary["requests"] == 2 and summary["rows_written"] == 0
    assert objects(s3_endpoint, prefix) == keys  # nothing rewritten: same ETags and times
