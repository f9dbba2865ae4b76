"""Concurrent writers on one table (DESIGN.md §12): 4 processes upsert overlapping keys of the same
partitions at once, trial after trial, per format, locally and on S3: nothing lost, no duplicate key,
the refused commits counted (each one re-read, re-compared and retried by its writer)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests._fixtures_s3 import S3Server
from tests._fixtures_tables import (
    TableTarget,
    check_overlapping_result,
    iceberg_s3_connection,
    local_target,
    run_writers,
)

TRIALS = 10
#: On moto a trial costs seconds: Delta's commit on S3 (conditional writes) races 3 times, Iceberg (whose
#: commit check is the catalog's, the same as locally) twice; the 10-trial proofs are the local races.
DELTA_S3_TRIALS = 3
ICEBERG_S3_TRIALS = 2


def _trials(pool: Any, trials: int, make: Callable[[int], tuple[TableTarget, dict[str, str]]]) -> int:
    """Run ``trials`` races on fresh tables; check each; the refused commits of all of them."""
    conflicts = 0
    for trial in range(trials):
        target, env = make(trial)
        results = run_writers(pool, target, trial, env)
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            check_overlapping_result(target.open(), trial)
        conflicts += sum(result["conflicts"] for result in results)
    return conflicts


@pytest.mark.parametrize("table_format", ["delta", "iceberg"])
def test_four_writers_local_lose_nothing_and_duplicate_nothing(
    writer_pool: Any, tmp_path: Path, table_format: str
) -> None:
    conflicts = _trials(
        writer_pool, TRIALS, lambda trial: (local_target(table_format, tmp_path / f"t{trial}"), {})
    )
    print(
        f"{table_format} local: {TRIALS} trials x 4 writers: 0 lost, 0 duplicates, "
        f"{conflicts} refused commits"
    )
    assert conflicts > 0  # the writers really raced


def test_four_writers_delta_on_s3(writer_pool: Any, s3_server: S3Server, s3_prefix: str) -> None:
    def make(trial: int) -> tuple[TableTarget, dict[str, str]]:
        return TableTarget("delta", s3_server.url(f"{s3_prefix}/t{trial}"), {}), s3_server.env

    conflicts = _trials(writer_pool, DELTA_S3_TRIALS, make)
    print(
        f"delta s3: {DELTA_S3_TRIALS} trials x 4 writers: 0 lost, 0 duplicates, {conflicts} refused commits"
    )
    assert conflicts > 0


def test_four_writers_iceberg_with_s3_warehouse(
    writer_pool: Any, s3_server: S3Server, s3_prefix: str, tmp_path: Path
) -> None:
    def make(trial: int) -> tuple[TableTarget, dict[str, str]]:
        conn_id = f"iceberg_race_{trial}"
        warehouse = f"s3://{s3_server.bucket}/{s3_prefix}/w{trial}"
        conn = iceberg_s3_connection(conn_id, tmp_path / f"catalog{trial}.db", warehouse, s3_server.conn_id)
        env = {**s3_server.env, f"AIRFLOW_CONN_{conn_id.upper()}": conn}
        return TableTarget("iceberg", "shortint.short_interest", {"catalog_conn_id": conn_id}), env

    conflicts = _trials(writer_pool, ICEBERG_S3_TRIALS, make)
    print(
        f"iceberg s3: {ICEBERG_S3_TRIALS} trials x 4 writers: 0 lost, 0 duplicates, "
        f"{conflicts} refused commits"
    )
    assert conflicts > 0
