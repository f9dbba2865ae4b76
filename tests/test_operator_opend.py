"""ShortInterestToParquetOperator over a ``futu_opend`` connection under real Airflow (``dag.test()``),
the real futu-api client and the sandbox's OpenD door."""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from airflow_provider_shortint.records import lake_schema
from airflow_provider_shortint.sandbox import SandboxServer
from tests._fixtures_opend_hook import opend_conn
from tests._helpers import DAG_SOURCE
from tests.conftest import AirflowHome

SYMBOLS = ["HK.00700", "US.AAPL", "hk.5", "US.MSFT"]
CANONICAL = ["HK.00700", "US.AAPL", "HK.00005", "US.MSFT"]


@pytest.fixture(scope="module")
def home(airflow_home: AirflowHome) -> AirflowHome:
    airflow_home.add_dag(DAG_SOURCE.replace("op_test_", "opend_op_"), "opend_op_dags.py")
    return airflow_home


def run(home: AirflowHome, sb: SandboxServer, tmp_path: Path, mode: str, **conf: Any) -> dict[str, Any]:
    """One operator DAG run whose ``shortint_default`` connection is a ``futu_opend`` one."""
    extra = conf.pop("extra", {})
    out = tmp_path / f"summary-{mode}.json"
    out.unlink(missing_ok=True)
    env = {"AIRFLOW_CONN_SHORTINT_DEFAULT": opend_conn(sb.opend_port, **extra)}
    result = home.dags_test(f"opend_op_{mode}", conf={"out": str(out), **conf}, env=env)
    summary = json.loads(out.read_text()) if out.exists() else None
    return {"code": result.returncode, "output": result.stdout + result.stderr, "summary": summary}


def task_state(home: AirflowHome, dag_id: str, task_id: str) -> str | None:
    """The state of ``task_id`` in the newest run of ``dag_id``, read from the home's metadata DB."""
    with closing(sqlite3.connect(home.root / "airflow.db")) as db:
        row = db.execute(
            "select ti.state from task_instance ti join dag_run dr"
            " on ti.dag_id = dr.dag_id and ti.run_id = dr.run_id"
            " where ti.dag_id = ? and ti.task_id = ? order by dr.id desc limit 1",
            (dag_id, task_id),
        ).fetchone()
    return None if row is None else str(row[0])


def snapshot(lake: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(lake)): (p.read_bytes(), p.stat().st_mtime_ns) for p in lake.rglob("*.parquet")}


def lake_rows(lake: Path) -> list[tuple[Any, ...]]:
    """Every stored row (partition columns included, ``ingested_at`` left out), in key order."""
    columns = ", ".join(name for name in lake_schema().names if name != "ingested_at")
    return (
        duckdb.connect()
        .execute(
            f"select market, year, {columns} "
            f"from read_parquet('{lake}/**/*.parquet', hive_partitioning=true) order by symbol, trade_date"
        )
        .fetchall()
    )


def year_files(histories: dict[str, list[dict[str, Any]]]) -> set[str]:
    """The lake's files for these histories: one per market and calendar year."""
    return {
        f"market={symbol[:2]}/year={item['timestamp_str'][:4]}/part-0.parquet"
        for symbol, history in histories.items()
        for item in history
    }


