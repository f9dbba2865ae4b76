"""The Parquet lake (DESIGN.md §6): layout, schema, merge, idempotency, atomicity, concurrency, readers."""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shortint.exceptions import InvalidParameterError
from airflow_provider_shortint.lake import LakeSchemaError, ParquetLake, UpsertResult, open_lake
from airflow_provider_shortint.records import COLUMNS, rows_to_table
from tests._fixtures_pool import BARRIER_TIMEOUT, racing_pool, start_together
from tests._fixtures_tables import make_row, make_table

D0 = dt.date(2025, 12, 31)  # the day before a new year: another partition
D1, D2, D3 = dt.date(2026, 5, 13), dt.date(2026, 5, 14), dt.date(2026, 5, 15)
T0 = dt.datetime(2026, 5, 16, 1, 0, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 5, 17, 1, 0, tzinfo=dt.UTC)


def data_files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and LOCKS not in path.parts
    }


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*.parquet")}


def without_ingested_at(table: Any) -> list[dict[str, Any]]:
    return table.drop_columns(["ingested_at"]).to_pylist()


LOCKS = "_locks"
HK = ["HK.00700", "HK.00005", "HK.09988"]
US = ["US.AAPL", "US.BRK.B", "US.TSLA"]


@pytest.fixture
def lake(tmp_path: Path) -> ParquetLake:
    return open_lake(tmp_path / "lake")


def root_of(lake: ParquetLake) -> Path:
    return Path(lake.uri)


# ------------------------------------------------------------------------------------------------
# Layout, schema, readers
# ------------------------------------------------------------------------------------------------


def test_layout_and_file_schema(lake: ParquetLake) -> None:
    import pyarrow.parquet as pq

    from airflow_provider_shortint.records import lake_schema

    result = lake.upsert(make_table(HK + US, [D0, D2, D3]))
    root = root_of(lake)
    expected = sorted(f"market={m}/year={y}/part-0.parquet" for m in ("HK", "US") for y in (2025, 2026))
    assert sorted(data_files(root)) == expected
    assert result == UpsertResult(
        rows_written=18,
        rows_unchanged=0,
        partitions_written=tuple(f"market={m}/year={y}" for m in ("HK", "US") for y in (2025, 2026)),
        partitions_unchanged=0,
        latest_trade_date={"HK": "2026-05-15", "US": "2026-05-15"},
        rows_written_by_market={"HK": 9, "US": 9},
    )
    assert lake.partition_path("HK", D3) == str(root / "market=HK/year=2026/part-0.parquet")
    assert lake.partition_path("HK", D0) == str(root / "market=HK/year=2025/part-0.parquet")
    assert lake.uri == str(root)
    for rel in expected:
        path = root / rel
        meta = pq.read_metadata(path)
        table = pq.read_table(path, partitioning=None)
        assert table.schema.equals(lake_schema()), table.schema
        assert table.column_names == list(COLUMNS)
        assert "market" not in table.column_names and "year" not in table.column_names
        assert b"pandas" not in (meta.metadata or {})
        assert meta.row_group(0).column(0).compression == "ZSTD"
        assert [c.column_index for c in meta.row_group(0).sorting_columns] == [0, 1]
        keys = list(
            zip(table.column("symbol").to_pylist(), table.column("trade_date").to_pylist(), strict=True)
        )
        assert keys == sorted(set(keys))  # sorted by (symbol, trade_date), each key once
        market, year = rel.split("/")[0][7:], int(rel.split("/")[1][5:])
        assert {s[:2] for s, _ in keys} == {market}
        assert {d.year for _, d in keys} == {year}
    hk = pq.read_table(root / expected[1])
    assert hk.column("shares_short").null_count == hk.num_rows  # US-only column is null for HK


