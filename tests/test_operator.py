"""ShortInterestToParquetOperator under real Airflow (`airflow dags test`) against the sandbox."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from airflow_provider_shortint.exceptions import InvalidParameterError, UnsupportedSecurityError
from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator
from airflow_provider_shortint.records import lake_schema
from airflow_provider_shortint.sandbox import SandboxServer
from tests._helpers import DAG_SOURCE
from tests.conftest import AirflowHome, conn_uri

SYMBOLS = ["HK.00700", "US.AAPL", "hk.5", "US.MSFT"]
CANONICAL = ["HK.00700", "US.AAPL", "HK.00005", "US.MSFT"]


@pytest.fixture(scope="module")
def home(airflow_home: AirflowHome) -> AirflowHome:
    airflow_home.add_dag(DAG_SOURCE, "op_test_dags.py")
    return airflow_home


def run(home: AirflowHome, sandbox: SandboxServer, tmp_path: Path, mode: str, **conf: Any) -> dict[str, Any]:
    """Run one operator DAG; returns the exit code, output and the summary the task pushed."""
    out = tmp_path / f"summary-{mode}.json"
    out.unlink(missing_ok=True)
    env = {"AIRFLOW_CONN_SHORTINT_DEFAULT": conn_uri(sandbox.url)}
    result = home.dags_test(f"op_test_{mode}", conf={"out": str(out), **conf}, env=env)
    summary = json.loads(out.read_text()) if out.exists() else None
    return {"code": result.returncode, "output": result.stdout + result.stderr, "summary": summary}


def snapshot(lake: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(lake)): (p.read_bytes(), p.stat().st_mtime_ns) for p in lake.rglob("*.parquet")}


def test_full_then_incremental_runs(home: AirflowHome, sandbox: SandboxServer, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    histories = {symbol: sandbox.history(symbol) for symbol in CANONICAL}

    # 1. Full load: the whole history of every symbol, the fewest pages possible.
    first = run(home, sandbox, tmp_path, "full", symbols=",".join(SYMBOLS), lake=str(lake))
    assert first["code"] == 0, first["output"][-3000:]
    summary = first["summary"]
    assert summary["requests"] == sum(math.ceil(len(h) / 90) for h in histories.values())
    assert summary["rows_written"] == summary["rows_fetched"] == sum(len(h) for h in histories.values())
    assert summary["latest_trade_date"] == {"HK": "2026-05-15", "US": "2026-05-15"}
    assert summary["failed"] == {}
    files = sorted(lake.rglob("*.parquet"))
    expected_partitions = {
        f"market={s[:2]}/dt={item['timestamp_str']}/part-0.parquet"
        for s, h in histories.items()
        for item in h
    }
    assert {str(p.relative_to(lake)) for p in files} == expected_partitions
    assert summary["partitions_written"] == len(expected_partitions)
    for path in files[:: max(1, len(files) // 25)]:
        table = pq.read_table(path)
        assert table.schema.equals(lake_schema())
        symbols = table.column("symbol").to_pylist()
        assert symbols == sorted(symbols)
    rows = (
        duckdb.connect()
        .execute(
            f"select symbol, count(*), count(distinct trade_date), min(trade_date), max(trade_date), "
            f"sum(case when market = substr(symbol, 1, 2) and dt = trade_date then 1 else 0 end) "
            f"from read_parquet('{lake}/**/*.parquet', hive_partitioning=true) "
            "group by symbol order by symbol"
        )
        .fetchall()
    )
    assert [r[0] for r in rows] == sorted(CANONICAL)
    for symbol, count, distinct, oldest, newest, placed in rows:
        history = histories[symbol]
        assert count == distinct == placed == len(history)
        assert (oldest.isoformat(), newest.isoformat()) == (
            history[-1]["timestamp_str"],
            history[0]["timestamp_str"],
        )
    hk = (
        duckdb.connect()
        .execute(
            "select aggregated_short, avg_daily_short_volume "
            f"from read_parquet('{lake}/market=HK/dt=2026-05-15/*.parquet') where symbol = 'HK.00700'"
        )
        .fetchall()
    )
    assert hk == [(54177721, 3755740)]

    # 2. Nothing new: one request per symbol and every file untouched, byte for byte.
    before = snapshot(lake)
    sandbox.reset_stats()
    again = run(home, sandbox, tmp_path, "incremental", symbols=SYMBOLS, lake=str(lake))
    assert again["code"] == 0, again["output"][-3000:]
    assert again["summary"]["requests"] == 4 and sandbox.stats()["requests"] == 4
    assert again["summary"]["rows_written"] == 0 and again["summary"]["partitions_written"] == 0
    assert snapshot(lake) == before

    # 3. A new date appears: still one request per symbol, only the new partitions are added.
    new_hk, new_us = sandbox.publish("HK"), sandbox.publish("US")
    sandbox.reset_stats()
    third = run(home, sandbox, tmp_path, "incremental", symbols=SYMBOLS, lake=str(lake))
    assert third["code"] == 0, third["output"][-3000:]
    assert sandbox.stats()["requests"] == 4 == third["summary"]["requests"]
    assert third["summary"]["rows_written"] == 4
    assert third["summary"]["latest_trade_date"] == {"HK": new_hk.isoformat(), "US": new_us.isoformat()}
    after = snapshot(lake)
    added = set(after) - set(before)
    assert added == {
        f"market=HK/dt={new_hk.isoformat()}/part-0.parquet",
        f"market=US/dt={new_us.isoformat()}/part-0.parquet",
    }
    assert {k: v for k, v in after.items() if k in before} == before
    assert "[4/4]" in third["output"] and "request(s)" in third["output"]


def test_since_bound_and_rejected_symbols(home: AirflowHome, sandbox: SandboxServer, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    result = run(
        home,
        sandbox,
        tmp_path,
        "full",
        symbols=["HK.00700", "HK.99999", "US.AAPL", "US.VIX"],
        lake=f"file://{lake}",
        since="2026-03-31",
    )
    # The two rejected symbols fail the task with one message naming both (so it pushes no summary);
    # the rest is committed.
    assert result["summary"] is None
    assert "2 of 4 symbol(s) rejected" in result["output"]
    assert "HK.99999: invalid_symbol" in result["output"] and "US.VIX: unsupported" in result["output"]
    dates = (
        duckdb.connect()
        .execute(
            "select symbol, list(trade_date order by trade_date) "
            f"from read_parquet('{lake}/**/*.parquet') group by 1"
        )
        .fetchall()
    )
    got = {symbol: [d.isoformat() for d in days] for symbol, days in dates}
    assert got == {
        "HK.00700": [
            "2026-04-02",
            "2026-04-10",
            "2026-04-17",
            "2026-04-24",
            "2026-04-30",
            "2026-05-08",
            "2026-05-15",
        ],
        "US.AAPL": ["2026-04-15", "2026-04-30", "2026-05-15"],
    }


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"symbols": "HK.00700,AAPL"}, InvalidParameterError, "'AAPL'"),
        ({"symbols": ["SH.600000"]}, UnsupportedSecurityError, "only HK and US"),
        ({"symbols": "['HK.00700', "}, InvalidParameterError, "looks like a list"),
        ({"symbols": ""}, InvalidParameterError, "no symbols"),
        ({"since": "yesterday"}, InvalidParameterError, "since must be an ISO date"),
        ({"lake_path": "relative/lake"}, InvalidParameterError, "lake"),
        ({"lake_path": ""}, InvalidParameterError, "lake"),
    ],
)
def test_bad_input_fails_before_any_request(
    sandbox: SandboxServer, use_conn: Any, tmp_path: Path, kwargs: dict[str, Any], error: type, pattern: str
) -> None:
    use_conn(sandbox.url)
    # As Airflow does: the templated fields receive their rendered values after construction.
    op = ShortInterestToParquetOperator(task_id="t", symbols="{{ x }}", lake_path="{{ y }}", since="{{ z }}")
    op.symbols, op.lake_path, op.since = ["HK.00700"], str(tmp_path / "lake"), None
    for name, value in kwargs.items():
        setattr(op, name, value)
    with pytest.raises(error, match=pattern):
        op.execute(context={})  # type: ignore[arg-type]
    assert sandbox.stats()["requests"] == 0
    assert not (tmp_path / "lake").exists()
    # The same values written without Jinja fail when the DAG is parsed.
    static: dict[str, Any] = {"symbols": ["HK.00700"], "lake_path": str(tmp_path / "lake"), **kwargs}
    with pytest.raises(error, match=pattern):
        ShortInterestToParquetOperator(task_id="t2", **static)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"mode": "everything"}, "mode must be one of"),
        ({"page_size": 91}, "page_size must be an integer from 1 to 90"),
        ({"batch_size": 0}, "batch_size"),
        ({"on_symbol_error": "ignore"}, "on_symbol_error"),
    ],
)
def test_static_arguments_checked_at_parse_time(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        ShortInterestToParquetOperator(task_id="t", symbols="HK.00700", lake_path="/tmp/lake", **kwargs)


def test_templates_and_outlets() -> None:
    op = ShortInterestToParquetOperator(task_id="t", symbols="HK.00700", lake_path="/data/lake")
    assert set(op.template_fields) == {"symbols", "lake_path", "since"}
    assert [a.uri for a in op.outlets] == ["file:///data/lake/market=HK", "file:///data/lake/market=US"]
    s3 = ShortInterestToParquetOperator(task_id="t2", symbols="HK.00700", lake_path="s3://aws_x@bucket/lake")
    assert [a.uri for a in s3.outlets] == ["s3://bucket/lake/market=HK", "s3://bucket/lake/market=US"]
    templated = ShortInterestToParquetOperator(
        task_id="t3", symbols="HK.00700", lake_path="{{ params.lake }}"
    )
    assert templated.outlets == []


def test_first_page_sized_to_the_gap(sandbox: SandboxServer, use_conn: Any, tmp_path: Path) -> None:
    """An up-to-date symbol costs one request, and that request asks for the expected gap, not 90 rows."""
    from airflow_provider_shortint.hooks.short_interest import ShortInterestHook

    use_conn(sandbox.url)
    op = ShortInterestToParquetOperator(task_id="t", symbols="HK.00700", lake_path=str(tmp_path))
    hook = ShortInterestHook()
    counts: list[int] = []
    real_fetch_raw_page = hook.fetch_raw_page

    def spy(symbol: str, count: int, next_key: str | None) -> Any:
        counts.append(count)
        return real_fetch_raw_page(symbol, count, next_key)

    hook.fetch_raw_page = spy  # type: ignore[method-assign]
    bound = dt.date(2026, 5, 15)
    assert op._fetch(hook, "HK.00700", bound).num_rows == 0
    assert hook.requests_made == 1 and sandbox.stats()["by_symbol"] == {"HK.00700": 1}
    gap = (dt.datetime.now(dt.UTC).date() - bound).days
    assert counts == [min(90, math.ceil(gap / 7) + 2)]
    # Two weeks behind: the first page still reaches the stored date in one request.
    counts.clear()
    older = op._fetch(hook, "HK.00700", dt.date(2026, 4, 30))
    assert [d.isoformat() for d in older.column("trade_date").to_pylist()] == ["2026-05-15", "2026-05-08"]
    assert len(counts) == 1


def test_every_argument_is_documented() -> None:
    import inspect

    doc = ShortInterestToParquetOperator.__doc__ or ""
    arguments = [
        name
        for name, p in inspect.signature(ShortInterestToParquetOperator.__init__).parameters.items()
        if name != "self" and p.kind is p.KEYWORD_ONLY
    ]
    assert len(arguments) == 8
    assert [name for name in arguments if f":param {name}:" not in doc] == []


def test_lineage_is_empty_until_execute_ran() -> None:
    op = ShortInterestToParquetOperator(task_id="t", symbols="HK.00700", lake_path="/data/lake")
    assert op.get_openlineage_facets_on_complete(None) is None


def test_bad_connection_fails_the_task_not_the_symbols(
    sandbox: SandboxServer, use_conn: Any, tmp_path: Path
) -> None:
    """A connection error (here extra timeout="abc") fails the task with the connection's message even with
    on_symbol_error="warn", instead of being recorded as every symbol "rejected by the API"."""
    use_conn(sandbox.url, timeout="abc")
    op = ShortInterestToParquetOperator(
        task_id="t", symbols=["HK.00700", "US.AAPL"], lake_path=str(tmp_path / "lake"), on_symbol_error="warn"
    )
    with pytest.raises(InvalidParameterError, match="timeout") as caught:
        op.execute(context={})  # type: ignore[arg-type]
    assert "rejected" not in caught.value.message and caught.value.symbol is None
    assert sandbox.stats()["requests"] == 0
