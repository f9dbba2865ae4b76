"""The example DAGs: they parse without errors or network, and backfill -> daily -> report really runs."""

from __future__ import annotations

import csv
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from airflow_provider_shortint.lineage import lake_assets
from airflow_provider_shortint.sandbox import SandboxServer
from tests.conftest import AirflowHome, conn_uri

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
DAG_IDS = {"shortint_backfill", "shortint_daily", "shortint_report", "shortint_on_new_record"}
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


def _parse_offline(monkeypatch: pytest.MonkeyPatch, folder: Path, lake: Path) -> Parsed:
    """Parse ``folder`` with the DAG processor's loader, the API down and every socket connect refused.

    Nothing is added to ``sys.path``: an example must import wherever it sits.
    """
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("SHORTINT_LAKE_PATH", str(lake))
    monkeypatch.setenv(
        "AIRFLOW_CONN_SHORTINT_DEFAULT", conn_uri(f"http://127.0.0.1:{_dead_port()}", max_retries=0)
    )
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError(f"network access at DAG parse time: connect({address!r})")

    with monkeypatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        assert str(folder) not in sys.path and str(DAGS) not in sys.path
        bag = DagBag(str(folder))
    assert attempts == [], f"parsing the DAGs tried to connect to {attempts}"
    return Parsed(bag.dags, bag.import_errors, lake)


@pytest.fixture
def dagbag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Parsed:
    """./dags parsed the way the DAG processor does, offline."""
    return _parse_offline(monkeypatch, DAGS, tmp_path / "lake")


def test_example_dags_import_cleanly_offline(dagbag: Parsed) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) == DAG_IDS
    for dag in dagbag.dags.values():
        assert "example" in dag.tags and dag.doc_md


def test_examples_import_from_a_nested_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Copied into a subfolder of the DAGs folder (as git-sync layouts do), every example still imports."""
    nested = tmp_path / "dags" / "repo" / "shortint"
    nested.mkdir(parents=True)
    copied = [shutil.copy(source, nested / source.name) for source in DAGS.glob("*.py")]
    assert len(copied) == len(DAG_IDS)
    parsed = _parse_offline(monkeypatch, tmp_path / "dags", tmp_path / "lake")
    assert parsed.import_errors == {}
    assert set(parsed.dags) == DAG_IDS
    assert {Path(dag.fileloc).parent for dag in parsed.dags.values()} == {nested}


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
        # Rejected symbols fail a later task, so the load's events for the rows it wrote are kept.
        assert load.on_symbol_error == "warn"
        assert dag.get_task(f"{market}.check_rejected").upstream_task_ids == {load.task_id}
        assert sensor.poke_interval == 15 * 60


def test_poll_interval_is_left_to_the_process_that_polls(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Parsing fixes no poll interval: the sensors and watchers carry None, so the triggerer's own
    $SHORTINT_POKE_INTERVAL decides when they poll, whatever the DAG processor's environment said."""
    monkeypatch.setenv("SHORTINT_POKE_INTERVAL", "5")
    parsed = _parse_offline(monkeypatch, DAGS, tmp_path / "lake")
    assert parsed.import_errors == {}
    for market in ("hk", "us"):
        sensor = parsed.dags["shortint_daily"].get_task(f"{market}.wait_for_new_record")
        assert sensor.poke_interval_from_setting and sensor.deferrable
    watched = parsed.dags["shortint_on_new_record"].timetable.asset_condition.objects
    assert {asset.watchers[0].trigger.poke_interval for asset in watched} == {None}


def test_asset_watcher_example_builds_its_watchers(dagbag: Parsed) -> None:
    """The fourth example: scheduled by an AssetWatcher per market, serialisable for the triggerer."""
    from airflow.serialization.serialized_objects import DagSerialization

    from airflow_provider_shortint.triggers.short_interest import ShortInterestNewRecordEventTrigger

    dag = dagbag.dags["shortint_on_new_record"]
    condition = dag.timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"
    watched = {asset.name: asset for asset in condition.objects}
    assert set(watched) == {"shortint_new_record_hk", "shortint_new_record_us"}
    for market, bellwether in (("HK", "HK.00700"), ("US", "US.AAPL")):
        (watcher,) = watched[f"shortint_new_record_{market.lower()}"].watchers
        assert isinstance(watcher.trigger, ShortInterestNewRecordEventTrigger)
        classpath, kwargs = watcher.trigger.serialize()
        assert (
            classpath
            == "airflow_provider_shortint.triggers.short_interest.ShortInterestNewRecordEventTrigger"
        )
        assert kwargs == {
            "symbol": bellwether,
            "after": None,
            "shortint_conn_id": "shortint_default",
            "poke_interval": None,
            "max_backoff": 3600.0,
        }
    # What the DAG processor stores for the triggerer: both watchers, with their trigger's kwargs.
    stored = DagSerialization.to_dict(dag)["dag"]["timetable"]["__var"]["asset_condition"]["objects"]
    assert [(w["name"], w["trigger"]["kwargs"]["symbol"]) for o in stored for w in o["watchers"]] == [
        ("shortint_hk_bellwether", "HK.00700"),
        ("shortint_us_bellwether", "US.AAPL"),
    ]
    assert {w["trigger"]["classpath"] for o in stored for w in o["watchers"]} == {classpath}
    load = dag.get_task("load_incremental")
    assert load.upstream_task_ids == {"pick_universe"} and load.on_symbol_error == "warn"
    assert [a.uri for a in load.outlets] == [a.uri for a in lake_assets(str(dagbag.lake)).values()]


