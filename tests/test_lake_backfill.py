"""A backfill as ``shortint_backfill`` runs it, with daily loads beside it, on a local and an S3 lake.

Task processes start at the same instant, as an executor's would: the backfill's two mapped chunks
(``mode="full"``, ``staging`` = the run id: they only stage) and the HK and US daily loads
(``mode="incremental"``: they commit once at their end). Then the backfill's commit runs while a daily
load writes the same year of HK. Afterwards the lake equals the union of what the sandbox serves, no key
twice, and every writer wrote each partition the stated number of times: the chunks none, the commit
each staged partition once, a daily load each partition it changed once.

A chunk killed (SIGKILL) right after staging its first batch and run again loses nothing and duplicates
nothing; a daily load killed the same way is resumed by its next attempt, which commits what the killed
one staged before asking the lake what is missing.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests._fixtures_pool import racing_pool, start_together

SINCE = "2025-11-14"  # the daily loads: half a year, partitions of 2025 and 2026 in both markets
CHUNK_SINCE = "2024-06-01"  # the backfill reaches further back: 2024 too, and the rest of 2025
RUN = "manual__2026-05-16T01:00:00+00:00"
CHUNKS = (["HK.00700", "HK.00005", "US.AAPL", "US.TSLA"], ["HK.09988", "HK.01299", "US.MSFT", "US.NVDA"])
DAILY = {
    "HK": ["HK.00700", "HK.00005", "HK.09988", "HK.01299"],
    "US": ["US.AAPL", "US.TSLA", "US.MSFT", "US.NVDA"],
}
ALL = sorted({symbol for symbols in DAILY.values() for symbol in symbols})


@dataclass
class TaskInstance:
    """What the operator reads off ``context["ti"]`` to name its staged files (as Airflow's has)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1


def _count_writes() -> list[str]:
    """Record every partition this process writes (the lake's own write, counted, then done)."""
    from airflow_provider_shortint.lake import ParquetLake

    writes: list[str] = []
    original = ParquetLake._write_partition

    def counted(self: ParquetLake, partition: Any, table: Any, expected: Any) -> None:
        original(self, partition, table, expected)
        writes.append(partition.name)

    ParquetLake._write_partition = counted  # type: ignore[method-assign]
    return writes


def load(env: dict[str, str], kwargs: dict[str, Any], ti: TaskInstance | None, racers: int) -> Any:
    """A task process running the operator, started with ``racers`` others; returns (summary,
    partitions it wrote)."""
    os.environ.update(env)
    from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator

    writes = _count_writes()
    operator = ShortInterestToParquetOperator(**kwargs)
    start_together(racers)
    summary = operator.execute(context={"ti": ti} if ti else {})  # type: ignore[arg-type]
    return summary, writes


def commit(env: dict[str, str], lake_path: str, racers: int) -> Any:
    """The backfill's commit task, started with ``racers`` others; returns (partitions written per its
    result, partitions it wrote)."""
    os.environ.update(env)
    from airflow_provider_shortint.lake import open_lake

    writes = _count_writes()
    lake = open_lake(lake_path)
    start_together(racers)
    return lake.commit_staged(RUN).partitions_written, writes


def chunk(symbols: list[str], index: int) -> tuple[dict[str, Any], TaskInstance]:
    kwargs = {
        "task_id": "load_full_history",
        "symbols": symbols,
        "mode": "full",
        "since": CHUNK_SINCE,
        "staging": RUN,
        "batch_size": 1,
    }
    return kwargs, TaskInstance("shortint_backfill", RUN, "load_full_history", index)


def daily(market: str) -> tuple[dict[str, Any], TaskInstance]:
    kwargs = {
        "task_id": f"{market.lower()}.load",
        "symbols": DAILY[market],
        "mode": "incremental",
        "since": SINCE,
    }
    return kwargs, TaskInstance("shortint_daily", f"scheduled__{market}", f"{market.lower()}.load")


@pytest.fixture(scope="module")
def pool() -> Iterator[Any]:
    """Four task processes forked from a forkserver that imported the operator once."""
    preload = [
        "pyarrow",
        "pyarrow.parquet",
        "airflow.providers.amazon.aws.hooks.s3",
        "airflow_provider_shortint.operators.short_interest",
        __name__,
    ]
    with racing_pool(preload, 4) as workers:
        yield workers


def lake_at(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if store == "local":
        return str(tmp_path / "lake")
    server = request.getfixturevalue("s3_server")
    return str(server.url(f"lakes/backfill/{request.node.name.replace('[', '_').replace(']', '')}"))


def expected_rows(sandbox: Any, symbols: list[str], since: str) -> dict[tuple[str, str], float]:
    return {
        (symbol, item["timestamp_str"]): item["close_price"]
        for symbol in symbols
        for item in sandbox.history(symbol)
        if item["timestamp_str"] > since
    }


def stored_rows(lake_path: str) -> dict[tuple[str, str], float]:
    from airflow_provider_shortint.lake import open_lake

    table = open_lake(lake_path).read(["symbol", "trade_date", "close_price"])
    keys = [
        (s, d.isoformat())
        for s, d in zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True)
    ]
    assert len(keys) == len(set(keys)), "duplicate (symbol, trade_date)"
    return dict(zip(keys, table.column(2).to_pylist(), strict=True))


@pytest.mark.parametrize("store", ["local", "s3"])
def test_parallel_chunks_and_daily_loads_leave_the_union(
    store: str, tmp_path: Path, request: pytest.FixtureRequest, sandbox: Any, use_conn: Any, pool: Any
) -> None:
    from airflow_provider_shortint.lake import open_lake

    use_conn(sandbox.url)
    lake_path = lake_at(store, tmp_path, request)
    env = {k: v for k, v in os.environ.items() if k.startswith(("AIRFLOW_CONN_", "AWS_"))}

    # 1. The backfill's chunks and both daily loads at once.
    runs = [
        ({**kwargs, "lake_path": lake_path}, ti)
        for kwargs, ti in (chunk(CHUNKS[0], 0), chunk(CHUNKS[1], 1), daily("HK"), daily("US"))
    ]
    outcomes = [
        job.get(timeout=300) for job in [pool.apply_async(load, (env, k, ti, len(runs))) for k, ti in runs]
    ]
    (chunk0, w0), (chunk1, w1), (hk, w_hk), (us, w_us) = outcomes
    assert w0 == w1 == [] and chunk0["rows_written"] == chunk1["rows_written"] == 0  # chunks only stage
    assert (
        chunk0["rows_staged"] == chunk0["rows_fetched"] > 0
        and chunk1["rows_staged"] == chunk1["rows_fetched"] > 0
    )
    for summary, writes in ((hk, w_hk), (us, w_us)):  # a daily load: each partition once, at its end
        assert not summary["failed"] and len(writes) == len(set(writes)) == summary["partitions_written"] > 0
    files = _staged_files(lake_path)
    assert len(files) == len(CHUNKS[0]) + len(CHUNKS[1])  # one file per staged batch (batch_size=1)
    staged = {name for rel in files for name in _staged_partitions(lake_path, rel)}
    assert staged == {f"market={m}/year={y}" for m in ("HK", "US") for y in (2024, 2025, 2026)}

    # 2. A new HK date, then the backfill's commit while the HK daily load writes it.
    new_day = sandbox.publish("HK")
    committing = pool.apply_async(commit, (env, lake_path, 2))
    kwargs, ti = daily("HK")
    hk_again = pool.apply_async(load, (env, {**kwargs, "lake_path": lake_path}, ti, 2))
    (committed, w_commit), (hk2, w_hk2) = committing.get(timeout=300), hk_again.get(timeout=300)
    # The commit writes each partition in which the chunks brought something new, once: 2024 and 2025
    # (the daily loads already hold the same rows of 2026, which stays as it is).
    assert (
        sorted(w_commit)
        == sorted(committed)
        == [f"market={m}/year={y}" for m in ("HK", "US") for y in (2024, 2025)]
    )
    assert w_hk2 == [f"market=HK/year={new_day.year}"] and hk2["rows_written"] == len(DAILY["HK"])

    # The union, nothing lost, nothing twice.
    assert stored_rows(lake_path) == expected_rows(sandbox, ALL, CHUNK_SINCE)
    assert open_lake(lake_path).staged_runs() == {}


def _staged_partitions(lake_path: str, rel: str) -> list[str]:
    """The partitions a staged file holds rows of, as its footer records them."""
    from airflow_provider_shortint.lake import arrow, open_lake

    data = open_lake(lake_path)._store.read(rel).data
    assert data is not None
    return [name for names in arrow.staged_row_groups(arrow.open_parquet(data, rel), rel) for name in names]


def _staged_files(lake_path: str) -> list[str]:
    from airflow_provider_shortint.lake import open_lake
    from airflow_provider_shortint.lake.layout import STAGING_DIR

    return open_lake(lake_path)._store.list_files(STAGING_DIR, hidden=True)


# ------------------------------------------------------------------------------------------------
# Killed mid-run, run again
# ------------------------------------------------------------------------------------------------


def stage_then_hang(env: dict[str, str], kwargs: dict[str, Any], ti: TaskInstance, conn: Any) -> None:
    """A task process that is killed right after its first staged batch (it says so, then waits)."""
    os.environ.update(env)
    from airflow_provider_shortint.lake import ParquetLake
    from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator

    original = ParquetLake.stage

    def staged_and_wait(self: ParquetLake, table: Any, run: str, name: str) -> Any:
        result = original(self, table, run, name)
        conn.send(result.rows)
        conn.recv()  # the test kills this process here
        return result

    ParquetLake.stage = staged_and_wait  # type: ignore[method-assign]
    ShortInterestToParquetOperator(**kwargs).execute(context={"ti": ti})  # type: ignore[arg-type]


def kill_after_first_stage(env: dict[str, str], kwargs: dict[str, Any], ti: TaskInstance) -> int:
    """Run a task process until it staged one batch, SIGKILL it; returns the rows it had staged."""
    ctx = multiprocessing.get_context("forkserver")
    ours, theirs = ctx.Pipe()
    process = ctx.Process(target=stage_then_hang, args=(env, kwargs, ti, theirs))
    process.start()
    try:
        assert ours.poll(120), "the task process staged nothing"
        rows = int(ours.recv())
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.join(30)
    assert process.exitcode == -signal.SIGKILL
    return rows


def test_a_killed_chunk_run_again_loses_and_duplicates_nothing(
    tmp_path: Path, sandbox: Any, use_conn: Any, pool: Any
) -> None:
    from airflow_provider_shortint.lake import open_lake
    from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator

    use_conn(sandbox.url)
    lake_path = str(tmp_path / "lake")
    env = {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CONN_")}
    kwargs, ti = chunk(CHUNKS[0], 0)
    kwargs = {**kwargs, "lake_path": lake_path}
    first = kill_after_first_stage(env, kwargs, ti)
    assert first > 0 and open_lake(lake_path).staged_runs()  # one batch staged, then the kill

    summary = ShortInterestToParquetOperator(**kwargs).execute(context={"ti": ti})  # type: ignore[arg-type]
    assert summary["rows_staged"] == summary["rows_fetched"]  # the retry stages everything again
    result = open_lake(lake_path).commit_staged(RUN)
    expected = expected_rows(sandbox, CHUNKS[0], CHUNK_SINCE)
    assert result.rows_written == len(expected)
    assert stored_rows(lake_path) == expected


def test_a_killed_daily_load_is_resumed_by_its_next_attempt(
    tmp_path: Path, sandbox: Any, use_conn: Any, pool: Any
) -> None:
    from airflow_provider_shortint.lake import open_lake
    from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator

    use_conn(sandbox.url)
    lake_path = str(tmp_path / "lake")
    env = {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CONN_")}
    kwargs, ti = daily("HK")
    kwargs = {**kwargs, "lake_path": lake_path, "batch_size": 1}
    first = kill_after_first_stage(env, kwargs, ti)
    lake = open_lake(lake_path)
    assert lake.read().num_rows == 0 and sum(lake.staged_runs().values()) >= 1  # staged, not committed

    sandbox.reset_stats()
    summary = ShortInterestToParquetOperator(**kwargs).execute(context={"ti": ti})  # type: ignore[arg-type]
    # The killed attempt's batch (the first symbol) is committed first: that symbol costs one request.
    assert sandbox.stats()["by_symbol"][DAILY["HK"][0]] == 1
    expected = expected_rows(sandbox, DAILY["HK"], SINCE)
    assert summary["rows_written"] == len(expected)
    assert summary["rows_fetched"] == summary["rows_written"] - first
    assert stored_rows(lake_path) == expected
    assert lake.staged_runs() == {}