def test_row_groups_are_sized_for_a_symbol_filter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows sorted by symbol in row groups of ROW_GROUP_ROWS: a filter on one symbol reads one group."""
    import pyarrow.parquet as pq

    from airflow_provider_shortint.lake import arrow

    monkeypatch.setattr(arrow, "ROW_GROUP_ROWS", 6)
    lake = open_lake(tmp_path / "lake")
    symbols = [f"HK.{i:05d}" for i in range(1, 9)]
    lake.upsert(make_table(symbols, [D1, D2, D3]))  # 24 rows: 4 groups of 6
    path = tmp_path / "lake/market=HK/year=2026/part-0.parquet"
    meta = pq.read_metadata(path)
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [6, 6, 6, 6]
    stats = [meta.row_group(i).column(0).statistics for i in range(meta.num_row_groups)]
    assert [(s.min, s.max) for s in stats] == [
        ("HK.00001", "HK.00002"),
        ("HK.00003", "HK.00004"),
        ("HK.00005", "HK.00006"),
        ("HK.00007", "HK.00008"),
    ]
    assert arrow._groups_with(meta, ["HK.00004"]) == [1]
    assert arrow._groups_with(meta, ["HK.00001", "HK.00008", "HK.99999"]) == [0, 3]
    rows = arrow.read_rows(str(path), "x", ["symbol", "trade_date"], ["HK.00004"])
    assert rows.column("symbol").to_pylist() == ["HK.00004"] * 3


def test_readers_agree_duckdb_polars_pyarrow(lake: ParquetLake) -> None:
    """The documented readers, as written in docs/LAKE.md and the README, see every row once."""
    import duckdb
    import polars as pl
    import pyarrow.dataset as ds

    table = make_table(HK + US, [D0, D1, D2, D3])
    lake.upsert(table)
    lake.stage(make_table(HK, [D3], version=9), run="pending", name="chunk")  # invisible until committed
    root = lake.uri
    cols = ["symbol", "trade_date", "close_price", "shares_short", "market", "year"]
    expected = sorted(
        (
            r["symbol"],
            r["trade_date"],
            r["close_price"],
            r["shares_short"],
            r["symbol"][:2],
            r["trade_date"].year,
        )
        for r in table.to_pylist()
    )
    con = duckdb.connect()
    duck = con.execute(
        f"select {', '.join(cols)} from read_parquet('{root}/**/*.parquet', hive_partitioning=true) "
        "order by market, year, symbol, trade_date"
    ).fetchall()
    assert duck == sorted(expected, key=lambda r: (r[4], r[5], r[0], r[1]))
    polars_rows = (
        pl.scan_parquet(f"{root}/**/*.parquet", hive_partitioning=True).select(cols).collect().rows()
    )
    assert sorted(polars_rows) == expected
    arrow = ds.dataset(root, format="parquet", partitioning="hive").to_table(columns=cols)
    assert sorted(tuple(r.values()) for r in arrow.to_pylist()) == expected
    ours = lake.read(cols)
    assert ours.column_names == cols
    assert [tuple(r.values()) for r in ours.to_pylist()] == sorted(
        expected, key=lambda r: (r[4], r[5], r[0], r[1])
    )
    dates = lake.read(["symbol", "trade_date", "dt"]).to_pylist()
    assert all(r["dt"] == r["trade_date"] for r in dates)  # `dt` on request: the daily layout's key


def test_read_whole_lake_schema_and_empty_lake(lake: ParquetLake) -> None:
    import pyarrow as pa

    from airflow_provider_shortint.records import lake_schema

    empty = lake.read()
    assert empty.num_rows == 0
    assert empty.column_names == [*COLUMNS, "market", "year"]
    assert lake.latest_dates() == {}
    assert lake.latest_dates(["HK.00700"]) == {}
    lake.upsert(make_table(HK, [D3]))
    table = lake.read()
    assert table.column_names == [*COLUMNS, "market", "year"]
    assert table.schema.field("market").type == pa.string()
    assert table.schema.field("year").type == pa.int32()
    assert lake.read(["dt"]).schema.field("dt").type == pa.date32()
    assert table.select(list(COLUMNS)).schema.equals(lake_schema())
    with pytest.raises(InvalidParameterError, match="unknown column"):
        lake.read(["symbol", "nope"])


# ------------------------------------------------------------------------------------------------
# Upsert semantics
# ------------------------------------------------------------------------------------------------


def test_second_identical_upsert_changes_nothing(lake: ParquetLake) -> None:
    lake.upsert(make_table(HK + US, [D1, D2, D3]))
    root = root_of(lake)
    before, stamps = data_files(root), mtimes(root)
    time.sleep(0.01)
    again = lake.upsert(make_table(HK + US, [D1, D2, D3], at=T1))  # new ingested_at, same values
    assert again.rows_written == 0
    assert again.rows_unchanged == 18
    assert again.partitions_written == ()
    assert again.partitions_unchanged == 2
    assert data_files(root) == before
    assert mtimes(root) == stamps
    assert set(lake.read(["ingested_at"]).column("ingested_at").to_pylist()) == {T0}


def test_output_is_deterministic(tmp_path: Path) -> None:
    one, two = open_lake(tmp_path / "one"), open_lake(tmp_path / "two")
    one.upsert(make_table(HK + US, [D2, D3]))
    # Same rows, different input order and chunking, in two upserts.
    two.upsert(make_table(list(reversed(US + HK)), [D3]))
    two.upsert(make_table(list(reversed(US + HK)), [D2]))
    assert data_files(tmp_path / "one") == data_files(tmp_path / "two")


def test_merge_replaces_changed_keeps_identical_and_others(lake: ParquetLake) -> None:
    import pyarrow as pa

    lake.upsert(make_table(["US.AAPL", "US.BRK.B", "US.TSLA"], [D3]))
    changed = make_table(["US.AAPL"], [D3], version=1, at=T1)
    same = make_table(["US.BRK.B"], [D3], at=T1)
    new = make_table(["US.MSFT"], [D3], at=T1)
    result = lake.upsert(pa.concat_tables([changed, same, new]))
    assert (result.rows_written, result.rows_unchanged) == (2, 1)
    assert result.partitions_written == ("market=US/year=2026",)
    rows = {r["symbol"]: r for r in lake.read().to_pylist()}
    assert list(rows) == ["US.AAPL", "US.BRK.B", "US.MSFT", "US.TSLA"]  # sorted by symbol
    assert rows["US.AAPL"]["ingested_at"] == T1
    assert rows["US.AAPL"]["close_price"] == make_row("US.AAPL", D3, 1)["close_price"]
    assert rows["US.BRK.B"]["ingested_at"] == T0  # identical: the stored version is kept
    assert rows["US.MSFT"]["ingested_at"] == T1
    assert rows["US.TSLA"]["ingested_at"] == T0  # not in the input: kept


def test_null_aware_comparison_and_changed_null(lake: ParquetLake) -> None:
    row = {"symbol": "HK.00700", "trade_date": D3, "timestamp": None, "close_price": None}
    lake.upsert(rows_to_table([row], ingested_at=T0))
    assert lake.upsert(rows_to_table([row], ingested_at=T1)).rows_written == 0
    result = lake.upsert(rows_to_table([{**row, "close_price": 1.0}], ingested_at=T1))
    assert result.rows_written == 1
    assert lake.read(["close_price"]).column(0).to_pylist() == [1.0]
    back_to_null = lake.upsert(rows_to_table([row], ingested_at=T1))
    assert back_to_null.rows_written == 1
    assert lake.read(["close_price"]).column(0).to_pylist() == [None]


def test_duplicate_keys_in_input_last_wins(lake: ParquetLake) -> None:
    import pyarrow as pa

    table = pa.concat_tables([make_table(["HK.00700"], [D3], version=v) for v in (1, 2, 3)])
    result = lake.upsert(table)
    assert result.rows_written == 1
    stored = lake.read()
    assert stored.num_rows == 1
    assert stored.column("close_price").to_pylist() == [make_row("HK.00700", D3, 3)["close_price"]]


def test_empty_input_writes_nothing(lake: ParquetLake) -> None:
    result = lake.upsert(rows_to_table([]))
    assert result == UpsertResult(0, 0, (), 0, {})
    assert not root_of(lake).exists()


def test_latest_trade_date_per_market_of_input(lake: ParquetLake) -> None:
    import pyarrow as pa

    result = lake.upsert(pa.concat_tables([make_table(HK, [D1, D2]), make_table(US, [D3])]))
    assert result.latest_trade_date == {"HK": "2026-05-14", "US": "2026-05-15"}
    assert lake.upsert(make_table(HK, [D1])).latest_trade_date == {"HK": "2026-05-13"}


def test_latest_dates(lake: ParquetLake) -> None:
    lake.upsert(make_table(HK, [D1, D2]))
    lake.upsert(make_table(["HK.00700", "US.AAPL"], [D3]))
    lake.upsert(make_table(["US.TSLA"], [D1]))
    everything = lake.latest_dates()
    assert everything == {"HK.00005": D2, "HK.00700": D3, "HK.09988": D2, "US.AAPL": D3, "US.TSLA": D1}
    assert lake.latest_dates(["HK.00700", "HK.00005", "US.NOPE"]) == {"HK.00700": D3, "HK.00005": D2}
    assert lake.latest_dates("US.TSLA") == {"US.TSLA": D1}
    assert lake.latest_dates([]) == {}
    with pytest.raises(InvalidParameterError):
        lake.latest_dates([700])  # type: ignore[list-item]


def test_latest_dates_reads_only_two_columns(lake: ParquetLake, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_shortint.lake import arrow

    lake.upsert(make_table(HK + US, [D0, D1, D2, D3]))
    seen: list[Any] = []
    original = arrow.rows_from

    def spy(parquet: Any, where: str, columns: Any = None, symbols: Any = None) -> Any:
        seen.append(columns)
        return original(parquet, where, columns, symbols)

    monkeypatch.setattr(arrow, "rows_from", spy)
    lake.latest_dates()
    lake.latest_dates(["HK.00700", "US.NOPE"])
    assert seen and all(cols == ["symbol", "trade_date"] for cols in seen)


def test_upsert_reads_only_the_partitions_of_its_input(
    lake: ParquetLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upsert lists the lake (foreign files, layout) but opens only the partitions it writes."""
    from airflow_provider_shortint.lake.stores.local import LocalStore

    lake.upsert(make_table(HK + US, [D0, D1, D2]))
    read: list[str] = []
    original = LocalStore.read

    def spy(self: LocalStore, rel: str) -> Any:
        read.append(rel)
        return original(self, rel)

    monkeypatch.setattr(LocalStore, "read", spy)
    assert lake.upsert(make_table(HK, [D3])).partitions_written == ("market=HK/year=2026",)
    assert read == ["market=HK/year=2026/part-0.parquet"]


