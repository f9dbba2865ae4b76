"""The example DAGs: they parse without errors or network, and backfill -> daily -> report really runs."""

from __future__ import annotations

import csv
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from airflow_provider_shortint.sandbox import SandboxServer
from tests.conftest import AirflowHome, conn_uri

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
DAG_IDS = {"shortint_backfill", "shortint_daily", "shortint_report"}
HK = ["HK.00700", "HK.00005", "HK.09988"]
US = ["US.AAPL", "US.MSFT", "US.NVDA"]


def _dead_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Parsed(NamedTuple):
    dags: dict[str, Any]
    import_errors: dict[str, str]
    lake: Path


@pytest.fixture
def dagbag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Parsed]:
    """Parse ./dags the way the DAG processor does, with the API down and every socket connect refused."""
    from airflow.dag_processing.dagbag import DagBag

    lake = tmp_path / "lake"
    monkeypatch.setenv("SHORTINT_LAKE_PATH", str(lake))
    monkeypatch.setenv(
        "AIRFLOW_CONN_SHORTINT_DEFAULT", conn_uri(f"http://127.0.0.1:{_dead_port()}", max_retries=0)
    )
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError(f"network access at DAG parse time: connect({address!r})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    # The DAG processor puts the bundle folder on sys.path (shared _shortint_common module).
    monkeypatch.syspath_prepend(str(DAGS))
    monkeypatch.delitem(sys.modules, "_shortint_common", raising=False)
    bag = DagBag(str(DAGS))
    monkeypatch.undo()  # restore socket before anything else runs
    sys.modules.pop("_shortint_common", None)
    assert attempts == [], f"parsing the DAGs tried to connect to {attempts}"
    yield Parsed(bag.dags, bag.import_errors, lake)


def test_example_dags_import_cleanly_offline(dagbag: Parsed) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) == DAG_IDS
    for dag in dagbag.dags.values():
        assert "example" in dag.tags and dag.doc_md


def test_backfill_maps_chunks_through_the_api_pool(dagbag: Parsed) -> None:
    dag = dagbag.dags["shortint_backfill"]
    assert dag.schedule is None
    assert {"symbols", "lake_path", "chunk_size"} <= set(dag.params)
    assert dag.params["lake_path"] == str(dagbag.lake)
    load = dag.get_task("load_full_history")
    assert load.partial_kwargs["pool"] == "shortint_api"
    assert load.partial_kwargs["mode"] == "full"
    assert load.partial_kwargs["lake_path"] == "{{ params.lake_path }}"
    assert set(load.expand_input.value) == {"symbols"}
    assert dag.get_task("split_universe") in load.upstream_list


def test_daily_waits_deferrably_then_loads_each_market(dagbag: Parsed) -> None:
    from airflow_provider_shortint.assets import lake_assets

    dag = dagbag.dags["shortint_daily"]
    assets = lake_assets(str(dagbag.lake))
    for market, bellwether in (("hk", "HK.00700"), ("us", "US.AAPL")):
        sensor = dag.get_task(f"{market}.wait_for_new_record")
        load = dag.get_task(f"{market}.load_incremental")
        assert sensor.deferrable and sensor.symbol == bellwether
        assert sensor.lake_path == str(dagbag.lake)
        assert load.upstream_task_ids == {sensor.task_id}
        assert load.mode == "incremental" and load.pool == "shortint_api"
        # The universe is read when the task runs (param, then Variable), never at parse time.
        assert f"shortint_{market}_universe" in load.symbols and "{{" in load.symbols
        assert load.outlets == [assets[market.upper()]]


def test_report_is_scheduled_on_exactly_the_assets_the_loads_emit(dagbag: Parsed) -> None:
    from airflow_provider_shortint.assets import lake_assets

    report = dagbag.dags["shortint_report"]
    condition = report.timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"  # a new date in either market starts a report
    scheduled = {asset.uri for asset in condition.objects}
    assert scheduled == {asset.uri for asset in lake_assets(str(dagbag.lake)).values()}
    daily = dagbag.dags["shortint_daily"]
    emitted = {asset.uri for task in daily.tasks for asset in task.outlets}
    assert emitted == scheduled


