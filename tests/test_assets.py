"""Asset events mean new data: read back from the metadata DB after real `airflow dags test` runs."""

from __future__ import annotations

from pathlib import Path

from airflow_provider_shortint.lineage import lake_assets
from airflow_provider_shortint.sandbox import SandboxServer
from tests._fixtures_metadata import asset_events, run_ids, task_states
from tests.conftest import AirflowHome, conn_uri

DAG_ID = "asset_events_test"

DAG_SOURCE = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator

with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    # A static lake path: the outlets are both market Assets of this lake.
    ShortInterestToParquetOperator(
        task_id="load", symbols="{{{{ dag_run.conf['symbols'] }}}}", lake_path={lake!r}, mode="incremental"
    )
"""


def test_events_only_for_markets_with_rows_written(
    airflow_home: AirflowHome, sandbox: SandboxServer, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    airflow_home.add_dag(DAG_SOURCE.format(dag_id=DAG_ID, lake=str(lake)), f"{DAG_ID}.py")
    env = {"AIRFLOW_CONN_SHORTINT_DEFAULT": conn_uri(sandbox.url)}
    hk, us = (asset.uri for asset in lake_assets(str(lake)).values())

    # 1. An HK-only load into an empty lake: one event, on market=HK, with what was written.
    first = airflow_home.dags_test(DAG_ID, conf={"symbols": "HK.00700,HK.00005"}, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    (run,) = run_ids(airflow_home.root, DAG_ID)
    assert task_states(airflow_home.root, DAG_ID, run) == {("load", -1): "success"}
    events = asset_events(airflow_home.root, DAG_ID, run)
    rows = len(sandbox.history("HK.00700")) + len(sandbox.history("HK.00005"))
    assert [(e["uri"], e["task_id"]) for e in events] == [(hk, "load")]
    assert events[0]["extra"] == {
        "rows_written": rows,
        "latest_trade_date": "2026-05-15",
        "lake": f"file://{lake}",
    }

    # 2. The same load again: nothing new, the task succeeds and emits no event (nothing re-triggered).
    second = airflow_home.dags_test(DAG_ID, conf={"symbols": "HK.00700,HK.00005"}, env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    run2 = run_ids(airflow_home.root, DAG_ID)[-1]
    assert run2 != run
    assert task_states(airflow_home.root, DAG_ID, run2) == {("load", -1): "success"}
    assert asset_events(airflow_home.root, DAG_ID, run2) == []
    assert us not in {e["uri"] for e in asset_events(airflow_home.root, DAG_ID, run)}
