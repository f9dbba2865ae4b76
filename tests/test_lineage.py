"""OpenLineage from the operator, read back from a real file transport, and the backfill's asset events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shortint.lineage import api_namespace, build_lineage, lake_assets, lake_dataset
from airflow_provider_shortint.records import lake_schema
from airflow_provider_shortint.sandbox import SandboxServer
from tests._fixtures_metadata import asset_events, run_ids, task_states
from tests.conftest import REPO, AirflowHome, conn_uri


@pytest.mark.parametrize(
    ("fields", "namespace"),
    [
        (
            {"conn_type": "shortint", "host": "https://api.example.com/", "password": "TOKEN"},
            "https://api.example.com",
        ),
        ({"conn_type": "shortint", "host": "api.example.com", "port": 8443}, "https://api.example.com:8443"),
        (
            {"conn_type": "shortint", "host": "http://user:pw@127.0.0.1:8765/base?x=1"},
            "http://127.0.0.1:8765/base",
        ),
        (
            {"conn_type": "futu_opend", "host": "10.0.0.5", "port": 11112, "password": "PWD"},
            "futu-opend://10.0.0.5:11112",
        ),
        ({"conn_type": "futu_opend", "host": "opend.internal"}, "futu-opend://opend.internal:11111"),
    ],
)
def test_api_namespace_has_no_credentials(fields: dict[str, Any], namespace: str) -> None:
    # Built here, not in the parameters: collection (in every worker) stays free of Airflow's models.
    from airflow.models.connection import Connection

    assert api_namespace(Connection(**fields)) == namespace


def test_lake_datasets_follow_openlineage_naming() -> None:
    assert lake_dataset("/data/lake/", "HK") == ("file", "/data/lake/market=HK")
    assert lake_dataset("file:///data/lake", "US") == ("file", "/data/lake/market=US")
    assert lake_dataset("s3://aws_conn@bucket/short/interest", "HK") == (
        "s3://bucket",
        "short/interest/market=HK",
    )
    # The same names the OpenLineage provider derives from the lake's Assets (static outlets).
    from airflow.providers.openlineage.utils.utils import translate_airflow_asset

    for lake in ("/data/lake", "s3://aws_conn@bucket/short/interest"):
        for market, asset in lake_assets(lake).items():
            converted = translate_airflow_asset(asset, None)
            assert converted is not None
            assert (converted.namespace, converted.name) == lake_dataset(lake, market)


def test_facets_carry_schema_and_statistics() -> None:
    lineage = build_lineage(
        source="https://api.example.com",
        lake_path="/data/lake",
        markets=("HK", "US"),
        rows_written={"HK": 12, "US": 0},
        files_written={"HK": 3},
    )
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("https://api.example.com", "short-interest/HK"),
        ("https://api.example.com", "short-interest/US"),
    ]
    hk, us = lineage.outputs
    assert [f.name for f in hk.facets["schema"].fields] == lake_schema().names
    assert hk.facets["schema"].fields[1].type == "date32[day]"
    assert (hk.outputFacets["outputStatistics"].rowCount, hk.outputFacets["outputStatistics"].fileCount) == (
        12,
        3,
    )
    assert (us.outputFacets["outputStatistics"].rowCount, us.outputFacets["outputStatistics"].fileCount) == (
        0,
        0,
    )


def _ol_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_mapped_backfill_reports_lineage_and_announces_a_partial_success(
    airflow_home: AirflowHome, sandbox: SandboxServer, tmp_path: Path
) -> None:
    """One backfill, a symbol rejected: the loads' lineage, events for what was committed, a failed run."""
    for source in (REPO / "dags").glob("*.py"):
        airflow_home.add_dag(source)
    lake, ol_file = tmp_path / "lake", tmp_path / "openlineage.jsonl"
    env = {
        "AIRFLOW_CONN_SHORTINT_DEFAULT": conn_uri(sandbox.url, password="SECRET-TOKEN-42"),
        "SHORTINT_LAKE_PATH": str(tmp_path / "default-lake"),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "shortint-test",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(ol_file), "append": True}
        ),
    }
    conf = {"symbols": ["HK.00700", "HK.99999", "US.AAPL"], "chunk_size": 2, "lake_path": str(lake)}
    # The suite's one end-to-end run of the real `airflow dags test` CLI (its own process, its own
    # plugins and listeners: OpenLineage reads its transport from this environment).
    result = airflow_home.airflow("dags", "test", "shortint_backfill", "--conf", json.dumps(conf), env=env)
    output = result.stdout[-3000:] + result.stderr[-3000:]
    run = run_ids(airflow_home.root, "shortint_backfill")[-1]

    # The chunk with the rejected symbol succeeded (warn), the check failed the run.
    states = task_states(airflow_home.root, "shortint_backfill", run)
    assert states == {
        ("split_universe", -1): "success",
        ("load_full_history", 0): "success",
        ("load_full_history", 1): "success",
        ("commit", -1): "success",
        ("summarize", -1): "success",
        ("check_rejected", -1): "failed",
    }, output
    assert "HK.99999" in result.stdout + result.stderr

    # Asset events: one per market committed, from `summarize`, although the run failed.
    hk_rows, us_rows = len(sandbox.history("HK.00700")), len(sandbox.history("US.AAPL"))
    events = asset_events(airflow_home.root, "shortint_backfill", run)
    assets = lake_assets(str(lake))
    assert sorted((e["uri"], e["task_id"], e["extra"]["rows_written"]) for e in events) == [
        (assets["HK"].uri, "summarize", hk_rows),
        (assets["US"].uri, "summarize", us_rows),
    ]

    # OpenLineage: each mapped load reports the API market it read and the lake market it staged rows for.
    assert ol_file.exists(), output
    text = ol_file.read_text()
    assert "SECRET-TOKEN-42" not in text
    loads = [
        e
        for e in _ol_events(ol_file)
        if e["eventType"] == "COMPLETE" and e["job"]["name"] == "shortint_backfill.load_full_history"
    ]
    assert len(loads) == 2, [e["job"]["name"] for e in _ol_events(ol_file)]
    seen = {}
    for event in loads:
        (source,) = event["inputs"]
        (target,) = event["outputs"]
        assert source["namespace"] == sandbox.url.rstrip("/")
        market = source["name"].removeprefix("short-interest/")
        assert (target["namespace"], target["name"]) == ("file", f"{lake}/market={market}")
        fields = target["facets"]["schema"]["fields"]
        assert [f["name"] for f in fields] == lake_schema().names
        seen[market] = target["outputFacets"]["outputStatistics"]["rowCount"]
    assert seen == {"HK": hk_rows, "US": us_rows}
