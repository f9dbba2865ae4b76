"""Concurrent writers on one s3:// lake lose nothing (DESIGN.md §10): 4 processes x overlapping partitions.

Each trial releases four writer processes together (a barrier) on a fresh prefix; each runs a few upserts
of its own rows (symbols only it writes) plus shared rows every writer rewrites, over the same six
partitions. After every trial: every upsert's own rows are present with their values, no
(symbol, trade_date) twice, every shared row is one version that was written (never a mix), every file
complete. The compare-and-swap conflicts the writers hit and retried are counted: they must happen.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests._fixtures_pool import BARRIER_TIMEOUT, racing_pool, start_together

TRIALS = 6  # each trial races 12 upserts; every trial so far had 2 to 14 conflicts
WRITERS = 4
ROUNDS = 3
DAYS = (dt.date(2024, 5, 13), dt.date(2025, 5, 14), dt.date(2026, 5, 15))  # x 2 markets = 6 partitions
SHARED = ("HK.00700", "US.AAPL")


def make_row(symbol: str, day: dt.date, version: int) -> dict[str, Any]:
    row: dict[str, Any] = {"symbol": symbol, "trade_date": day, "timestamp": day.toordinal()}
    row["close_price"] = float(version)
    row["shares_short" if symbol.startswith("US.") else "aggregated_short"] = version
    return row


def own_symbols(writer: int, rnd: int) -> list[str]:
    return [f"HK.{writer + 1}{rnd:04d}", f"US.W{writer}R{rnd}"]


def writer(env: dict[str, str], lake_path: str, worker: int) -> list[int]:
    """ROUNDS upserts of this worker's own rows + the shared rows, started when every writer is ready;
    returns each upsert's conflicts."""
    os.environ.update(env)
    from airflow_provider_shortint.lake import open_lake
    from airflow_provider_shortint.records import rows_to_table

    lake = open_lake(lake_path)
    start_together(WRITERS)
    conflicts = []
    for rnd in range(ROUNDS):
        version = worker * 100 + rnd
        rows = [make_row(s, d, version) for s in own_symbols(worker, rnd) for d in DAYS]
        rows += [make_row(s, d, version) for s in SHARED for d in DAYS]
        result = lake.upsert(rows_to_table(rows))
        assert result.rows_written == len(rows), result  # every row of this upsert is new or changed
        conflicts.append(result.conflicts)
    return conflicts


@pytest.fixture(scope="module")
def pool() -> Iterator[Any]:
    """WRITERS processes forked from a forkserver that imported the lake once (Airflow imports slowly)."""
    preload = ["pyarrow", "pyarrow.parquet", "s3fs", "airflow_provider_shortint.lake", __name__]
    with racing_pool(preload, WRITERS) as workers:
        yield workers


def test_concurrent_writers_on_s3_lose_nothing(s3_server: Any, s3_prefix: str, pool: Any) -> None:
    from airflow_provider_shortint.lake import open_lake

    started = time.monotonic()
    per_trial: list[int] = []
    for trial in range(TRIALS):
        url = s3_server.url(f"{s3_prefix}/trial-{trial}")
        jobs = [pool.apply_async(writer, (s3_server.env, url, w)) for w in range(WRITERS)]
        conflicts = [job.get(timeout=BARRIER_TIMEOUT * 2) for job in jobs]
        per_trial.append(sum(map(sum, conflicts)))

        table = open_lake(url).read()  # every file is read whole and must conform to the lake schema
        keys = list(
            zip(table.column("symbol").to_pylist(), table.column("trade_date").to_pylist(), strict=True)
        )
        assert len(keys) == len(set(keys)), f"trial {trial}: duplicate (symbol, trade_date)"
        by_key = {(r["symbol"], r["trade_date"]): r for r in table.to_pylist()}
        expected_keys = {(s, d) for s in SHARED for d in DAYS}
        for w in range(WRITERS):
            for rnd in range(ROUNDS):
                for symbol in own_symbols(w, rnd):
                    for day in DAYS:
                        expected_keys.add((symbol, day))
                        row = by_key.get((symbol, day))
                        assert row is not None, (
                            f"trial {trial}: lost {symbol} {day} of writer {w} round {rnd}"
                        )
                        assert row["close_price"] == w * 100 + rnd
        assert set(by_key) == expected_keys, f"trial {trial}: unexpected rows"
        versions = {w * 100 + rnd for w in range(WRITERS) for rnd in range(ROUNDS)}
        for symbol in SHARED:
            for day in DAYS:
                row = by_key[(symbol, day)]
                assert row["close_price"] in versions
                assert row == {**row, **make_row(symbol, day, int(row["close_price"]))}, "a mixed row"
    total = sum(per_trial)
    upserts = TRIALS * WRITERS * ROUNDS
    print(
        f"{TRIALS} trials x {WRITERS} writers x {ROUNDS} upserts ({upserts} upserts, 6 shared partitions): "
        f"{total} compare-and-swap conflicts retried (per trial {per_trial}); 0 rows lost, 0 duplicates; "
        f"{time.monotonic() - started:.1f} s"
    )
    assert total > 0, "no write conflict happened: the writers did not overlap"
