"""What the lake refuses, and its pure Arrow rules tested without any store.

Bad ``lake_path`` values fail at ``open_lake`` (before the operator spends a request); rows the lake must
not store (non-canonical symbols, symbols of no registered market, dates Python cannot represent) fail
before a file is touched; a failed write names the lake and the partitions written and not written.
No path of the lake files a row under a market its symbol does not name (there is no default market).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import os
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shortint.exceptions import InvalidParameterError
from airflow_provider_shortint.lake import LakeSchemaError, LakeWriteError, arrow, open_lake
from airflow_provider_shortint.records import rows_to_table

D1 = dt.date(2025, 12, 31)
D2, D3 = dt.date(2026, 5, 14), dt.date(2026, 5, 15)
T0 = dt.datetime(2026, 5, 16, tzinfo=dt.UTC)


def table(symbols: list[str], days: list[dt.date] = [D3], price: float = 1.0) -> Any:  # noqa: B006
    rows = [
        {"symbol": s, "trade_date": d, "timestamp": 1, "close_price": price} for d in days for s in symbols
    ]
    return rows_to_table(rows, ingested_at=T0)


# ------------------------------------------------------------------------------------------------
# lake_path
# ------------------------------------------------------------------------------------------------


def test_path_that_is_a_file_rejected(tmp_path: Path) -> None:
    existing = tmp_path / "lake.parquet"
    existing.write_bytes(b"not a folder")
    with pytest.raises(InvalidParameterError, match="is an existing file"):
        open_lake(existing)
    with pytest.raises(InvalidParameterError, match="lies under"):
        open_lake(existing / "sub")
    with pytest.raises(InvalidParameterError, match="is an existing file"):
        open_lake(f"file://{existing}")
    assert existing.read_bytes() == b"not a folder"


def test_operator_rejects_bad_lake_path_before_any_request(
    tmp_path: Path, sandbox: Any, use_conn: Any
) -> None:
    from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator

    use_conn(sandbox.url)
    existing = tmp_path / "file"
    existing.write_text("x")
    for lake_path in (str(existing), f"{tmp_path}/lake\n", f"{tmp_path}/a/../lake", "s3://c@bucket/../other"):
        with pytest.raises(InvalidParameterError, match="lake_path"):  # at DAG parse time, or at run time
            operator = ShortInterestToParquetOperator(task_id="t", symbols=["HK.00700"], lake_path=lake_path)
            operator.execute(context={})  # type: ignore[arg-type]
    assert sandbox.stats()["requests"] == 0


# ------------------------------------------------------------------------------------------------
# Rows the lake refuses
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "shown"),
    [
        ("HK.7", "canonical 'HK.00007'"),
        ("HK.00700/../../x", "'HK.00700/../../x'"),
        ("hk.00700", "canonical 'HK.00700'"),
        (" HK.00700", "canonical 'HK.00700'"),
        ("US.aapl", "canonical 'US.AAPL'"),
        ("SH.600000", "'SH.600000'"),
        ("700", "'700'"),
    ],
)
def test_non_canonical_symbols_rejected(tmp_path: Path, symbol: str, shown: str) -> None:
    lake = open_lake(tmp_path / "lake")
    with pytest.raises(LakeSchemaError, match="not in canonical form") as info:
        lake.upsert(table(["HK.00005", symbol]))
    assert shown in str(info.value)
    assert not (tmp_path / "lake").exists()


def test_dates_beyond_year_9999_rejected(tmp_path: Path) -> None:
    import pyarrow as pa

    rows = table(["HK.00700", "HK.00005"])
    days = pa.array([(dt.date(9999, 12, 31) - dt.date(1970, 1, 1)).days + 1, 1000], pa.int32())
    far = rows.set_column(1, rows.schema.field("trade_date"), days.cast(pa.date32()))
    lake = open_lake(tmp_path / "lake")
    with pytest.raises(LakeSchemaError, match="trade_date must lie between 0001-01-01 and 9999-12-31"):
        lake.upsert(far)
    assert not (tmp_path / "lake").exists()


def test_disk_full_names_lake_and_partitions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = open_lake(tmp_path / "lake")
    lake.upsert(table(["HK.00700"], [D1, D3]))
    before = {p: p.read_bytes() for p in (tmp_path / "lake").rglob("*.parquet")}
    real_fsync = os.fsync
    calls: list[int] = []

    def full_disk(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 3:  # the second partition's file (file, folder, then the next file)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(LakeWriteError) as info:
        lake.upsert(table(["HK.00700"], [D1, D3], price=2.0))
    monkeypatch.undo()
    err = info.value
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert str(err) == (
        f"lake {tmp_path / 'lake'}: writing partition market=HK/year=2026 failed: "
        "[Errno 28] No space left on device"
    )
    notes = " ".join(err.__notes__)
    assert "already replaced (each atomically): ['market=HK/year=2025']" in notes
    assert "not written: ['market=HK/year=2026']" in notes
    new = tmp_path / "lake/market=HK/year=2026/part-0.parquet"
    assert new.read_bytes() == before[new]  # the failed partition kept its old file
    assert not [p for p in new.parent.iterdir() if p.name != "part-0.parquet"]  # no temp left


# ------------------------------------------------------------------------------------------------
# Markets: never a default
# ------------------------------------------------------------------------------------------------


def test_market_of_rows_comes_from_the_registry_only() -> None:
    import pyarrow as pa

    assert arrow.market_column(pa.array(["HK.00700", "US.AAPL", "US.BRK.B"])).to_pylist() == [
        "HK",
        "US",
        "US",
    ]
    for foreign in (["SH.600000"], ["US.AAPL", "JP.7203"], ["AAPL"], ["USX.AAPL"], ["hk.00700"]):
        with pytest.raises(LakeSchemaError, match="no registered market"):
            arrow.market_column(pa.array(foreign))
        with pytest.raises(LakeSchemaError, match="no registered market"):
            arrow.split_partitions(table(foreign))
        with pytest.raises(LakeSchemaError, match="no registered market"):
            arrow.latest_per_market(table(foreign))


def test_no_path_files_a_non_hk_row_as_us(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a third market registered, its rows get their own partitions: nothing maps "not HK" to US."""
    from airflow_provider_shortint import markets

    sg = dataclasses.replace(markets.US, code="SG")
    monkeypatch.setitem(markets.MARKETS, "SG", sg)
    lake = open_lake(tmp_path / "lake")
    result = lake.upsert(table(["HK.00700", "SG.D05", "US.AAPL"], [D1, D3]))
    assert result.partitions_written == tuple(
        f"market={m}/year={y}" for m in ("HK", "SG", "US") for y in (2025, 2026)
    )
    assert result.latest_trade_date == {"HK": "2026-05-15", "SG": "2026-05-15", "US": "2026-05-15"}
    stored = lake.read(["symbol", "market"]).to_pylist()
    assert {(r["symbol"], r["market"]) for r in stored} == {
        ("HK.00700", "HK"),
        ("SG.D05", "SG"),
        ("US.AAPL", "US"),
    }
    assert lake.latest_dates(["SG.D05"]) == {"SG.D05": D3}
    assert lake.partition_path("SG", D3).endswith("market=SG/year=2026/part-0.parquet")
    monkeypatch.undo()
    with pytest.raises(LakeSchemaError):
        lake.upsert(table(["SG.D05"]))  # unregistered again: refused, not filed as US


