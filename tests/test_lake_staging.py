"""Staging and commit: fetched rows made durable out of every reader's way, then each partition written
once for all the writers of a run, one partition in memory at a time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shortint.exceptions import InvalidParameterError
from airflow_provider_shortint.lake import LakeSchemaError, ParquetLake, StageResult, open_lake
from airflow_provider_shortint.records import rows_to_table

DAYS = [dt.date(2024, 12, 30), dt.date(2025, 6, 30), dt.date(2026, 5, 15)]  # three years


def table(symbols: list[str], days: list[dt.date] = DAYS, price: float = 1.0) -> Any:
    rows = [
        {"symbol": s, "trade_date": d, "timestamp": 1, "close_price": price} for d in days for s in symbols
    ]
    return rows_to_table(rows, ingested_at=dt.datetime(2026, 5, 16, tzinfo=dt.UTC))


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every partition the lake writes, in order (the lake's own write, counted)."""
    seen: list[str] = []
    original = ParquetLake._write_partition

    def counted(self: ParquetLake, partition: Any, rows: Any, expected: Any) -> None:
        original(self, partition, rows, expected)
        seen.append(partition.name)

    monkeypatch.setattr(ParquetLake, "_write_partition", counted)
    return seen


def test_staged_rows_are_invisible_until_the_commit_writes_each_partition_once(
    tmp_path: Path, writes: list[str]
) -> None:
    import duckdb
    import pyarrow.dataset as ds

    root = tmp_path / "lake"
    lake = open_lake(root)
    chunks = [["HK.00001", "HK.00002"], ["HK.00003", "US.AAPL"], ["US.MSFT", "HK.00004"]]
    for index, chunk in enumerate(chunks):
        result = lake.stage(table(chunk), run="backfill", name=f"chunk.{index:05d}")
        assert result.rows == 2 * len(DAYS)
    assert writes == []
    assert lake.staged_runs() == {"backfill": 3}  # one file per chunk
    assert (
        sorted(p.suffix for p in root.rglob("*") if p.is_file() and "_staging" in p.parts) == [".stage"] * 3
    )
    (matched,) = duckdb.connect().execute(f"select count(*) from glob('{root}/**/*.parquet')").fetchone()  # type: ignore[misc]
    assert matched == 0 and not list(root.rglob("*.parquet"))  # no "*.parquet" glob (DuckDB, polars) matches
    assert ds.dataset(str(root), format="parquet", partitioning="hive").count_rows() == 0
    assert lake.read().num_rows == 0 and lake.latest_dates() == {}

    result = lake.commit_staged("backfill")
    partitions = [f"market={m}/year={y}" for m in ("HK", "US") for y in (2024, 2025, 2026)]
    assert writes == partitions  # each once, in order
    assert result.partitions_written == tuple(partitions)
    assert result.rows_written == 6 * len(DAYS) and result.rows_written_by_market == {"HK": 12, "US": 6}
    assert result.latest_trade_date == {"HK": "2026-05-15", "US": "2026-05-15"}
    assert lake.staged_runs() == {} and not [
        p for p in root.rglob("*") if "_staging" in p.parts and p.is_file()
    ]
    assert lake.read().num_rows == 18
    assert lake.commit_staged("backfill") == lake.commit_staged("nothing staged")  # nothing left: no-op


def test_the_commit_equals_one_upsert_of_everything_byte_for_byte(tmp_path: Path) -> None:
    staged, direct = open_lake(tmp_path / "staged"), open_lake(tmp_path / "direct")
    direct.upsert(table(["HK.00001", "HK.00002", "US.AAPL"]))
    staged.stage(table(["US.AAPL"]), run="r", name="b")
    staged.stage(table(["HK.00002", "HK.00001"]), run="r", name="a")
    staged.commit_staged("r")

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.parquet")}

    assert files(tmp_path / "staged") == files(tmp_path / "direct")


