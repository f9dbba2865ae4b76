"""Delta and Iceberg tables behind the lake API (DESIGN.md §12): the same contents as the Parquet lake
for the same rows, read back by each format's own reader and by polars; the upsert's meaning (changed
rows replace, identical rows keep their ingested_at, no new version when nothing changed); latest_dates;
time travel; maintenance; duplicate repair; bad input refused before anything is written."""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shortint.exceptions import (
    InvalidParameterError,
    LakeSchemaError,
    TableFormatNotInstalledError,
)
from airflow_provider_shortint.lake import open_lake
from airflow_provider_shortint.lake.formats import open_table, table_asset_uri
from airflow_provider_shortint.records import COLUMNS, rows_to_table
from tests._fixtures_tables import (
    D1,
    D2,
    D3,
    HK,
    T0,
    T1,
    US,
    TableTarget,
    contents,
    keys_of,
    local_target,
    make_row,
    make_table,
)

# ------------------------------------------------------------------------------------------------
# The same rows, the same contents, whoever reads them
# ------------------------------------------------------------------------------------------------


def _load_three_times(lake: Any) -> None:
    """A first load, a re-run with some values changed and a new day, and an exact re-run."""
    lake.upsert(make_table(HK + US, [D1, D2]))
    changed = make_table(HK[:1] + US[:1], [D2, D3], version=7, at=T1)
    lake.upsert(changed)
    lake.upsert(changed)


def _native_rows(target: TableTarget) -> Any:
    """The table read by its format's own library, without this provider."""
    if target.table_format == "delta":
        from deltalake import DeltaTable

        return DeltaTable(target.path).to_pyarrow_table()
    from pyiceberg.catalog.sql import SqlCatalog

    folder = target.options["warehouse"]
    catalog = SqlCatalog("shortint", uri=f"sqlite:///{folder}/catalog.db", warehouse=f"file://{folder}")
    return catalog.load_table(target.path).scan().to_arrow()


def _polars_rows(target: TableTarget) -> Any:
    import polars as pl

    if target.table_format == "delta":
        return pl.read_delta(target.path).to_arrow()
    from pyiceberg.catalog.sql import SqlCatalog

    folder = target.options["warehouse"]
    catalog = SqlCatalog("shortint", uri=f"sqlite:///{folder}/catalog.db", warehouse=f"file://{folder}")
    return pl.scan_iceberg(catalog.load_table(target.path)).collect().to_arrow()


def test_same_rows_same_contents_as_the_parquet_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import duckdb

    monkeypatch.setenv("POLARS_ICEBERG_PLANNER", "pyiceberg")  # polars plans the scan with pyiceberg

    parquet = open_lake(tmp_path / "parquet")
    _load_three_times(parquet)
    expected = contents(parquet.read())
    duck = duckdb.sql(f"SELECT * FROM read_parquet('{tmp_path}/parquet/**/*.parquet')").fetch_arrow_table()
    assert contents(duck) == expected
    assert len(expected) == 3 * 2 * 2 + 2  # 6 symbols x 2 days, plus D3 for the 2 changed symbols
    for table_format in ("delta", "iceberg"):
        target = local_target(table_format, tmp_path)
        table = target.open()
        _load_three_times(table)
        assert contents(table.read()) == expected, table_format
        assert table.read().schema == parquet.read().schema, table_format
        assert contents(_native_rows(target)) == expected, table_format
        assert contents(_polars_rows(target)) == expected, table_format
        native = _native_rows(target)
        assert native.column("market").to_pylist() == [
            s.split(".")[0] for s in native.column("symbol").to_pylist()
        ]


def test_read_orders_and_selects_like_the_parquet_lake(table: Any, tmp_path: Path) -> None:
    parquet = open_lake(tmp_path / "parquet")
    for lake in (parquet, table):
        lake.upsert(make_table(US + HK, [D3, D1]))
    assert (
        table.read().drop_columns(["ingested_at"]).to_pylist()
        == parquet.read().drop_columns(["ingested_at"]).to_pylist()
    )
    assert table.read(["dt", "symbol"]).column_names == ["dt", "symbol"]
    assert table.read(["dt", "symbol"]).to_pylist() == parquet.read(["dt", "symbol"]).to_pylist()
    for bad in (["nope"], "symbol", ["symbol", "symbol"], [3]):
        with pytest.raises(InvalidParameterError):
            table.read(bad)