def test_a_year_of_history_takes_a_new_date_without_touching_other_years(lake: ParquetLake) -> None:
    """A new trading date rewrites its year's file (merged, sorted); other years keep their bytes."""
    root = root_of(lake)
    lake.upsert(make_table(HK, [D0, D1, D2]))
    before = data_files(root)
    result = lake.upsert(make_table(HK, [D3]))
    assert (result.rows_written, result.rows_unchanged, result.partitions_written) == (
        3,
        0,
        ("market=HK/year=2026",),
    )
    after = data_files(root)
    assert after["market=HK/year=2025/part-0.parquet"] == before["market=HK/year=2025/part-0.parquet"]
    rows = lake.read(["symbol", "trade_date"]).to_pylist()
    assert [(r["symbol"], r["trade_date"]) for r in rows if r["trade_date"].year == 2026] == sorted(
        (s, d) for s in HK for d in (D1, D2, D3)
    )


# ------------------------------------------------------------------------------------------------
# Schema checks
# ------------------------------------------------------------------------------------------------


def test_lossless_casts_accepted_and_partition_columns_dropped(lake: ParquetLake) -> None:
    import pyarrow as pa

    table = make_table(HK, [D3])
    wide = table.set_column(0, "symbol", table.column("symbol").cast(pa.large_string()))
    wide = wide.set_column(
        wide.schema.get_field_index("ingested_at"),
        "ingested_at",
        wide.column("ingested_at").cast(pa.timestamp("ms", tz="UTC")),
    )
    assert lake.upsert(wide).rows_written == 3
    roundtrip = lake.read()  # has market and dt: may be upserted back unchanged
    assert lake.upsert(roundtrip).rows_written == 0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.drop_columns(["avg_cost"]), "missing columns"),
        (lambda t: t.append_column("extra", t.column("timestamp")), "unexpected columns"),
        (lambda t: t.set_column(2, "timestamp", t.column("timestamp").cast("string")), "cannot be cast"),
        (lambda t: t.set_column(0, "symbol", t.column("symbol").cast("string").fill_null("x")), "outside"),
    ],
)
def test_bad_input_schema_raises(lake: ParquetLake, mutate: Any, message: str) -> None:
    table = make_table(HK, [D3])
    if message == "outside":
        table = rows_to_table([{**make_row("HK.00700", D3), "symbol": "700"}])
    with pytest.raises(LakeSchemaError, match=message):
        lake.upsert(mutate(table) if message != "outside" else table)
    assert not root_of(lake).exists()


