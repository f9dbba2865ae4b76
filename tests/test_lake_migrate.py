"""A lake of the daily layout (``market=HK/dt=2026-05-15/part-0.parquet``, as the provider wrote it before
the yearly layout): it is still read, never written, and ``lake.migrate`` moves it into a new folder.

The daily lake here is written file by file exactly as that layout was: one zstd file per market and
trading date, rows sorted by symbol, the lake schema, no partition columns in the files.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shortint.exceptions import InvalidParameterError
from airflow_provider_shortint.lake import LakeSchemaError, open_lake
from airflow_provider_shortint.lake.migrate import main, migrate_daily_lake
from airflow_provider_shortint.records import rows_to_table

HK_DAYS = [dt.date(2025, 12, 19), dt.date(2025, 12, 31), dt.date(2026, 1, 9), dt.date(2026, 5, 15)]
US_DAYS = [dt.date(2025, 12, 15), dt.date(2026, 4, 30), dt.date(2026, 5, 15)]
HK, US = ["HK.00700", "HK.00005"], ["US.AAPL", "US.TSLA", "US.MSFT"]


def rows_of(symbols: list[str], days: list[dt.date]) -> list[dict[str, Any]]:
    return [
        {"symbol": s, "trade_date": d, "timestamp": d.toordinal(), "close_price": float(i), "shares_short": i}
        for d in days
        for i, s in enumerate(symbols)
    ]


def daily_lake(root: Path) -> int:
    """A lake in the daily layout; returns its row count."""
    import pyarrow.parquet as pq

    count = 0
    for market, symbols, days in (("HK", HK, HK_DAYS), ("US", US, US_DAYS)):
        for day in days:
            rows = rows_to_table(sorted(rows_of(symbols, [day]), key=lambda r: r["symbol"]))
            folder = root / f"market={market}/dt={day.isoformat()}"
            folder.mkdir(parents=True)
            pq.write_table(rows, folder / "part-0.parquet", compression="zstd")
            count += rows.num_rows
    (root / "_locks").mkdir()
    (root / "_locks/market=HK_dt=2026-05-15.lock").touch()
    return count


def keyed(table: Any) -> dict[tuple[str, dt.date], Any]:
    rows = table.drop_columns([c for c in ("market", "year", "dt") if c in table.column_names]).to_pylist()
    return {(r["symbol"], r["trade_date"]): r for r in rows}


def test_a_daily_lake_is_read_but_never_written(tmp_path: Path) -> None:
    root = tmp_path / "daily"
    rows = daily_lake(root)
    lake = open_lake(root)
    assert lake.read().num_rows == rows
    assert lake.latest_dates(["HK.00700", "US.AAPL"]) == {"HK.00700": HK_DAYS[-1], "US.AAPL": US_DAYS[-1]}
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(LakeSchemaError) as info:
        lake.upsert(rows_to_table(rows_of(HK, [dt.date(2026, 5, 22)])))
    message = str(info.value)
    assert "holds 7 partition(s) of the daily layout" in message
    assert "python -m airflow_provider_shortint.lake.migrate SOURCE TARGET" in message
    assert "nothing was written" in message
    with pytest.raises(LakeSchemaError, match="daily layout"):
        lake.stage(rows_to_table(rows_of(HK, [dt.date(2026, 5, 22)])), run="r", name="n")
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_migrate_moves_every_row_once_and_a_second_run_writes_nothing(tmp_path: Path) -> None:
    import duckdb

    source, target = tmp_path / "daily", tmp_path / "yearly"
    rows = daily_lake(source)
    before = {p: p.read_bytes() for p in source.rglob("*") if p.is_file()}
    result = migrate_daily_lake(str(source), str(target))
    assert (result.daily_files, result.rows_read, result.rows_written) == (7, rows, rows)
    assert result.partitions_written == (
        "market=HK/year=2025",
        "market=HK/year=2026",
        "market=US/year=2025",
        "market=US/year=2026",
    )
    assert {p: p.read_bytes() for p in source.rglob("*") if p.is_file()} == before  # the source is only read
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*.parquet")) == [
        f"{name}/part-0.parquet" for name in result.partitions_written
    ]
    old, new = open_lake(source).read(), open_lake(target).read()
    assert keyed(new) == keyed(old)
    (count,) = (
        duckdb.connect()
        .execute(  # type: ignore[misc]
            f"select count(*) from read_parquet('{target}/**/*.parquet', hive_partitioning=true)"
        )
        .fetchone()
    )
    assert count == rows

    files = {p: p.read_bytes() for p in target.rglob("*.parquet")}
    again = migrate_daily_lake(f"file://{source}", str(target))
    assert (again.rows_written, again.partitions_written, again.partitions_unchanged) == (0, (), 4)
    assert {p: p.read_bytes() for p in target.rglob("*.parquet")} == files  # byte for byte
    assert open_lake(target).upsert(rows_to_table(rows_of(HK, [dt.date(2026, 5, 22)]))).rows_written == 2


def test_migrate_refuses_a_target_inside_the_source_or_the_same_folder(tmp_path: Path) -> None:
    source = tmp_path / "daily"
    daily_lake(source)
    for target in (source, source / "yearly", tmp_path):
        with pytest.raises(InvalidParameterError, match="apart from the source"):
            migrate_daily_lake(str(source), str(target))
    with pytest.raises(InvalidParameterError, match="no partition of the daily layout"):
        migrate_daily_lake(str(tmp_path / "empty"), str(tmp_path / "target"))


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, target = tmp_path / "daily", tmp_path / "yearly"
    rows = daily_lake(source)
    assert main([str(source), str(target)]) == 0
    assert f"7 daily file(s), {rows} row(s) read; 4 yearly partition(s) written" in capsys.readouterr().out
    assert main([str(source), str(source / "inside")]) == 2
    assert "apart from the source" in capsys.readouterr().err


def test_a_daily_lake_on_s3_moves_to_another_prefix(s3_server: Any, s3_prefix: str, tmp_path: Path) -> None:
    """The same move between two prefixes of a bucket: the source's objects are not touched."""
    daily_lake(tmp_path / "daily")
    client = s3_server.client()
    for path in (tmp_path / "daily").rglob("*.parquet"):
        key = f"{s3_prefix}/daily/{path.relative_to(tmp_path / 'daily')}"
        client.put_object(Bucket=s3_server.bucket, Key=key, Body=path.read_bytes())
    source, target = s3_server.url(f"{s3_prefix}/daily"), s3_server.url(f"{s3_prefix}/yearly")
    before = s3_server.objects(f"{s3_prefix}/daily")
    result = migrate_daily_lake(source, target)
    assert len(result.partitions_written) == 4
    assert s3_server.objects(f"{s3_prefix}/daily") == before
    assert keyed(open_lake(target).read()) == keyed(open_lake(source).read())
    with pytest.raises(InvalidParameterError, match="apart from the source"):
        migrate_daily_lake(source, s3_server.url(f"{s3_prefix}/daily/yearly"))
