"""The operator's documented concurrent pattern on one s3:// lake: a mapped backfill beside two daily loads.

Four operator runs start at the same instant in four processes (as four task processes of an
executor would): the backfill's two mapped chunks (``mode="full"``) and the HK and US daily loads
(``mode="incremental"``), all over the same trading dates, committing symbol by symbol. Afterwards
the lake must equal the union of what the sandbox serves for every symbol: no row lost, none twice.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

ROUNDS = 3
SINCE = "2025-11-14"  # half a year of history: enough overlapping partitions, a bounded test time
CHUNKS = (["HK.00700", "HK.00005", "US.AAPL", "US.TSLA"], ["HK.09988", "HK.01299", "US.MSFT", "US.NVDA"])
DAILY = {
    "HK": ["HK.00700", "HK.00005", "HK.09988", "HK.01299"],
    "US": ["US.AAPL", "US.TSLA", "US.MSFT", "US.NVDA"],
}


def run_operator(
    env: dict[str, str], task_id: str, symbols: list[str], lake_path: str, mode: str, start_at: float
) -> Any:
    """What a task process does: the operator's execute, committing after every symbol.

    Returns (summary, compare-and-swap conflicts its upserts retried); the count is read off the
    lake's results, the behaviour is untouched.
    """
    os.environ.update(env)
    from airflow_provider_shortint.lake import ParquetLake
    from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator

    conflicts = [0]
    upsert = ParquetLake.upsert

    def counted(self: ParquetLake, table: Any) -> Any:
        result = upsert(self, table)
        conflicts[0] += result.conflicts
        return result

    ParquetLake.upsert = counted  # type: ignore[method-assign]

    operator = ShortInterestToParquetOperator(
        task_id=task_id, symbols=symbols, lake_path=lake_path, mode=mode, since=SINCE, batch_size=1
    )
    while time.time() < start_at:
        time.sleep(0.002)
    try:
        return operator.execute(context={}), conflicts[0]  # type: ignore[arg-type]
    finally:
        ParquetLake.upsert = upsert  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def task_processes() -> Iterator[Any]:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["pyarrow", "s3fs", "airflow_provider_shortint.operators.short_interest", __name__]
    )
    with ctx.Pool(4) as pool:
        pool.map(time.sleep, [0.0] * 4)
        yield pool


def test_backfill_and_daily_loads_at_once_lose_nothing(
    s3_server: Any, s3_prefix: str, sandbox: Any, use_conn: Any, task_processes: Any
) -> None:
    from airflow_provider_shortint.lake import open_lake

    use_conn(sandbox.url)
    env = {k: v for k, v in os.environ.items() if k.startswith(("AIRFLOW_CONN_", "AWS_"))}
    expected = {
        (symbol, item["timestamp_str"]): item["close_price"]
        for symbols in DAILY.values()
        for symbol in symbols
        for item in sandbox.history(symbol)
        if item["timestamp_str"] > SINCE
    }
    conflicts: list[int] = []
    for round_ in range(ROUNDS):
        lake_path = s3_server.url(f"{s3_prefix}/round-{round_}")
        start_at = time.time() + 0.5
        runs = [("backfill_0", CHUNKS[0], "full"), ("backfill_1", CHUNKS[1], "full")]
        runs += [(f"daily_{market.lower()}", symbols, "incremental") for market, symbols in DAILY.items()]
        jobs = [
            task_processes.apply_async(run_operator, (env, t, s, lake_path, m, start_at)) for t, s, m in runs
        ]
        outcomes = [job.get(timeout=300) for job in jobs]
        summaries = [summary for summary, _ in outcomes]
        conflicts.append(sum(count for _, count in outcomes))
        assert all(not summary["failed"] for summary in summaries), summaries

        table = open_lake(lake_path).read(["symbol", "trade_date", "close_price"])
        keys = [
            (s, d.isoformat())
            for s, d in zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True)
        ]
        assert len(keys) == len(set(keys)), f"round {round_}: duplicate (symbol, trade_date)"
        stored = dict(zip(keys, table.column(2).to_pylist(), strict=True))
        missing = sorted(set(expected) - set(stored))
        assert not missing, f"round {round_}: {len(missing)} row(s) lost, e.g. {missing[:3]}"
        assert stored == expected, f"round {round_}: the lake differs from the union of the loads"
        written = sum(summary["rows_written"] for summary in summaries)
        assert written >= len(expected)  # every row was written by at least one run
    print(
        f"{ROUNDS} rounds x 4 operator processes: lake == union ({len(expected)} rows) every round; "
        f"compare-and-swap conflicts retried per round: {conflicts}"
    )
