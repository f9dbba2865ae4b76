"""Read back what `airflow dags test` recorded in an AirflowHome's SQLite metadata DB (asset events, runs)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


def metadata_db(home_root: Path) -> sqlite3.Connection:
    """A read-only connection to the home's metadata DB."""
    return sqlite3.connect(f"file:{home_root / 'airflow.db'}?mode=ro", uri=True)


def run_ids(home_root: Path, dag_id: str) -> list[str]:
    """Run ids of ``dag_id``, oldest first."""
    with metadata_db(home_root) as db:
        return [
            r[0] for r in db.execute("select run_id from dag_run where dag_id = ? order by id", (dag_id,))
        ]


def task_states(home_root: Path, dag_id: str, run_id: str) -> dict[tuple[str, int], str]:
    """``{(task_id, map_index): state}`` of one run."""
    with metadata_db(home_root) as db:
        rows = db.execute(
            "select task_id, map_index, state from task_instance where dag_id = ? and run_id = ?",
            (dag_id, run_id),
        )
        return {(task, index): state for task, index, state in rows}


def asset_events(home_root: Path, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The asset events a run emitted: uri, extra, source task and map index."""
    with metadata_db(home_root) as db:
        rows = db.execute(
            "select a.uri, e.extra, e.source_task_id, e.source_map_index from asset_event e "
            "join asset a on a.id = e.asset_id "
            "where e.source_dag_id = ? and e.source_run_id = ? order by e.id",
            (dag_id, run_id),
        )
        return [
            {"uri": uri, "extra": json.loads(extra or "{}"), "task_id": task, "map_index": index}
            for uri, extra, task, index in rows
        ]