def test_missing_table_reads_empty_and_is_not_created(target: TableTarget) -> None:
    table = target.open()
    empty = table.read()
    assert empty.num_rows == 0 and empty.column_names[: len(COLUMNS)] == list(COLUMNS)
    assert table.latest_dates() == {} and table.latest_dates(["HK.00700"]) == {}
    assert table.version is None and table.versions() == []
    if target.table_format == "delta":
        assert not Path(target.path).exists()


# ------------------------------------------------------------------------------------------------
# The upsert's meaning
# ------------------------------------------------------------------------------------------------


def test_rerun_changes_nothing_and_adds_no_version(table: Any) -> None:
    first = table.upsert(make_table(HK + US, [D1, D2, D3]))
    assert (first.rows_written, first.rows_unchanged) == (18, 0)
    assert first.partitions_written == ("market=HK", "market=US")
    version, before = table.version, table.read()
    again = table.upsert(make_table(HK + US, [D1, D2, D3], at=T1))  # same values, a later fetch
    assert (again.rows_written, again.rows_unchanged, again.partitions_written) == (0, 18, ())
    assert again.partitions_unchanged == 2
    assert table.version == version and len(table.versions()) == len(table.versions())
    assert table.read().equals(before)  # ingested_at of the stored rows kept
    assert set(table.read().column("ingested_at").to_pylist()) == {T0}


def test_changed_rows_replace_identical_rows_keep_their_ingested_at(table: Any) -> None:
    table.upsert(make_table(HK + US, [D1, D2]))
    rows = [make_row("HK.00700", D1, version=3), make_row("HK.00005", D1), make_row("US.NEW", D2)]
    result = table.upsert(rows_to_table(rows, ingested_at=T1))
    assert (result.rows_written, result.rows_unchanged) == (2, 1)
    assert result.partitions_written == ("market=HK", "market=US")
    assert result.latest_trade_date == {"HK": D1.isoformat(), "US": D2.isoformat()}
    by_key = {(r["symbol"], r["trade_date"]): r for r in table.read().to_pylist()}
    assert len(by_key) == 13
    assert by_key[("HK.00700", D1)]["close_price"] == make_row("HK.00700", D1, 3)["close_price"]
    assert by_key[("HK.00700", D1)]["ingested_at"] == T1
    assert by_key[("HK.00005", D1)]["ingested_at"] == T0  # identical: the stored row stays
    assert by_key[("US.NEW", D2)]["ingested_at"] == T1


def test_null_and_nan_compare_equal_a_changed_null_is_written(table: Any) -> None:
    row = {**make_row("US.AAPL", D1), "days_to_cover": None, "short_percent": math.nan}
    table.upsert(rows_to_table([row]))
    same = table.upsert(rows_to_table([row], ingested_at=T1))
    assert same.rows_written == 0
    changed = table.upsert(rows_to_table([{**row, "days_to_cover": 2.5}], ingested_at=T1))
    assert changed.rows_written == 1
    back = table.read().to_pylist()[0]
    assert back["days_to_cover"] == 2.5 and math.isnan(back["short_percent"]) and back["ingested_at"] == T1


def test_duplicate_keys_in_input_last_wins(table: Any) -> None:
    rows = [make_row("HK.00700", D1, 1), make_row("HK.00005", D1), make_row("HK.00700", D1, 2)]
    result = table.upsert(rows_to_table(rows))
    assert result.rows_written == 2
    stored = {r["symbol"]: r["close_price"] for r in table.read().to_pylist()}
    assert stored["HK.00700"] == make_row("HK.00700", D1, 2)["close_price"]


def test_empty_input_writes_nothing(target: TableTarget) -> None:
    table = target.open()
    result = table.upsert(make_table([], [D1]))
    assert (result.rows_written, result.partitions_written) == (0, ())
    assert table.version is None  # not even created


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.drop_columns(["close_price"]),
        lambda t: t.set_column(0, "symbol", t.column("trade_date")),
        lambda t: t.set_column(0, "symbol", __import__("pyarrow").array(["HK.700"] * t.num_rows)),
        lambda t: t.set_column(0, "symbol", __import__("pyarrow").array(["SH.600000"] * t.num_rows)),
        lambda t: "not a table",
    ],
    ids=["missing column", "wrong type", "non-canonical symbol", "unregistered market", "not a table"],
)
def test_bad_input_refused_before_anything_is_written(target: TableTarget, mutate: Any) -> None:
    table = target.open()
    with pytest.raises(LakeSchemaError):
        table.upsert(mutate(make_table(HK, [D1])))
    assert table.version is None