def test_null_key_and_non_table_raise(lake: ParquetLake) -> None:
    import pyarrow as pa

    from airflow_provider_shortint.records import lake_schema

    table = make_table(HK, [D3])
    nullable = pa.schema([f.with_nullable(True) for f in lake_schema()])
    broken = table.cast(nullable).set_column(
        0, pa.field("symbol", pa.string()), pa.array(["HK.1", None, "HK.2"])
    )
    with pytest.raises(LakeSchemaError, match="null"):
        lake.upsert(broken)
    with pytest.raises(LakeSchemaError, match=r"pyarrow\.Table"):
        lake.upsert([make_row("HK.00700", D3)])


def test_stored_file_with_wrong_schema_raises(lake: ParquetLake) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = root_of(lake) / "market=HK" / "year=2026"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"symbol": ["HK.00700"], "x": [1]}), folder / "part-0.parquet")
    before = (folder / "part-0.parquet").read_bytes()
    with pytest.raises(LakeSchemaError, match="stored file"):
        lake.upsert(make_table(HK, [D3]))
    assert (folder / "part-0.parquet").read_bytes() == before


# ------------------------------------------------------------------------------------------------
# Atomicity and failures
# ------------------------------------------------------------------------------------------------


def test_failed_replace_keeps_old_file_and_leaves_no_temp(
    lake: ParquetLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake.upsert(make_table(HK, [D3]))
    root = root_of(lake)
    before = data_files(root)

    def broken_replace(src: str, dst: str, *, src_dir_fd: int, dst_dir_fd: int) -> None:
        assert src.startswith(".") and not src.endswith(".parquet") and dst == "part-0.parquet"
        assert src_dir_fd == dst_dir_fd  # same folder: the rename is atomic
        assert os.stat(src, dir_fd=src_dir_fd).st_size > 0  # the whole file was written before the rename
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        lake.upsert(make_table(HK, [D3], version=1))
    monkeypatch.undo()
    assert data_files(root) == before  # old file intact, no temp file left behind
    assert lake.read().num_rows == 3


def test_exception_between_partitions_then_rerun_converges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    table = make_table(HK + US, [D0, D1, D2, D3], version=1)
    reference = open_lake(tmp_path / "reference")
    reference.upsert(make_table(HK + US, [D0, D1, D2]))
    reference.upsert(table)

    lake = open_lake(tmp_path / "lake")
    lake.upsert(make_table(HK + US, [D0, D1, D2]))
    original = ParquetLake._write_partition
    calls: list[str] = []

    def flaky(self: ParquetLake, partition: Any, data: Any, expected: Any) -> None:
        calls.append(partition.name)
        if len(calls) == 2:
            raise RuntimeError("injected failure")
        original(self, partition, data, expected)

    monkeypatch.setattr(ParquetLake, "_write_partition", flaky)
    with pytest.raises(RuntimeError, match="injected failure") as info:
        lake.upsert(table)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "already replaced (each atomically): ['market=HK/year=2025']" in notes
    assert "not written: ['market=HK/year=2026', 'market=US/year=2025', 'market=US/year=2026']" in notes
    monkeypatch.undo()
    for path in (tmp_path / "lake").rglob("*.parquet"):
        pq.read_table(path)  # every file readable
    assert lake.read().num_rows == 18  # HK 2025 has version 1, the others the old rows
    result = lake.upsert(table)
    assert result.rows_written == 24 - 3
    assert data_files(tmp_path / "lake") == data_files(tmp_path / "reference")


def test_stale_temp_files_are_ignored_then_removed(lake: ParquetLake) -> None:
    import duckdb

    lake.upsert(make_table(HK, [D3]))
    folder = root_of(lake) / "market=HK" / "year=2026"
    stale = folder / ".part-0.parquet.4242.deadbeef.tmp"
    stale.write_bytes(b"PAR1 half a file")
    assert lake.read().num_rows == 3
    assert lake.latest_dates() == {s: D3 for s in sorted(HK)}
    (count,) = (
        duckdb.connect()
        .execute(f"select count(*) from read_parquet('{lake.uri}/**/*.parquet', hive_partitioning=true)")
        .fetchall()[0]
    )
    assert count == 3
    lake.upsert(make_table(HK, [D3]))  # touching the partition (under its lock) clears dead writers' temps
    assert not stale.exists()


# ------------------------------------------------------------------------------------------------
# Concurrency: processes upserting overlapping symbols into the same partitions
# ------------------------------------------------------------------------------------------------


class _NoPandas:
    """Meta path finder that makes `import pandas` fail: the write path must not need it."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("pandas is blocked in lake writer processes", name=name)
        return None


def _init_worker() -> None:
    sys.modules.pop("pandas", None)
    sys.meta_path.insert(0, _NoPandas())
    import pyarrow  # noqa: F401  (warm up outside the timed section)


def _concurrent_writer(lake_path: str, worker: int, rounds: int, writers: int) -> list[tuple[float, float]]:
    """Each round: new rows only this worker writes + shared rows every worker rewrites."""
    lake = open_lake(lake_path)
    spans = []
    start_together(writers)
    for rnd in range(rounds):
        own = [f"HK.{worker}{rnd:04d}", f"US.W{worker}R{rnd}"]
        shared = ["HK.00700", "US.AAPL", f"US.S{worker % 2}"]
        rows = [make_row(s, d) for s in own for d in (D1, D2, D3)]
        rows += [make_row(s, d, version=worker * 100 + rnd) for s in shared for d in (D1, D2, D3)]
        began = time.time()
        lake.upsert(rows_to_table(rows))
        spans.append((began, time.time()))
    assert "pandas" not in sys.modules
    return spans


@pytest.fixture(scope="module")
def pool() -> Iterator[Any]:
    """Four writer processes that imported the lake (and so Airflow, ~4 s of CPU) once, in a forkserver."""
    preload = ["pyarrow", "pyarrow.compute", "pyarrow.parquet", "airflow_provider_shortint.lake", __name__]
    with racing_pool(preload, 4, _init_worker) as workers:
        yield workers


@pytest.mark.parametrize("processes", [2, 4])
def test_concurrent_writers_lose_nothing(tmp_path: Path, pool: Any, processes: int) -> None:
    rounds = 12
    path = str(tmp_path / "lake")
    jobs = [pool.apply_async(_concurrent_writer, (path, w, rounds, processes)) for w in range(processes)]
    spans = [job.get(timeout=BARRIER_TIMEOUT * 2) for job in jobs]
    table = open_lake(path).read()
    keys = list(zip(table.column("symbol").to_pylist(), table.column("trade_date").to_pylist(), strict=True))
    assert len(keys) == len(set(keys)), "duplicate (symbol, trade_date)"
    own = {f"HK.{w}{r:04d}" for w in range(processes) for r in range(rounds)}
    own |= {f"US.W{w}R{r}" for w in range(processes) for r in range(rounds)}
    shared = {"HK.00700", "US.AAPL", "US.S0", "US.S1"}
    assert set(keys) == {(s, d) for s in own | shared for d in (D1, D2, D3)}
    by_key = {(r["symbol"], r["trade_date"]): r for r in table.to_pylist()}
    for day in (D1, D2, D3):  # a shared row holds one of the versions that were written, intact
        aapl = by_key[("US.AAPL", day)]
        versions = {w * 100 + r for w in range(processes) for r in range(rounds)}
        assert any(aapl == {**aapl, **make_row("US.AAPL", day, v)} for v in versions)
    # The writers really overlapped in time.
    first_end = min(end for worker in spans for _, end in worker)
    last_start = max(begin for worker in spans for begin, _ in worker)
    assert last_start > first_end or processes == 1


# ------------------------------------------------------------------------------------------------
# Opening a lake
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "relative/lake",
        "./lake",
        "~/lake",
        None,
        42,
        b"/tmp/lake",
        ["/tmp/lake"],
        "ftp://host/lake",
        "nosuchscheme://bucket/lake",
        "s3://",
        "s3://aws_test@",
        "s3://aws_test@/prefix",
        "file://otherhost/lake",
        "1s3://bucket",
        "s3:/bucket/lake",
        "s3://[bucket/lake",
        # '..' and '.' segments, surrounding whitespace, control characters (issue 14)
        "/data/../etc/lake",
        "/data/lake/..",
        "file:///data/%2e%2e/lake",
        "file:///data/%2E%2E/lake",
        "s3://aws_test@bucket/../other",
        "s3://aws_test@bucket/lakes/%2e%2e/other",
        "s3://aws_test@bucket/./lake",
        "/data/lake ",
        " /data/lake",
        "/data/lake\n",
        "/data/la\tke",
        "s3://aws_test@bucket/lake ",
        "s3://aws_test@bucket/lake\n",
    ],
)
def test_bad_paths_raise_invalid_parameter(bad: Any) -> None:
    with pytest.raises(InvalidParameterError) as info:
        open_lake(bad)
    message = str(info.value)
    assert message.count(". ") == 0 and message.strip()


def test_credentials_in_url_rejected_without_echoing_them() -> None:
    with pytest.raises(InvalidParameterError) as info:
        open_lake("s3://AKIAEXAMPLE:s3cr3t@bucket/lake")
    assert "s3cr3t" not in str(info.value) and "AKIAEXAMPLE" not in str(info.value)
    assert "connection" in str(info.value)


def test_accepted_local_forms(tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    for form in (tmp_path / "l", str(tmp_path / "l"), f"file://{tmp_path}/l", f"{tmp_path}/l/"):
        lake = open_lake(form)
        assert lake.uri == str(tmp_path / "l")
        assert lake.is_local
    assert open_lake(ObjectStoragePath(f"file://{tmp_path}/l")).uri == str(tmp_path / "l")
    assert repr(open_lake(tmp_path)) == f"ParquetLake({str(tmp_path)!r})"
    assert not (tmp_path / "l").exists()  # opening does no I/O


def test_object_storage_url_parsed_without_io() -> None:
    lake = open_lake("s3://some_conn@my-bucket/lakes/short_interest/")
    assert lake.uri == "s3://my-bucket/lakes/short_interest"
    assert not lake.is_local
    assert lake.partition_path("US", D3) == (
        "s3://my-bucket/lakes/short_interest/market=US/year=2026/part-0.parquet"
    )
    with pytest.raises(InvalidParameterError):
        lake.partition_path("SH", D3)