# ------------------------------------------------------------------------------------------------
# Pure Arrow rules (no store)
# ------------------------------------------------------------------------------------------------


def test_merge_rules_without_a_store() -> None:
    incoming = table(["HK.00700", "HK.00005"])
    merged, written, unchanged = arrow.merge(None, incoming)
    assert merged is not None and merged.column("symbol").to_pylist() == ["HK.00005", "HK.00700"]
    assert (written, unchanged) == (2, 0)
    assert arrow.merge(merged, incoming) == (None, 0, 2)  # identical: nothing to write
    changed = table(["HK.00700", "HK.09988"], price=5.0)
    result, written, unchanged = arrow.merge(merged, changed)
    assert result is not None and (written, unchanged) == (2, 0)
    prices = dict(
        zip(result.column("symbol").to_pylist(), result.column("close_price").to_pylist(), strict=True)
    )
    assert prices == {"HK.00005": 1.0, "HK.00700": 5.0, "HK.09988": 5.0}


def test_split_dedupes_last_wins_and_groups_by_market_and_year() -> None:
    import pyarrow as pa

    first, second = table(["US.AAPL", "HK.00700"], [D1, D2, D3]), table(["HK.00700"], [D3], price=9.0)
    parts = arrow.split_partitions(pa.concat_tables([first, second]))
    assert [(p.market, p.year) for p, _ in parts] == [("HK", 2025), ("HK", 2026), ("US", 2025), ("US", 2026)]
    hk_2026 = parts[1][1]
    prices = dict(
        zip(hk_2026.column("trade_date").to_pylist(), hk_2026.column("close_price").to_pylist(), strict=True)
    )
    assert prices == {D2: 1.0, D3: 9.0}


def test_merge_joins_and_compares_whole_columns() -> None:
    """A merge of a year of history with changed, identical, new rows and rows on other dates."""
    import pyarrow as pa

    stored, _, _ = arrow.merge(None, table([f"HK.{i:05d}" for i in range(1, 200)], [D2, D3]))
    assert stored is not None
    incoming = pa.concat_tables(
        [
            table(["HK.00005"], [D3], price=5.0),  # changed
            table(["HK.00006"], [D3]),  # identical
            table(["HK.00700"], [D3]),  # new symbol
            table(["HK.00007"], [dt.date(2026, 5, 18)]),  # new date of a stored symbol
        ]
    )
    merged, written, unchanged = arrow.merge(stored, incoming)
    assert merged is not None and (written, unchanged) == (3, 1)
    assert merged.num_rows == stored.num_rows + 2
    keys = list(
        zip(merged.column("symbol").to_pylist(), merged.column("trade_date").to_pylist(), strict=True)
    )
    assert keys == sorted(set(keys))
    prices = {key: price for key, price in zip(keys, merged.column("close_price").to_pylist(), strict=True)}
    assert prices[("HK.00005", D3)] == 5.0 and prices[("HK.00005", D2)] == 1.0
    assert arrow.merge(merged, incoming) == (None, 0, 4)  # all identical now: nothing to write


def test_parquet_bytes_are_deterministic_and_checked() -> None:
    import pyarrow as pa

    rows = table(["HK.00700", "HK.00005"], [D2, D3])
    data = arrow.to_parquet(rows)
    assert data == arrow.to_parquet(rows.take([3, 1, 0, 2]))  # any input order
    assert data == arrow.to_parquet(pa.concat_tables([rows.slice(2), rows.slice(0, 2)]))  # any chunking
    assert arrow.from_parquet(data, "x").equals(arrow.sorted_rows(rows))
    with pytest.raises(LakeSchemaError, match="stored file y is not readable Parquet"):
        arrow.from_parquet(b"PAR1 broken", "stored file y")