def test_a_foreign_table_at_the_path_is_refused(target: TableTarget) -> None:
    import pyarrow as pa

    foreign = pa.table({"id": pa.array([1], pa.int64())})
    if target.table_format == "delta":
        from deltalake import write_deltalake

        write_deltalake(target.path, foreign)
    else:
        from pyiceberg.catalog.sql import SqlCatalog

        folder = Path(target.options["warehouse"])
        folder.mkdir(parents=True)
        catalog = SqlCatalog("shortint", uri=f"sqlite:///{folder}/catalog.db", warehouse=f"file://{folder}")
        catalog.create_namespace("shortint")
        catalog.create_table(target.path, schema=foreign.schema)
    with pytest.raises(LakeSchemaError, match="short-interest table"):
        target.open().upsert(make_table(HK, [D1]))


# ------------------------------------------------------------------------------------------------
# latest_dates, time travel, versions
# ------------------------------------------------------------------------------------------------


def test_latest_dates(table: Any) -> None:
    table.upsert(make_table(HK, [D1, D2]))
    table.upsert(make_table(US[:1], [D1, D3]))
    assert table.latest_dates() == {**{s: D2 for s in HK}, "US.AAPL": D3}
    assert table.latest_dates(["US.AAPL", "HK.00700", "US.NOPE", "XX.1", "nonsense"]) == {
        "US.AAPL": D3,
        "HK.00700": D2,
    }
    assert table.latest_dates("HK.00005") == {"HK.00005": D2}
    assert table.latest_dates([]) == {}
    for bad in (42, [None], [b"HK.00700"]):
        with pytest.raises(InvalidParameterError):
            table.latest_dates(bad)


def test_time_travel_by_version_and_by_time(table: Any) -> None:
    table.upsert(make_table(HK, [D1]))
    first = table.versions()[-1]
    between = dt.datetime.now(dt.UTC)  # after the first commit, before the next ones (a point, no bound)
    table.upsert(make_table(HK, [D1], version=5, at=T1))
    table.upsert(make_table(US, [D2], at=T1))
    assert table.read().num_rows == 6
    old = table.read(as_of=first.version)
    assert contents(old) == contents(make_table(HK, [D1]))
    assert contents(table.read(as_of=between)) == contents(old)
    timestamps = [v.timestamp for v in table.versions()]
    assert timestamps == sorted(timestamps) and all(t.tzinfo is not None for t in timestamps)
    for bad in (-1, True, "3", dt.datetime(2026, 1, 1)):
        with pytest.raises(InvalidParameterError):
            table.read(as_of=bad)
    with pytest.raises(InvalidParameterError, match=r"no (version|snapshot)"):
        table.read(as_of=987654321)


def test_time_travel_one_liners_of_the_docs(target: TableTarget) -> None:
    """The readers docs/TABLES.md shows, as written there."""
    import polars as pl

    table = target.open()
    table.upsert(make_table(HK, [D1]))
    first = table.versions()[-1].version
    table.upsert(make_table(HK, [D1], version=5, at=T1))
    if target.table_format == "delta":
        old = pl.read_delta(target.path, version=first)
    else:
        from pyiceberg.catalog.sql import SqlCatalog

        folder = target.options["warehouse"]
        catalog = SqlCatalog("shortint", uri=f"sqlite:///{folder}/catalog.db", warehouse=f"file://{folder}")
        old = pl.from_arrow(catalog.load_table(target.path).scan(snapshot_id=first).to_arrow())
    assert contents(old.to_arrow()) == contents(table.read(as_of=first))
    assert set(old["ingested_at"].to_list()) == {T0}


# ------------------------------------------------------------------------------------------------
# Maintenance
# ------------------------------------------------------------------------------------------------


def _data_files(target: TableTarget) -> set[str]:
    base = Path(target.path if target.table_format == "delta" else target.options["warehouse"])
    return {str(p) for p in base.rglob("*.parquet")}