def test_report_is_scheduled_on_exactly_the_assets_the_loads_emit(dagbag: Parsed) -> None:
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

    partitioning = ds.partitioning(pa.schema([("market", pa.string()), ("year", pa.int32())]), flavor="hive")
    dataset = ds.dataset(str(lake), format="parquet", partitioning=partitioning)
    rows: list[dict[str, Any]] = dataset.to_table(
        columns=["symbol", "trade_date", "market", "year"]
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
    partitions = {(row["market"], row["year"]) for row in rows}
    assert all(row["year"] == row["trade_date"].year for row in rows)
    assert all(row["symbol"].startswith(f"{row['market']}.") for row in rows)
    files = sorted(lake.glob("market=*/year=*/*.parquet"))
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


def test_report_without_matplotlib_writes_the_tables_and_skips_the_chart(
    airflow_home: AirflowHome,
    sandbox: SandboxServer,
    use_conn: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator

    lake, reports = tmp_path / "lake", tmp_path / "reports"
    use_conn(sandbox.url)
    load = ShortInterestToParquetOperator(task_id="prepare", symbols=HK[:2] + US[:1], lake_path=str(lake))
    load.execute(context={})  # type: ignore[arg-type]
    # As if matplotlib were not installed: the import fails and find_spec finds nothing.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for source in DAGS.glob("*.py"):
        airflow_home.add_dag(source)
    env = {"SHORTINT_LAKE_PATH": str(lake)}
    result = airflow_home.dags_test("shortint_report", conf={"report_dir": str(reports)}, env=env)
    _check(result, "shortint_report without matplotlib")
    assert "matplotlib is not installed" in result.stdout + result.stderr
    (folder,) = reports.iterdir()
    assert folder.name == "2026-05-15"
    assert sorted(p.name for p in folder.iterdir()) == ["top_movers.csv", "top_movers.md"]
    with (folder / "top_movers.csv").open() as handle:
        assert {m["symbol"] for m in csv.DictReader(handle)} == set(HK[:2] + US[:1])


def test_backfill_and_daily_into_a_delta_table(airflow_home: AirflowHome, tmp_path: Path) -> None:
    """SHORTINT_TABLE_FORMAT=delta: the same DAGs load a Delta table; a Friday's daily run maintains it."""
    from deltalake import DeltaTable

    from airflow_provider_shortint.lake import open_lake

    table = tmp_path / "delta"
    for source in DAGS.glob("*.py"):
        airflow_home.add_dag(source)
    with SandboxServer(rate_limit_calls=0) as sandbox:
        env = {
            "AIRFLOW_CONN_SHORTINT_DEFAULT": conn_uri(sandbox.url),
            "SHORTINT_LAKE_PATH": str(table),
            "SHORTINT_TABLE_FORMAT": "delta",
            "SHORTINT_POKE_INTERVAL": "0.2",
        }
        conf = {"symbols": HK[:2] + US[:1], "chunk_size": 2}
        _check(airflow_home.dags_test("shortint_backfill", conf=conf, env=env), "backfill into Delta")
        new_hk, _ = sandbox.publish("HK"), sandbox.publish("US")  # both sensors see a new date
        friday = "2026-05-29T23:00:00+00:00"
        daily = airflow_home.dags_test(
            "shortint_daily", conf={"hk_symbols": HK[:2], "us_symbols": US[:1]}, env=env, logical_date=friday
        )
        _check(daily, "daily into Delta")
        expected = {
            (symbol, item["timestamp_str"]) for symbol in HK[:2] + US[:1] for item in sandbox.history(symbol)
        }
    rows = DeltaTable(str(table)).to_pyarrow_table(columns=["symbol", "trade_date"]).to_pylist()
    keys = [(row["symbol"], row["trade_date"].isoformat()) for row in rows]
    assert sorted(keys) == sorted(expected) and len(keys) == len(set(keys))
    assert open_lake(str(table), "delta").latest_dates(["HK.00700"]) == {"HK.00700": new_hk}
    assert "maintenance: {" in daily.stdout  # the Friday run compacted the table