@pytest.mark.timeout(1500)
def test_full_rerun_and_incremental_over_opend(
    home: AirflowHome, opend_sandbox: SandboxServer, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    histories = {symbol: opend_sandbox.history(symbol) for symbol in CANONICAL}

    first = run(home, opend_sandbox, tmp_path, "full", symbols=",".join(SYMBOLS), lake=str(lake))
    assert first["code"] == 0, first["output"][-3000:]
    summary = first["summary"]
    assert summary["requests"] == sum(math.ceil(len(h) / 50) for h in histories.values())  # pages of 50
    assert opend_sandbox.stats()["by_transport"] == {"rest": 0, "opend": summary["requests"]}
    assert summary["rows_written"] == sum(len(h) for h in histories.values()) and summary["failed"] == {}
    files = sorted(lake.rglob("*.parquet"))
    assert {str(p.relative_to(lake)) for p in files} == year_files(histories)
    for path in files:
        table = pq.read_table(path)
        assert table.schema.equals(lake_schema())
        keys = list(
            zip(table.column("symbol").to_pylist(), table.column("trade_date").to_pylist(), strict=True)
        )
        assert keys == sorted(keys)  # sorted by (symbol, trade_date)
    hk = (
        duckdb.connect()
        .execute(
            "select timestamp, aggregated_short, aggregated_short_ratio, avg_daily_short_volume, avg_cost "
            f"from read_parquet('{lake}/**/*.parquet', hive_partitioning=true) "
            "where symbol = 'HK.00700' and trade_date = date '2026-05-15'"
        )
        .fetchall()
    )
    assert hk == [(1778774400000, 54177721, 0.59, None, None)]  # ms; the SDK-missing columns null

    # A rerun (full or incremental) leaves every file byte for byte; incremental: one request per symbol.
    before = snapshot(lake)
    opend_sandbox.reset_stats()
    again = run(home, opend_sandbox, tmp_path, "incremental", symbols=SYMBOLS, lake=str(lake))
    assert again["code"] == 0, again["output"][-3000:]
    assert again["summary"]["requests"] == 4 == opend_sandbox.stats()["by_transport"]["opend"]
    assert again["summary"]["rows_written"] == 0 and snapshot(lake) == before
    rerun = run(home, opend_sandbox, tmp_path, "full", symbols=SYMBOLS, lake=str(lake))
    assert rerun["code"] == 0 and rerun["summary"]["rows_written"] == 0 and snapshot(lake) == before

    # A new trading date: still one request per symbol; only the files of the new dates' years change.
    new_hk, new_us = opend_sandbox.publish("HK"), opend_sandbox.publish("US")
    opend_sandbox.reset_stats()
    third = run(home, opend_sandbox, tmp_path, "incremental", symbols=SYMBOLS, lake=str(lake))
    assert third["code"] == 0, third["output"][-3000:]
    assert third["summary"]["requests"] == 4 and third["summary"]["rows_written"] == 4
    after = snapshot(lake)
    touched = {f"market=HK/year={new_hk.year}/part-0.parquet", f"market=US/year={new_us.year}/part-0.parquet"}
    assert {name for name in after if after[name] != before.get(name)} == touched
    assert third["summary"]["partitions_written"] == 2


@pytest.mark.timeout(900)
def test_rejected_symbol_fails_task_others_committed(
    home: AirflowHome, opend_sandbox: SandboxServer, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    result = run(
        home, opend_sandbox, tmp_path, "full", symbols="HK.00700,HK.99999,US.VIX,US.AAPL", lake=str(lake)
    )
    # The run itself succeeds (its leaf ``record`` is all_done, so `dags test` exits 0); ``load`` failed.
    assert task_state(home, "opend_op_full", "load") == "failed", result["output"][-3000:]
    assert "RejectedSymbolsError" in result["output"]
    assert "HK.99999" in result["output"] and "US.VIX" in result["output"]
    assert result["summary"] is None  # a failed task pushes no summary (``record`` wrote XCom's None)
    rows = lake_rows(lake)
    for symbol in ("HK.00700", "US.AAPL"):  # the others are committed, every row of their history
        stored = sorted(str(row[3]) for row in rows if row[2] == symbol)
        assert stored == sorted(item["timestamp_str"] for item in opend_sandbox.history(symbol)), symbol
    assert {row[2] for row in rows} == {"HK.00700", "US.AAPL"}
    by_symbol = opend_sandbox.stats()["by_symbol"]
    assert by_symbol["HK.99999"] == by_symbol["US.VIX"] == 1  # rejected at once, not retried


@pytest.mark.timeout(1500)
def test_fault_soak_lake_equals_fault_free_run(
    home: AirflowHome, opend_sandbox: SandboxServer, tmp_path: Path
) -> None:
    clean, soaked = tmp_path / "clean", tmp_path / "soaked"
    symbols = "HK.00700,US.AAPL,HK.00005,US.MSFT,HK.00001,US.TSLA"
    base = run(
        home, opend_sandbox, tmp_path, "full", symbols=symbols, lake=str(clean), extra={"max_retries": 12}
    )
    assert base["code"] == 0, base["output"][-3000:]
    # a quarter of the replies fail: dropped connections, internal errors, backend timeouts
    opend_sandbox.configure(malformed_rate=0.12, internal_error_rate=0.08, http5xx_rate=0.05, seed=11)
    opend_sandbox.reset_stats()
    soak = run(
        home, opend_sandbox, tmp_path, "full", symbols=symbols, lake=str(soaked), extra={"max_retries": 12}
    )
    assert soak["code"] == 0, soak["output"][-3000:]
    stats = opend_sandbox.stats()
    failed = sum(stats["faults"][kind] for kind in ("malformed", "internal_error", "http5xx"))
    assert failed / stats["by_transport"]["opend"] >= 0.2, stats
    assert soak["summary"]["requests"] == stats["by_transport"]["opend"] > base["summary"]["requests"]
    assert lake_rows(soaked) == lake_rows(clean)
    assert sorted(p.relative_to(soaked) for p in soaked.rglob("*.parquet")) == sorted(
        p.relative_to(clean) for p in clean.rglob("*.parquet")
    )