def test_maintenance_compacts_keeps_contents_and_honours_retention(target: TableTarget) -> None:
    table = target.open()
    for day in (D1, D2, D3):  # a daily run: one small file per day and market
        table.upsert(make_table(HK + US, [day]))
    table.upsert(make_table(HK[:1], [D2], version=9, at=T1))
    before, first = contents(table.read()), table.versions()[0].version
    files_before = _data_files(target)
    kept = table.maintain()  # the safe default: a week of history stays
    assert kept.files_compacted >= 2 and kept.files_written >= 1
    assert kept.files_deleted == 0 and not kept.dry_run
    assert contents(table.read()) == before
    assert _data_files(target) >= files_before  # nothing deleted yet
    if target.table_format == "delta":
        assert table.read(as_of=first).num_rows == 0  # the creation: still readable
    else:
        assert contents(table.read(as_of=first)) == contents(make_table(HK + US, [D1]))
    dry = table.maintain(retention=dt.timedelta(0), dry_run=True, compact=False)
    assert dry.dry_run and dry.files_deleted > 0 and _data_files(target) >= files_before
    done = table.maintain(retention=dt.timedelta(0), compact=False)
    assert done.files_deleted == dry.files_deleted > 0
    assert contents(table.read()) == before
    assert len(_data_files(target)) < len(files_before)
    assert table.maintain(retention=dt.timedelta(0)).files_deleted == 0  # nothing left to remove
    if target.table_format == "iceberg":
        assert done.versions_expired > 0 and len(table.versions()) == 1


def test_maintenance_repairs_duplicate_keys_written_by_others(target: TableTarget) -> None:
    table = target.open()
    table.upsert(make_table(HK + US, [D1, D2]))
    stale = make_table(HK[:1] + US[:1], [D1], version=4, at=T1)  # a second copy of two keys, newer
    from airflow_provider_shortint.lake.formats.base import with_market

    rows = with_market(stale)
    if target.table_format == "delta":
        from deltalake import write_deltalake

        write_deltalake(target.path, rows, mode="append")
    else:
        from pyiceberg.catalog.sql import SqlCatalog

        folder = target.options["warehouse"]
        catalog = SqlCatalog("shortint", uri=f"sqlite:///{folder}/catalog.db", warehouse=f"file://{folder}")
        catalog.load_table(target.path).append(rows)
    keys = keys_of(table.read())
    assert len(keys) - len(set(keys)) == 2
    assert table.maintain(dry_run=True).duplicates_removed == 2
    result = table.maintain(compact=False)
    assert result.duplicates_removed == 2
    after = table.read()
    assert len(keys_of(after)) == len(set(keys_of(after))) == 12
    newest = {(r["symbol"], r["trade_date"]): r["ingested_at"] for r in after.to_pylist()}
    assert newest[("HK.00700", D1)] == T1 and newest[("US.AAPL", D1)] == T1 and newest[("HK.00005", D1)] == T0


def test_maintenance_of_a_missing_table_does_nothing(target: TableTarget) -> None:
    result = target.open().maintain()
    assert (result.files_deleted, result.version) == (0, None)
    with pytest.raises(InvalidParameterError):
        target.open().maintain(retention=-dt.timedelta(hours=1))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Opening a table; names; extras
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "table_format", "options"),
    [
        ("/data/t", "parquet", {}),
        ("/data/t", "orc", {}),
        ("/data/t", None, {}),
        ("/data/t", "delta", {"warehouse": "/x"}),
        ("relative/t", "delta", {}),
        ("/data/../t", "delta", {}),
        ("gs://bucket/t", "delta", {}),
        ("", "delta", {}),
        ("short_interest", "iceberg", {}),
        ("a.b-c", "iceberg", {}),
        ("a..b", "iceberg", {}),
        (" a.b", "iceberg", {}),
        (42, "iceberg", {}),
        ("a.b", "iceberg", {"catalog_conn_id": "x", "warehouse": "/w"}),
        ("a.b", "iceberg", {"warehouse": "relative"}),
        ("a.b", "iceberg", {"warehouse": "s3://bucket/w"}),
        ("a.b", "iceberg", {"catalog_conn_id": ""}),
        ("a.b", "iceberg", {"catalog": "x"}),
    ],
)
def test_bad_names_and_options_are_one_clear_error(
    path: Any, table_format: Any, options: dict[str, Any]
) -> None:
    with pytest.raises(InvalidParameterError):
        open_table(path, table_format, **options)
    with pytest.raises(InvalidParameterError):
        table_asset_uri(path, table_format, **options)


def test_asset_uris_and_lineage_names(tmp_path: Path) -> None:
    delta = open_table(f"file://{tmp_path}/t/", "delta")
    assert delta.asset_uri() == f"file://{tmp_path}/t" == table_asset_uri(f"{tmp_path}/t", "delta")
    assert delta.lineage_dataset() == ("file", f"{tmp_path}/t")
    assert table_asset_uri("s3://aws_x@bucket/tables/si/", "delta") == "s3://bucket/tables/si"
    iceberg = open_table("shortint.short_interest", "iceberg", warehouse=str(tmp_path / "w"))
    assert iceberg.asset_uri() == f"iceberg:{tmp_path}/w/shortint.short_interest"
    assert iceberg.lineage_dataset() == (f"sqlite:///{tmp_path}/w/catalog.db", "shortint.short_interest")
    assert table_asset_uri("a.b.c", "iceberg") == "iceberg://iceberg_default/a.b.c"
    assert table_asset_uri("a.b", "iceberg", catalog_conn_id="lakehouse") == "iceberg://lakehouse/a.b"
    from airflow.sdk import Asset

    for uri in (delta.asset_uri(), iceberg.asset_uri(), "iceberg://lakehouse/a.b"):
        assert Asset(uri).uri == uri  # Airflow keeps them as given


