"""latest_dates(symbols) reads a bounded window of partitions, never the whole lake for an absent symbol.

A lake of 120 weekly HK partitions: a symbol the lake lacks costs at most the look-back window
(LOOKBACK_RECORDS cadences of the market), a symbol whose latest record is weeks old is still found,
and a symbol older than the window is reported absent, which is safe: re-upserting its history (what
the operator does for an absent symbol) changes nothing in the lake.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shortint.lake import ParquetLake, open_lake
from airflow_provider_shortint.lake.parquet_lake import LOOKBACK_RECORDS
from airflow_provider_shortint.markets import MARKETS
from airflow_provider_shortint.records import rows_to_table

NEWEST = dt.date(2026, 5, 15)
WEEKS = 120
DAYS = [NEWEST - dt.timedelta(weeks=k) for k in range(WEEKS)]  # newest first
OLD = DAYS[40]  # 40 weeks back: inside the window (53 weekly records)
ANCIENT = DAYS[100]  # 100 weeks back: outside it


def rows(symbol: str, days: list[dt.date]) -> list[dict[str, Any]]:
    return [{"symbol": symbol, "trade_date": day, "timestamp": 1, "close_price": 1.5} for day in days]


@pytest.fixture
def lake(tmp_path: Path) -> ParquetLake:
    lake = open_lake(str(tmp_path / "lake"))
    lake.upsert(
        rows_to_table(
            rows("HK.00700", DAYS)  # every week
            + rows("HK.00005", DAYS[40:])  # stopped 40 weeks ago
            + rows("HK.00011", DAYS[100:])  # stopped 100 weeks ago
            + rows("US.AAPL", [NEWEST])
        )
    )
    return lake


def count_files(lake: ParquetLake, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every data file latest_dates reads, appended as it is read."""
    read: list[str] = []
    original = ParquetLake._table

    def spy(self: ParquetLake, rel_files: list[str], columns: list[str], filter: Any = None) -> Any:
        read.extend(rel_files)
        return original(self, rel_files, columns, filter)

    monkeypatch.setattr(ParquetLake, "_table", spy)
    return read


def test_the_window_is_about_a_year_of_weekly_records() -> None:
    assert MARKETS["HK"].cadence_days * LOOKBACK_RECORDS == 371
    assert 40 < LOOKBACK_RECORDS < 100  # the fixture's OLD is inside the window, ANCIENT outside


def test_absent_symbol_reads_only_the_window(lake: ParquetLake, monkeypatch: pytest.MonkeyPatch) -> None:
    read = count_files(lake, monkeypatch)
    assert lake.latest_dates(["HK.00700", "HK.99999"]) == {"HK.00700": NEWEST}
    window = [day for day in DAYS if day >= NEWEST - dt.timedelta(days=7 * LOOKBACK_RECORDS)]
    assert len(read) == len(set(read)) == len(window) == LOOKBACK_RECORDS + 1
    assert all(rel.startswith("market=HK/") for rel in read)  # the US partition is not read
    assert len(read) < WEEKS  # before the fix: every HK partition


def test_present_symbols_stop_at_the_newest_partition(
    lake: ParquetLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = count_files(lake, monkeypatch)
    assert lake.latest_dates(["HK.00700", "US.AAPL"]) == {"HK.00700": NEWEST, "US.AAPL": NEWEST}
    assert sorted(read) == [
        "market=HK/dt=2026-05-15/part-0.parquet",
        "market=US/dt=2026-05-15/part-0.parquet",
    ]


def test_symbol_with_an_old_latest_date_is_found(lake: ParquetLake) -> None:
    assert lake.latest_dates(["HK.00005"]) == {"HK.00005": OLD}
    assert lake.latest_dates(["HK.00005", "HK.00700"]) == {"HK.00005": OLD, "HK.00700": NEWEST}
    assert lake.latest_dates()["HK.00011"] == ANCIENT  # a full listing still sees everything


def test_symbol_older_than_the_window_is_absent_and_refetching_it_is_harmless(lake: ParquetLake) -> None:
    assert lake.latest_dates(["HK.00011"]) == {}
    before = lake.read()
    result = lake.upsert(rows_to_table(rows("HK.00011", DAYS[100:])))  # its whole history, again
    assert result.rows_written == 0 and result.rows_unchanged == WEEKS - 100
    assert lake.read().equals(before)
