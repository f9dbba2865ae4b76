"""Fault soak: a full backfill through the operator while the sandbox misbehaves on >= 20 % of requests.

The sandbox injects ret_code -5, HTTP 500/502/503, HTTP 429 with ``Retry-After: 1``, answers held back
longer than the connection's timeout (0.4 s vs 0.2 s) and truncated bodies, from a fixed seed. The
lake written under faults must equal, row for row, the lake of a fault-free run of the same backfill.
Figures are printed (``pytest -s``) and quoted in docs/RELIABILITY.md.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator
from airflow_provider_shortint.records import COLUMNS
from airflow_provider_shortint.sandbox import SandboxServer
from airflow_provider_shortint.sandbox import data as sbdata

FAULTS: dict[str, float] = {
    "internal_error_rate": 0.07,
    "http5xx_rate": 0.07,
    "http429_rate": 0.04,
    "delay_rate": 0.05,
    "malformed_rate": 0.07,
}
SEED = 20260515
RETRY_AFTER = 0.05  # what an injected 429 asks for (the sandbox's default is 1 s)
HK_SYMBOLS = 60
US_SYMBOLS = 60


def soak_symbols() -> list[str]:
    """120 symbols with modest histories (HK <= 180 records, US <= 214): 1 to 3 pages of 90 each."""
    published = sbdata.DEFAULT_TODAY
    modest = (
        f"HK.{code:05d}"
        for code in range(1, 1000)
        if len(sbdata.history_view(f"HK.{code:05d}", published)) <= 180
    )
    hk = list(itertools.islice(modest, HK_SYMBOLS))
    us = [f"US.{a}{b}" for a in "ABCDEFGH" for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"][:US_SYMBOLS]
    return hk + us


def outlet_context() -> dict[str, Any]:
    """The part of an Airflow context the operator reads: asset events it can annotate."""
    from airflow.sdk.execution_time.context import OutletEventAccessors

    return {"outlet_events": OutletEventAccessors()}


def backfill(conn_id: str, symbols: list[str], lake: Path) -> tuple[dict[str, Any], float, dict[str, Any]]:
    """Run the operator's ``execute`` in mode "full"; returns its summary, elapsed seconds and context."""
    op = ShortInterestToParquetOperator(
        task_id="soak",
        symbols=symbols,
        lake_path=str(lake),
        mode="full",
        shortint_conn_id=conn_id,
        batch_size=len(symbols),
    )
    context = outlet_context()
    started = time.monotonic()
    summary = op.execute(context)  # type: ignore[arg-type]
    return summary, time.monotonic() - started, context


def lake_query(lake: Path) -> str:
    columns = ", ".join([c for c in COLUMNS if c != "ingested_at"] + ["market", "year"])
    return f"select {columns} from read_parquet('{lake}/**/*.parquet', hive_partitioning=true)"


def test_backfill_under_faults_equals_fault_free_run(
    sandbox: SandboxServer, use_conn: Callable[..., str], tmp_path: Path
) -> None:
    symbols = soak_symbols()
    histories = {symbol: sandbox.history(symbol) for symbol in symbols}
    pages = sum(math.ceil(len(h) / 90) for h in histories.values())
    rows = sum(len(h) for h in histories.values())
    assert len(symbols) >= 100 and sum(len(h) > 90 for h in histories.values()) >= 30

    # Reference: the same backfill without faults (generous timeout, so the reference needs no retry).
    clean_conn = use_conn(sandbox.url, conn_id="soak_clean", timeout=10, max_retries=0)
    clean, clean_elapsed, _ = backfill(clean_conn, symbols, tmp_path / "clean")
    assert clean["requests"] == pages == sandbox.stats()["requests"]
    assert clean["rows_written"] == rows and clean["failed"] == {}

    # Under faults: tiny backoff, many retries, a timeout shorter than the injected delay.
    faulty_conn = use_conn(
        sandbox.url, conn_id="soak_faulty", timeout=0.2, max_retries=10, backoff_base=0.001
    )
    sandbox.configure(seed=SEED, delay_seconds=0.4, fault_retry_after=RETRY_AFTER, **FAULTS)
    sandbox.reset_stats()
    faulty, elapsed, context = backfill(faulty_conn, symbols, tmp_path / "faulty")
    stats = sandbox.stats()
    sandbox.configure(**{name: 0.0 for name in FAULTS})

    faults = stats["faults"]
    requests = stats["requests"]
    retries = requests - pages
    print(
        f"\nfault soak: {len(symbols)} symbols, {rows} rows, {pages} pages; "
        f"{requests} requests, {retries} retries ({retries / requests:.0%} of requests failed); "
        f"faults {faults}; statuses {stats['by_status']}; "
        f"elapsed {elapsed:.1f} s (fault-free run {clean_elapsed:.1f} s)"
    )
    assert faulty["requests"] == requests  # every attempt went through the hook's counter
    assert all(count > 0 for count in faults.values()), faults
    assert retries >= 0.2 * requests, "the soak must fail at least 20 % of the requests"
    # 429s carry the wait they ask for (X-Retry-After-Ms) and the hook honours it.
    assert elapsed >= faults["http429"] * RETRY_AFTER
    # Every request was answered with a counted status: the sandbox itself never failed.
    assert sum(stats["by_status"].values()) == requests

    # Same summary, same lake, row for row (everything but ingested_at), same files.
    for key in ("rows_fetched", "rows_written", "partitions_written", "latest_trade_date", "failed"):
        assert faulty[key] == clean[key], key
    a, b = lake_query(tmp_path / "clean"), lake_query(tmp_path / "faulty")
    db = duckdb.connect()
    assert db.execute(f"select count(*) from ({b})").fetchone() == (rows,)
    assert db.execute(f"({a}) except all ({b})").fetchall() == []
    assert db.execute(f"({b}) except all ({a})").fetchall() == []
    files = {str(p.relative_to(tmp_path / "clean")) for p in (tmp_path / "clean").rglob("*.parquet")}
    assert files == {
        str(p.relative_to(tmp_path / "faulty")) for p in (tmp_path / "faulty").rglob("*.parquet")
    }
    assert {event.extra["rows_written"] for event in context["outlet_events"].values()} == {
        faulty["rows_written_by_market"]["HK"],
        faulty["rows_written_by_market"]["US"],
    }


@pytest.mark.parametrize("end_marker", ["empty", "absent"])
def test_short_soak_with_other_end_markers(
    sandbox: SandboxServer, use_conn: Callable[..., str], tmp_path: Path, end_marker: str
) -> None:
    """The last-page marker variants ("" and no key) under faults: nothing lost, no extra page asked."""
    symbols = soak_symbols()[::10]
    expected = {symbol: sandbox.history(symbol) for symbol in symbols}
    conn = use_conn(sandbox.url, conn_id="soak_marker", timeout=0.2, max_retries=10, backoff_base=0.001)
    sandbox.configure(
        end_marker=end_marker, seed=SEED + 1, delay_seconds=0.4, **{**FAULTS, "http429_rate": 0}
    )
    summary, _, _ = backfill(conn, symbols, tmp_path / "lake")
    assert summary["rows_written"] == sum(len(h) for h in expected.values())
    got = duckdb.connect().execute(
        f"select symbol, count(*) from ({lake_query(tmp_path / 'lake')}) group by 1"
    )
    assert dict(got.fetchall()) == {symbol: len(h) for symbol, h in expected.items()}