def test_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "deltalake", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "pyiceberg", None)
    with pytest.raises(TableFormatNotInstalledError, match=r"airflow-provider-shortint\[delta\]"):
        open_table(str(tmp_path / "t"), "delta")
    with pytest.raises(TableFormatNotInstalledError, match=r"airflow-provider-shortint\[iceberg\]"):
        open_table("a.b", "iceberg", warehouse=str(tmp_path))
    assert table_asset_uri(str(tmp_path / "t"), "delta") == f"file://{tmp_path}/t"  # naming needs no extra


def test_importing_the_formats_imports_neither_library() -> None:
    code = (
        "import sys, airflow_provider_shortint.lake.formats as f; "
        "f.table_asset_uri('/data/t', 'delta'); f.table_asset_uri('a.b', 'iceberg'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('deltalake', 'pyiceberg', 'polars')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------
# The commit bound: another writer commits between this writer's read and its commit
# ------------------------------------------------------------------------------------------------


def _interleaved(table: Any, other: Any, times: int) -> list[float]:
    """After each of this table's next ``times`` reads of stored rows, ``other`` commits a change to the
    same keys (a real commit by a second writer); returns the waits the upsert asked for (not slept)."""
    original, waits, done = table._scan, [], []

    def scan_then_interfere(state: Any, columns: list[str], **filters: Any) -> Any:
        rows = original(state, columns, **filters)
        if filters.get("dates") is not None and len(done) < times:
            done.append(1)
            other.upsert(make_table(HK, [D1], version=100 + len(done), at=T1))
        return rows

    table._scan = scan_then_interfere
    table._sleep = waits.append
    return waits


def test_a_commit_beaten_by_another_writer_is_reread_and_retried(target: TableTarget) -> None:
    table, other = target.open(), target.open()
    table.upsert(make_table(HK, [D1]))
    waits = _interleaved(table, other, times=2)
    result = table.upsert(make_table(HK, [D1], version=7))
    assert (result.conflicts, result.rows_written) == (2, 3) and len(waits) == 2
    assert all(0 < wait <= 2.0 for wait in waits)
    stored = {r["symbol"]: r["close_price"] for r in table.read().to_pylist()}
    assert stored == {s: make_row(s, D1, 7)["close_price"] for s in HK}  # ours, committed on top of theirs
    assert len(keys_of(table.read())) == 3


def test_past_the_commit_bound_a_clear_error_and_nothing_half_written(target: TableTarget) -> None:
    from airflow_provider_shortint.exceptions import LakeConflictError

    table, other = target.open(), target.open()
    table.upsert(make_table(HK, [D1]))
    table.max_commit_attempts = 3
    waits = _interleaved(table, other, times=10)
    with pytest.raises(LakeConflictError, match="3 attempts"):
        table.upsert(make_table(HK, [D1], version=7))
    assert len(waits) == 2  # no wait after the last attempt
    stored = {r["symbol"]: r["close_price"] for r in table.read().to_pylist()}
    assert stored == {s: make_row(s, D1, 103)["close_price"] for s in HK}  # the other writer's last commit


def test_pyicebergs_blind_retry_is_switched_off_on_an_existing_table(tmp_path: Path) -> None:
    target = local_target("iceberg", tmp_path)
    table = target.open()
    table.upsert(make_table(HK, [D1]))
    from pyiceberg.catalog.sql import SqlCatalog

    folder = target.options["warehouse"]
    catalog = SqlCatalog("shortint", uri=f"sqlite:///{folder}/catalog.db", warehouse=f"file://{folder}")
    raw = catalog.load_table(target.path)
    with raw.transaction() as transaction:  # someone switches pyiceberg's retry back on
        transaction.set_properties({"commit.retry.num-retries": "4"})
    assert catalog.load_table(target.path).properties["commit.retry.num-retries"] == "4"
    target.open().upsert(make_table(HK, [D2]))
    assert catalog.load_table(target.path).properties["commit.retry.num-retries"] == "0"
