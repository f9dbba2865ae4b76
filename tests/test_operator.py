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

REPO = Path(__file__).resolve().parents[1]
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


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every partition the lake writes in this process, in order (the lake's own write, counted)."""
    from airflow_provider_shortint.lake import ParquetLake

    seen: list[str] = []
    original = ParquetLake._write_partition

    def counted(self: ParquetLake, partition: Any, table: Any, expected: Any) -> None:
        original(self, partition, table, expected)
        seen.append(partition.name)

    monkeypatch.setattr(ParquetLake, "_write_partition", counted)
    return seen


def test_full_then_incremental_runs(
    home: AirflowHome, sandbox: SandboxServer, tmp_path: Path, writes: list[str]
) -> None:
    lake = tmp_path / "lake"
    histories = {symbol: sandbox.history(symbol) for symbol in CANONICAL}

    # 1. Full load: the whole history of every symbol, the fewest pages possible, each partition
    #    written once (two batches of two symbols are staged first, then committed together).
    first = run(home, sandbox, tmp_path, "full", symbols=",".join(SYMBOLS), lake=str(lake))
    assert first["code"] == 0, first["output"][-3000:]
    summary = first["summary"]
    assert summary["requests"] == sum(math.ceil(len(h) / 90) for h in histories.values())
    assert summary["rows_written"] == summary["rows_fetched"] == sum(len(h) for h in histories.values())
    assert summary["rows_staged"] == summary["rows_fetched"]
    assert summary["latest_trade_date"] == {"HK": "2026-05-15", "US": "2026-05-15"}
    assert summary["failed"] == {}
    files = sorted(lake.rglob("*.parquet"))
    expected_partitions = {
        f"market={s[:2]}/year={item['timestamp_str'][:4]}/part-0.parquet"
        for s, h in histories.items()
        for item in h
    }
    assert {str(p.relative_to(lake)) for p in files} == expected_partitions
    assert summary["partitions_written"] == len(expected_partitions)
    assert sorted(writes) == sorted(p.removesuffix("/part-0.parquet") for p in expected_partitions)
    assert not list((lake / "_staging").rglob("*"))  # the staged batches were committed and removed
    for path in files[:: max(1, len(files) // 25)]:
        table = pq.read_table(path)
        assert table.schema.equals(lake_schema())
        keys = list(
            zip(table.column("symbol").to_pylist(), table.column("trade_date").to_pylist(), strict=True)
        )
        assert keys == sorted(keys)
    rows = (
        duckdb.connect()
        .execute(
            f"select symbol, count(*), count(distinct trade_date), min(trade_date), max(trade_date), "
            f"sum(case when market = substr(symbol, 1, 2) and year = year(trade_date) then 1 else 0 end) "
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
            f"from read_parquet('{lake}/market=HK/year=2026/*.parquet') "
            "where symbol = 'HK.00700' and trade_date = DATE '2026-05-15'"
        )
        .fetchall()
    )
    assert hk == [(54177721, 3755740)]

    # 2. Nothing new: one request per symbol and every file untouched, byte for byte.
    before = snapshot(lake)
    writes.clear()
    sandbox.reset_stats()
    again = run(home, sandbox, tmp_path, "incremental", symbols=SYMBOLS, lake=str(lake))
    assert again["code"] == 0, again["output"][-3000:]
    assert again["summary"]["requests"] == 4 and sandbox.stats()["requests"] == 4
    assert again["summary"]["rows_written"] == 0 and again["summary"]["partitions_written"] == 0
    assert snapshot(lake) == before and writes == []

    # 3. A new date appears: still one request per symbol; only the new date's year of each market is
    #    rewritten, once.
    new_hk, new_us = sandbox.publish("HK"), sandbox.publish("US")
    sandbox.reset_stats()
    third = run(home, sandbox, tmp_path, "incremental", symbols=SYMBOLS, lake=str(lake))
    assert third["code"] == 0, third["output"][-3000:]
    assert sandbox.stats()["requests"] == 4 == third["summary"]["requests"]
    assert third["summary"]["rows_written"] == 4
    assert third["summary"]["latest_trade_date"] == {"HK": new_hk.isoformat(), "US": new_us.isoformat()}
    assert sorted(writes) == [f"market=HK/year={new_hk.year}", f"market=US/year={new_us.year}"]
    after = snapshot(lake)
    changed = {rel for rel in after if after[rel] != before.get(rel)}
    assert changed == {
        f"market=HK/year={new_hk.year}/part-0.parquet",
        f"market=US/year={new_us.year}/part-0.parquet",
    }
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
            f"from read_parquet('{lake}/**/*.parquet', hive_partitioning=true) group by 1"
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
        ({"staging": ""}, InvalidParameterError, "staging must be a non-empty string"),
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
        ({"commit_rows": 0}, "commit_rows"),
        ({"staging": " "}, "staging"),
        ({"on_symbol_error": "ignore"}, "on_symbol_error"),
    ],
)
def test_static_arguments_checked_at_parse_time(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        ShortInterestToParquetOperator(task_id="t", symbols="HK.00700", lake_path="/tmp/lake", **kwargs)


def test_templates_and_outlets() -> None:
    op = ShortInterestToParquetOperator(task_id="t", symbols="HK.00700", lake_path="/data/lake")
    assert set(op.template_fields) == {"symbols", "lake_path", "since", "shortint_conn_id", "staging"}
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
    assert len(arguments) == 12
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


def test_staging_only_writes_no_partition_until_the_commit(
    sandbox: SandboxServer, use_conn: Any, tmp_path: Path, writes: list[str]
) -> None:
    """With ``staging`` the run makes its rows durable under _staging/<run> and writes no partition;
    no documented reader sees them until ``commit_staged`` writes each partition once."""
    from airflow_provider_shortint.lake import open_lake

    use_conn(sandbox.url)
    lake_path = str(tmp_path / "lake")
    op = ShortInterestToParquetOperator(
        task_id="chunk", symbols=["HK.00700", "US.AAPL"], lake_path=lake_path, mode="full", staging="run 7"
    )
    summary = op.execute(context={})  # type: ignore[arg-type]
    rows = sum(len(sandbox.history(s)) for s in ("HK.00700", "US.AAPL"))
    assert summary["rows_staged"] == summary["rows_fetched"] == rows
    assert summary["rows_written"] == 0 and summary["partitions_written"] == 0 and writes == []
    lake = open_lake(lake_path)
    assert lake.read().num_rows == 0 and lake.latest_dates(["HK.00700"]) == {}
    (count,) = duckdb.connect().execute(
        f"select count(*) from glob('{lake_path}/**/*.parquet')"
    ).fetchone() or (0,)
    assert count == 0
    result = lake.commit_staged("run 7")
    assert result.rows_written == rows and sorted(writes) == sorted(set(writes)) == list(
        result.partitions_written
    )
    assert lake.staged_runs() == {} and lake.read().num_rows == rows


def test_commit_rows_stages_early_and_the_run_still_writes_each_partition_once(
    sandbox: SandboxServer, use_conn: Any, tmp_path: Path, writes: list[str]
) -> None:
    """A batch fills by rows (``commit_rows``) as well as by symbols; staged batches are committed
    together at the end of the run, so a partition is written once however many batches there were."""
    from airflow_provider_shortint.lake import ParquetLake, open_lake

    use_conn(sandbox.url)
    staged: list[int] = []
    original = ParquetLake.stage

    def counted(self: ParquetLake, table: Any, run: str, name: str) -> Any:
        staged.append(table.num_rows)
        return original(self, table, run, name)

    lake_path = str(tmp_path / "lake")
    symbols = ["HK.00700", "HK.00005", "US.AAPL"]
    op = ShortInterestToParquetOperator(
        task_id="t", symbols=symbols, lake_path=lake_path, mode="full", batch_size=50, commit_rows=100
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ParquetLake, "stage", counted)
        summary = op.execute(context={})  # type: ignore[arg-type]
    # HK.00700 (437 rows) fills a batch alone; HK.00005 (47) and US.AAPL (249) fill the next one.
    assert staged == [437, 47 + 249]
    assert summary["rows_written"] == sum(staged) == summary["rows_staged"]
    assert len(writes) == len(set(writes)) == summary["partitions_written"]
    assert open_lake(lake_path).staged_runs() == {}


def test_backfill_dag_stages_chunks_and_commits_each_partition_once(
    home: AirflowHome, sandbox: SandboxServer, tmp_path: Path, writes: list[str]
) -> None:
    """shortint_backfill: three mapped chunks stage, `commit` writes every partition once."""
    from airflow_provider_shortint.lake import open_lake

    home.add_dag(REPO / "dags" / "shortint_backfill.py")
    lake = tmp_path / "lake"
    symbols = ["HK.00700", "HK.00005", "US.AAPL"]
    env = {"AIRFLOW_CONN_SHORTINT_DEFAULT": conn_uri(sandbox.url), "SHORTINT_LAKE_PATH": str(lake)}
    result = home.dags_test(
        "shortint_backfill", conf={"symbols": symbols, "chunk_size": 1, "lake_path": str(lake)}, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:]
    histories = {s: sandbox.history(s) for s in symbols}
    expected = {
        f"market={s[:2]}/year={item['timestamp_str'][:4]}" for s, h in histories.items() for item in h
    }
    assert sorted(writes) == sorted(expected)  # each partition once, by the commit
    table = open_lake(str(lake)).read(["symbol", "trade_date"])
    keys = list(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))
    assert len(keys) == len(set(keys)) == sum(len(h) for h in histories.values())
    assert not list((lake / "_staging").rglob("*.stage"))
    assert "backfill totals" in result.stdout and f"'partitions_written': {len(expected)}" in result.stdout
