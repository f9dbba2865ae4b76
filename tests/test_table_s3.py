"""Delta and Iceberg tables on S3 (the moto server, DESIGN.md §12): credentials and endpoint from the
Airflow AWS connection; the same contents as the Parquet lake on the same server, read back by each
format's own reader and by polars; re-runs add no version; time travel; maintenance deletes on S3."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shortint.lake import open_lake
from airflow_provider_shortint.lake.formats.aws import aws_access
from tests._fixtures_s3 import S3Server
from tests._fixtures_tables import D1, D2, D3, HK, T1, US, TableTarget, contents, make_table


def _targets(
    s3_server: S3Server, s3_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[TableTarget]:
    conn = {
        "conn_type": "iceberg_catalog",
        "host": f"sqlite:///{tmp_path}/catalog.db",
        "extra": {
            "warehouse": f"s3://{s3_server.bucket}/{s3_prefix}/iceberg",
            "aws_conn_id": s3_server.conn_id,
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_ICEBERG_S3", json.dumps(conn))
    return [
        TableTarget("delta", s3_server.url(f"{s3_prefix}/delta"), {}),
        TableTarget("iceberg", "shortint.short_interest", {"catalog_conn_id": "iceberg_s3"}),
    ]


def _native(target: TableTarget, s3_server: S3Server, tmp_path: Path) -> Any:
    """The table read by its own library and by polars, with the moto credentials given directly."""
    import polars as pl

    if target.table_format == "delta":
        from deltalake import DeltaTable

        options = aws_access(s3_server.conn_id).delta_options()
        uri = target.path.replace(f"{s3_server.conn_id}@", "")
        return DeltaTable(uri, storage_options=options).to_pyarrow_table(), pl.read_delta(
            uri, storage_options=options
        ).to_arrow()
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog(
        "shortint",
        uri=f"sqlite:///{tmp_path}/catalog.db",
        **aws_access(s3_server.conn_id).iceberg_properties(),
    )
    table = catalog.load_table(target.path)
    options = aws_access(s3_server.conn_id).delta_options()  # polars reads the files with object_store
    return table.scan().to_arrow(), pl.scan_iceberg(table, storage_options=options).collect().to_arrow()


def test_same_contents_as_the_parquet_lake_on_s3(
    s3_server: S3Server, s3_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLARS_ICEBERG_PLANNER", "pyiceberg")
    loads = [make_table(HK + US, [D1, D2]), make_table(HK[:1] + US[:1], [D2, D3], version=3, at=T1)]
    parquet = open_lake(s3_server.url(f"{s3_prefix}/parquet"))
    for rows in loads:
        parquet.upsert(rows)
    expected = contents(parquet.read())
    for target in _targets(s3_server, s3_prefix, tmp_path, monkeypatch):
        table = target.open()
        for rows in loads:
            table.upsert(rows)
        version = table.version
        assert table.upsert(loads[-1]).rows_written == 0 and table.version == version  # re-run: nothing
        assert contents(table.read()) == expected, target.table_format
        own, polars = _native(target, s3_server, tmp_path)
        assert contents(own) == expected == contents(polars), target.table_format
        assert table.latest_dates(["HK.00700", "US.TSLA"]) == {"HK.00700": D3, "US.TSLA": D2}
        first = table.versions()[1 if target.table_format == "delta" else 0].version
        assert contents(table.read(as_of=first)) == contents(make_table(HK + US, [D1, D2]))
        assert s3_server.conn_id not in table.uri and "testing" not in repr(table)


def test_maintenance_on_s3_compacts_and_deletes_old_files(
    s3_server: S3Server, s3_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for target in _targets(s3_server, s3_prefix, tmp_path, monkeypatch):
        table = target.open()
        for day in (D1, D2, D3):
            table.upsert(make_table(HK + US, [day]))
        before = contents(table.read())
        result = table.maintain(retention=dt.timedelta(0))
        assert result.files_compacted >= 2 and result.files_deleted > 0, target.table_format
        assert contents(table.read()) == before
        root = f"s3://{s3_server.bucket}/{s3_prefix}/"
        deleted = {uri.removeprefix(root) for uri in result.deleted}
        assert all(uri.startswith(root) for uri in result.deleted)
        assert not deleted & set(s3_server.objects(s3_prefix))  # every reported file is gone from the bucket


def test_aws_access_never_shows_secrets(s3_server: S3Server) -> None:
    access = aws_access(s3_server.conn_id)
    assert access.endpoint == s3_server.endpoint
    assert access.delta_options()["AWS_ALLOW_HTTP"] == "true"
    assert access.iceberg_properties()["s3.endpoint"] == s3_server.endpoint
    assert access.secret_key and access.secret_key not in repr(access)