def _lake_rows(lake: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.dataset as ds

    partitioning = ds.partitioning(pa.schema([("market", pa.string()), ("dt", pa.string())]), flavor="hive")
    dataset = ds.dataset(str(lake), format="parquet", partitioning=partitioning)
    rows: list[dict[str, Any]] = dataset.to_table(
        columns=["symbol", "trade_date", "market", "dt"]
    ).to_pylist()
    return rows


def _check(result: Any, what: str) -> None:
    assert result.returncode == 0, f"{what} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def test_backfill_daily_report_end_to_end(airflow_home: AirflowHome, tmp_path: Path) -> None:
    lake, reports = tmp_path / "lake", tmp_path / "reports"
    for source in DAGS.glob("*.py"):
        airflow_home.add_dag(source)
    # Time-scaled budget: the sandbox enforces 30 requests per second and so does the client.
    with SandboxServer(rate_limit_calls=30, rate_limit_period=1.0) as sandbox:
        env = {
            "AIRFLOW_CONN_SHORTINT_DEFAULT": conn_uri(
                sandbox.url,
                rate_limit_calls=30,
                rate_limit_period=1,
                rate_limit_state_dir=str(tmp_path / "budget"),
            ),
            "SHORTINT_LAKE_PATH": str(lake),
            "SHORTINT_REPORT_DIR": str(tmp_path / "default-reports"),
            # The US universe comes from the Airflow Variable, the HK one from the run's param.
            "AIRFLOW_VAR_SHORTINT_US_UNIVERSE": ",".join(US),
        }
        _check(
            airflow_home.dags_test("shortint_backfill", conf={"symbols": HK + US, "chunk_size": 2}, env=env),
            "shortint_backfill",
        )
        rows = _lake_rows(lake)
        assert {row["symbol"] for row in rows} == set(HK + US)
        assert max(str(row["trade_date"]) for row in rows) == "2026-05-15"

        new_dates = {market: sandbox.publish(market).isoformat() for market in ("HK", "US")}
        _check(
            airflow_home.dags_test("shortint_daily", conf={"hk_symbols": ",".join(HK)}, env=env),
            "shortint_daily",
        )
        rows = _lake_rows(lake)
        expected = {
            (symbol, str(item["timestamp_str"])[:10])
            for symbol in HK + US
            for item in sandbox.history(symbol)
        }

        _check(
            airflow_home.dags_test("shortint_report", conf={"report_dir": str(reports)}, env=env), "report"
        )

    keys = [(row["symbol"], str(row["trade_date"])) for row in rows]
    assert len(keys) == len(set(keys)), "duplicate (symbol, trade_date) in the lake"
    assert set(keys) == expected  # full history, then exactly the newly published date
    for market in ("HK", "US"):
        assert max(day for symbol, day in keys if symbol.startswith(market)) == new_dates[market]
    partitions = {(row["market"], row["dt"]) for row in rows}
    assert all(row["dt"] == str(row["trade_date"]) for row in rows)
    assert all(row["symbol"].startswith(f"{row['market']}.") for row in rows)
    files = sorted(lake.glob("market=*/dt=*/*.parquet"))
    assert len(files) == len(partitions) and all(f.name == "part-0.parquet" for f in files)

    folder = reports / max(new_dates.values())
    with (folder / "top_movers.csv").open() as handle:
        movers = list(csv.DictReader(handle))
    assert {m["market"] for m in movers} == {"HK", "US"}
    assert {m["metric"] for m in movers} == {"aggregated_short_ratio", "short_percent"}
    assert all(m["trade_date"] == new_dates[m["market"]] for m in movers)
    markdown = (folder / "top_movers.md").read_text()
    assert "| market | symbol |" in markdown and "HK.00700" in markdown
    png = (folder / "short_interest_history.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000