def test_among_staged_rows_of_one_key_the_file_named_last_wins(tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    lake.stage(table(["HK.00001"], [DAYS[2]], price=2.0), run="r", name="b")
    lake.stage(table(["HK.00001"], [DAYS[2]], price=1.0), run="r", name="a")
    assert lake.commit_staged("r").rows_written == 1
    assert lake.read(["close_price"]).column(0).to_pylist() == [2.0]


def test_restaging_a_name_replaces_its_file(tmp_path: Path) -> None:
    """A retried chunk stages under the same name: its earlier rows are replaced, not added."""
    lake = open_lake(tmp_path / "lake")
    lake.stage(table(["HK.00001"], price=1.0), run="r", name="chunk.00000.00000")
    lake.stage(table(["HK.00001"], price=3.0), run="r", name="chunk.00000.00000")
    assert lake.staged_runs() == {"r": 1}
    lake.commit_staged("r")
    assert set(lake.read(["close_price"]).column(0).to_pylist()) == {3.0}


def test_the_commit_holds_one_partition_in_memory_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writes: list[str]
) -> None:
    """Staged rows are loaded partition by partition, each written before the next is loaded."""
    events: list[str] = []
    original = ParquetLake._staged_rows

    def loaded(self: ParquetLake, partition: Any, files: list[str]) -> Any:
        events.append(f"load {partition.name} ({len(writes)} written)")
        return original(self, partition, files)

    monkeypatch.setattr(ParquetLake, "_staged_rows", loaded)
    lake = open_lake(tmp_path / "lake")
    lake.stage(table(["HK.00001", "US.AAPL"]), run="r", name="a")
    lake.commit_staged("r")
    assert events == [f"load {name} ({count} written)" for count, name in enumerate(writes)]


def test_a_commit_that_fails_half_way_is_completed_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = open_lake(tmp_path / "lake")
    lake.stage(table(["HK.00001", "HK.00002"]), run="r", name="a")
    original = ParquetLake._write_partition
    calls: list[str] = []

    def fails_second(self: ParquetLake, partition: Any, rows: Any, expected: Any) -> None:
        calls.append(partition.name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        original(self, partition, rows, expected)

    with monkeypatch.context() as patch:
        patch.setattr(ParquetLake, "_write_partition", fails_second)
        with pytest.raises(OSError) as info:
            lake.commit_staged("r")
    notes = " ".join(info.value.__notes__)
    assert "already replaced (each atomically): ['market=HK/year=2024']" in notes
    assert "not written: ['market=HK/year=2025', 'market=HK/year=2026']" in notes
    assert lake.staged_runs() == {"r": 1}  # every staged file stays until the whole commit is done
    result = lake.commit_staged("r")  # the committed partition compares equal: not written again
    assert result.partitions_written == ("market=HK/year=2025", "market=HK/year=2026")
    assert result.partitions_unchanged == 1
    assert lake.read().num_rows == 6 and lake.staged_runs() == {}


def test_discard_and_names(tmp_path: Path) -> None:
    lake = open_lake(tmp_path / "lake")
    result = lake.stage(table(["HK.00001"], DAYS[:1]), run="manual__2026-05-16T01:00:00+00:00", name="load/1")
    assert result == StageResult(
        1, ("_staging/manual__2026-05-16T01_00_00_00_00-284f346d/load_1-42741a14.stage",)
    )
    assert lake.stage(table([], []), run="r", name="n") == StageResult(0, ())
    assert lake.discard_staged("manual__2026-05-16T01:00:00+00:00") == 1
    assert lake.staged_runs() == {}
    for bad in ("", " r", "r\n", None, 7):
        with pytest.raises(InvalidParameterError, match="staging run"):
            lake.stage(table(["HK.00001"]), run=bad, name="n")  # type: ignore[arg-type]


def test_small_partitions_share_a_staged_row_group_and_a_commit_reads_only_the_groups_of_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writes: list[str]
) -> None:
    """Consecutive partitions share a row group up to STAGED_GROUP_ROWS rows, a larger one has its own;
    the footer names the partitions of each group, and each partition's commit reads only its groups
    and keeps only its rows."""
    import pyarrow as pa

    from airflow_provider_shortint.lake import arrow

    monkeypatch.setattr(arrow, "STAGED_GROUP_ROWS", 4)
    root = tmp_path / "lake"
    lake = open_lake(root)
    rows = pa.concat_tables(
        [
            table(["HK.00001", "HK.00002"], DAYS[:2]),  # 2 rows in each of 2024 and 2025
            table([f"HK.{n:05d}" for n in range(1, 6)], DAYS[2:]),  # 5 rows in 2026
            table(["US.AAPL"], DAYS[2:]),
        ]
    )
    (staged,) = lake.stage(rows, run="r", name="a").files
    footer = arrow.staged_row_groups(arrow.open_parquet(str(root / staged), staged), staged)
    assert footer == [
        ("market=HK/year=2024", "market=HK/year=2025"),
        ("market=HK/year=2026",),
        ("market=US/year=2026",),
    ]
    read: list[list[int]] = []  # the row groups of each read, in order
    original = arrow.staged_rows

    def spied(parquet: Any, groups: list[int], where: str) -> Any:
        read.append(groups)
        return original(parquet, groups, where)

    monkeypatch.setattr(arrow, "staged_rows", spied)
    result = lake.commit_staged("r")
    assert writes == [name for names in footer for name in names]
    assert read == [[0], [0], [1], [2]]
    assert result.rows_written == rows.num_rows == lake.read().num_rows == 10


