"""table_format on the operator, the sensor, open_lake and lineage: Delta and Iceberg fed from the sandbox."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_shortint.exceptions import InvalidParameterError
from airflow_provider_shortint.lake import ParquetLake, open_lake
from airflow_provider_shortint.lake.formats import table_asset_uri
from airflow_provider_shortint.lineage import build_lineage, lake_assets
from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator
from airflow_provider_shortint.sandbox import SandboxServer
from airflow_provider_shortint.sensors.short_interest import ShortInterestNewRecordSensor

SYMBOLS = ["HK.00700", "HK.00005", "US.AAPL"]


def outlet_context() -> dict[str, Any]:
    from airflow.sdk.execution_time.context import OutletEventAccessors

    return {"outlet_events": OutletEventAccessors()}


def target(kind: str, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """(lake_path, options) of a fresh table of ``kind``; Iceberg gets a catalog connection of its own."""
    if kind == "delta":
        return str(tmp_path / "delta"), {}
    return "shortint.short_interest", {"catalog_conn_id": "iceberg_ops"}


@pytest.fixture
def iceberg_conn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import json

    conn = {"conn_type": "iceberg_catalog", "extra": {"warehouse": str(tmp_path / "warehouse")}}
    monkeypatch.setenv("AIRFLOW_CONN_ICEBERG_OPS", json.dumps(conn))


@pytest.mark.parametrize("kind", ["delta", "iceberg"])
def test_operator_loads_a_table_incrementally_and_announces_it(
    kind: str,
    sandbox: SandboxServer,
    use_conn: Callable[..., str],
    iceberg_conn: None,
    tmp_path: Path,
) -> None:
    use_conn(sandbox.url)
    path, options = target(kind, tmp_path)
    histories = {symbol: sandbox.history(symbol) for symbol in SYMBOLS}

    def load(mode: str) -> tuple[dict[str, Any], dict[str, Any]]:
        op = ShortInterestToParquetOperator(
            task_id=f"load_{mode}", symbols=SYMBOLS, lake_path=path, mode=mode, table_format=kind, **options
        )
        (asset,) = op.outlets  # one Asset: the table
        assert asset == Asset(table_asset_uri(path, kind, **options))
        context = outlet_context()
        return op.execute(context), {a.uri: e.extra for a, e in context["outlet_events"].items()}

    summary, events = load("full")
    assert summary["rows_written"] == sum(len(h) for h in histories.values()) and summary["failed"] == {}
    lake = open_lake(path, kind, **options)
    assert not isinstance(lake, ParquetLake)
    stored = lake.read(["symbol", "trade_date", "market"])
    assert stored.num_rows == summary["rows_written"]
    assert sorted(set(stored.column("market").to_pylist())) == ["HK", "US"]
    ((uri, extra),) = events.items()
    assert extra["rows_written"] == summary["rows_written"] and extra["lake"] == uri
    versions = len(lake.versions())

    # Incremental re-run: one request per symbol, nothing written, no new version, no event.
    sandbox.reset_stats()
    again, events = load("incremental")
    assert again["requests"] == len(SYMBOLS) == sandbox.stats()["requests"]
    assert again["rows_written"] == 0 and len(lake.versions()) == versions and events == {}

    # A new date: only it is fetched and written; the sensor reads its reference date from the table.
    new_day = sandbox.publish("HK")
    third, _ = load("incremental")
    assert third["rows_written"] == 2 and third["latest_trade_date"]["HK"] == new_day.isoformat()
    assert lake.latest_dates(["HK.00700"]) == {"HK.00700": new_day}
    sensor = ShortInterestNewRecordSensor(
        task_id=f"wait_{kind}", symbol="HK.00700", lake_path=path, table_format=kind, **options
    )
    assert sensor.target().reference == new_day
    assert sensor.poke({}).is_done is False  # nothing newer than the table holds


def test_table_format_arguments_are_checked_before_any_request(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="table_format must be one of"):
        ShortInterestToParquetOperator(task_id="t", symbols="HK.00700", lake_path="/x", table_format="orc")
    with pytest.raises(InvalidParameterError, match="catalog_conn_id names the catalog"):
        ShortInterestToParquetOperator(
            task_id="t", symbols="HK.00700", lake_path="/x", table_format="delta", catalog_conn_id="c"
        )
    with pytest.raises(InvalidParameterError, match="staging is for the Parquet lake"):
        ShortInterestToParquetOperator(
            task_id="t", symbols="HK.00700", lake_path="/x", table_format="delta", staging="run"
        )
    with pytest.raises(InvalidParameterError, match="table_format must be one of"):
        ShortInterestNewRecordSensor(task_id="s", symbol="HK.00700", table_format="csv")
    with pytest.raises(InvalidParameterError, match="takes no options"):
        open_lake(str(tmp_path), catalog_conn_id="x")
    with pytest.raises(InvalidParameterError, match="table_format must be one of"):
        open_lake(str(tmp_path), "hudi")


def test_a_table_is_one_asset_and_one_lineage_output(tmp_path: Path) -> None:
    assets = lake_assets(str(tmp_path / "t"), "delta")
    assert set(assets) == {"HK", "US"} and assets["HK"] is assets["US"]
    assert assets["HK"].uri == f"file://{tmp_path}/t"
    lineage = build_lineage(
        source="https://api.example.com",
        lake_path=str(tmp_path / "t"),
        markets=("HK", "US"),
        rows_written={"HK": 3, "US": 2},
        files_written={"HK": 1, "US": 1},
        table=("file", f"{tmp_path}/t"),
    )
    (output,) = lineage.outputs
    assert (output.namespace, output.name) == ("file", f"{tmp_path}/t")
    assert output.outputFacets["outputStatistics"].rowCount == 5
    assert [f.name for f in output.facets["schema"].fields][-1] == "market"


def test_deferrable_sensor_on_a_table_defers_with_its_reference_date(
    sandbox: SandboxServer, use_conn: Callable[..., str], tmp_path: Path
) -> None:
    from airflow_provider_shortint.records import rows_to_table

    use_conn(sandbox.url)
    path = str(tmp_path / "delta")
    open_lake(path, "delta").upsert(
        rows_to_table([{"symbol": "HK.00700", "trade_date": dt.date(2026, 5, 15)}])
    )
    sensor = ShortInterestNewRecordSensor(
        task_id="wait", symbol="HK.00700", lake_path=path, table_format="delta", deferrable=True
    )
    with pytest.raises(TaskDeferred) as info:
        sensor.execute({})  # type: ignore[arg-type]
    assert info.value.trigger.serialize()[1]["after"] == "2026-05-15"
