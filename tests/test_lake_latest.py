"""latest_dates(symbols) reads a bounded window of partitions, never the whole lake for an absent symbol.

A lake of 120 weekly HK records (2024-02 to 2026-05: three yearly files): up-to-date symbols cost the
newest file of their market, and in it only the row groups that can hold them; a symbol the lake lacks
costs at most the look-back window (LOOKBACK_RECORDS cadences of the market, counted from its newest
trade date: the 2026 and 2025 files); a symbol whose latest record is weeks old is still found, and a
symbol older than the window is reported absent, which is safe: re-upserting its history (what the
operator does for an absent symbol) changes nothing in the lake.
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
    """Every data file latest_dates opens, appended as it is opened."""
    read: list[str] = []
    original = ParquetLake._with_file

    def spy(self: ParquetLake, rel: str, use: Any) -> Any:
        read.append(rel)
        return original(self, rel, use)

    monkeypatch.setattr(ParquetLake, "_with_file", spy)
    return read


def test_the_window_is_about_a_year_of_weekly_records() -> None:
    assert MARKETS["HK"].cadence_days * LOOKBACK_RECORDS == 371
    assert 40 < LOOKBACK_RECORDS < 100  # the fixture's OLD is inside the window, ANCIENT outside


def test_absent_symbol_reads_only_the_window(lake: ParquetLake, monkeypatch: pytest.MonkeyPatch) -> None:
    read = count_files(lake, monkeypatch)
    assert lake.latest_dates(["HK.00700", "HK.99999"]) == {"HK.00700": NEWEST}
    # The window reaches back to 2025-05-09: the 2026 and 2025 files, not 2024's.
    assert read == ["market=HK/year=2026/part-0.parquet", "market=HK/year=2025/part-0.parquet"]


def test_present_symbols_stop_at_the_newest_partition(
    lake: ParquetLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = count_files(lake, monkeypatch)
    assert lake.latest_dates(["HK.00700", "US.AAPL"]) == {"HK.00700": NEWEST, "US.AAPL": NEWEST}
    assert sorted(read) == ["market=HK/year=2026/part-0.parquet", "market=US/year=2026/part-0.parquet"]


def test_one_symbol_reads_one_row_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sensor's question (one symbol) reads the newest file's footer and one row group of it."""
    import pyarrow.parquet as pq

    from airflow_provider_shortint.lake import arrow

    monkeypatch.setattr(arrow, "ROW_GROUP_ROWS", 10)
    lake = open_lake(str(tmp_path / "lake"))
    symbols = [f"HK.{i:05d}" for i in range(1, 51)]
    lake.upsert(rows_to_table([row for s in symbols for row in rows(s, DAYS[:2])]))  # 100 rows: 10 groups
    groups: list[int] = []
    original = pq.ParquetFile.read_row_groups

    def spy(self: Any, row_groups: list[int], *args: Any, **kwargs: Any) -> Any:
        groups.extend(row_groups)
        return original(self, row_groups, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy)
    assert lake.latest_dates(["HK.00017"]) == {"HK.00017": NEWEST}
    assert len(groups) == 1
    groups.clear()
    assert len(lake.latest_dates(symbols)) == 50
    assert sorted(groups) == list(range(10))


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