def test_a_staged_file_that_misnames_its_partitions_is_refused(tmp_path: Path) -> None:
    """A staged file whose footer files rows under the wrong partition, or names none, is refused with
    its name before anything is written; a footer giving a single name for a row group is read."""
    import json

    import pyarrow.parquet as pq

    from airflow_provider_shortint.lake.arrow import STAGED_PARTITIONS_KEY

    root = tmp_path / "lake"
    lake = open_lake(root)
    (staged,) = lake.stage(table(["HK.00001"], DAYS[:1]), run="r", name="a").files
    rows = pq.read_table(root / staged)
    for lie in (["market=HK/year=2026"], [["market=HK/year=2025", "market=HK/year=2026"]]):
        lying = {STAGED_PARTITIONS_KEY: json.dumps(lie).encode()}
        pq.write_table(rows.replace_schema_metadata(lying), root / staged)
        with pytest.raises(LakeSchemaError, match=r"from staged file .*a\.stage hold 1 row\(s\) of a market"):
            lake.commit_staged("r")
    for unnamed in (None, {STAGED_PARTITIONS_KEY: b"[[]]"}, {STAGED_PARTITIONS_KEY: b"[1]"}):
        pq.write_table(rows.replace_schema_metadata(unnamed), root / staged)
        with pytest.raises(LakeSchemaError, match=r"a\.stage does not say which partition"):
            lake.commit_staged("r")
    assert lake.read().num_rows == 0
    one_name = {STAGED_PARTITIONS_KEY: json.dumps(["market=HK/year=2024"]).encode()}
    pq.write_table(rows.replace_schema_metadata(one_name), root / staged)
    assert lake.commit_staged("r").rows_written == lake.read().num_rows == 1


def test_a_killed_stagers_temp_file_is_removed_once_it_is_an_hour_old(tmp_path: Path) -> None:
    """No lock covers a staging folder: a commit removes a temp file only when it is older than
    STALE_STAGING_TEMP_SECONDS (its writer is dead by then); discard_staged removes it at once."""
    import os

    from airflow_provider_shortint.lake.parquet_lake import STALE_STAGING_TEMP_SECONDS

    root = tmp_path / "lake"
    lake = open_lake(root)
    (staged,) = lake.stage(table(["HK.00001"], DAYS[:1]), run="r", name="a").files
    folder = (root / staged).parent
    old, fresh = folder / ".part-0.parquet.4242.aaaa.tmp", folder / ".part-0.parquet.4343.bbbb.tmp"
    old.write_bytes(b"half")
    fresh.write_bytes(b"half")
    hour_ago = old.stat().st_mtime - STALE_STAGING_TEMP_SECONDS - 1
    os.utime(old, (hour_ago, hour_ago))
    assert lake.commit_staged("r").rows_written == 1
    assert not old.exists() and fresh.exists()  # a writer of that age may still be staging
    assert lake.commit_staged("r").rows_written == 0 and fresh.exists()
    lake.discard_staged("r")
    assert not fresh.exists() and not (root / "_staging" / "r").exists()
