"""Settings the example DAGs share (standard library only: imported on every DAG parse).

They live in the package, not next to the DAG files, so an example DAG imports wherever it is copied
(a subfolder of the DAGs folder, a git-sync layout). Nothing here touches the network, the lake or the
metadata DB. The two paths are read from the environment when called (at parse time), so the DAG
processor, the workers and the CLI must see the same ``SHORTINT_LAKE_PATH``: it names the lake's Assets.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

#: Connection id of the example tasks when ``SHORTINT_CONN_ID`` is not set.
DEFAULT_CONN_ID = "shortint_default"

#: Airflow pool that caps how many API-calling tasks run at once (create it: see docs/DAGS.md).
API_POOL = "shortint_api"

#: The symbol whose new record says "this market has published a new trading date".
BELLWETHER: dict[str, str] = {"HK": "HK.00700", "US": "US.AAPL"}

#: Airflow Variables holding each market's universe (comma-separated symbols).
UNIVERSE_VARIABLE: dict[str, str] = {"HK": "shortint_hk_universe", "US": "shortint_us_universe"}

#: Universes used when neither a DAG param nor the Variable says otherwise (bellwether first).
DEFAULT_UNIVERSE: dict[str, tuple[str, ...]] = {
    "HK": (
        "HK.00700",
        "HK.00005",
        "HK.09988",
        "HK.03690",
        "HK.01299",
        "HK.00941",
        "HK.01810",
        "HK.02318",
        "HK.00388",
        "HK.00939",
    ),
    "US": (
        "US.AAPL",
        "US.MSFT",
        "US.NVDA",
        "US.AMZN",
        "US.GOOGL",
        "US.META",
        "US.TSLA",
        "US.JPM",
        "US.XOM",
        "US.AMD",
    ),
}


def _airflow_home() -> str:
    return os.path.expanduser(os.environ.get("AIRFLOW_HOME") or "~/airflow")


def conn_id() -> str:
    """The connection every example task uses: $SHORTINT_CONN_ID, else ``shortint_default``.

    Any connection of type ``shortint`` (REST) or ``futu_opend`` (OpenD) works, e.g.
    ``SHORTINT_CONN_ID=futu_opend_default`` to load through the OpenD gateway.
    """
    return os.environ.get("SHORTINT_CONN_ID") or DEFAULT_CONN_ID


def table_format() -> str:
    """The lake's format: $SHORTINT_TABLE_FORMAT, else ``parquet``; ``delta`` (``SHORTINT_LAKE_PATH`` a
    folder or ``s3://conn@bucket/key``) or ``iceberg`` (``SHORTINT_LAKE_PATH`` is ``namespace.table`` in
    the catalog of the ``iceberg_default`` connection). Read at parse time, like the lake path."""
    value = (os.environ.get("SHORTINT_TABLE_FORMAT") or "parquet").strip().lower()
    if value not in ("parquet", "delta", "iceberg"):
        raise ValueError(f"SHORTINT_TABLE_FORMAT must be parquet, delta or iceberg, got {value!r}")
    return value


def default_lake_path() -> str:
    """The lake the example DAGs write and read: $SHORTINT_LAKE_PATH, else {AIRFLOW_HOME}/shortint_lake.

    Any value the operator accepts works (local path, file://, s3://conn@bucket/key).
    """
    return os.environ.get("SHORTINT_LAKE_PATH") or os.path.join(_airflow_home(), "shortint_lake")


def default_report_dir() -> str:
    """Where shortint_report writes: $SHORTINT_REPORT_DIR, else {AIRFLOW_HOME}/shortint_reports."""
    return os.environ.get("SHORTINT_REPORT_DIR") or os.path.join(_airflow_home(), "shortint_reports")


def fail_if_rejected(summaries: Iterable[Mapping[str, Any] | None]) -> None:
    """Fail the task, without retry, naming every symbol the API rejected in the loads' summaries.

    The loads run with ``on_symbol_error="warn"``: they succeed, so Airflow keeps their asset events,
    and this check, in a later task, still fails the DAG run.
    """
    failed: dict[str, str] = {}
    for summary in summaries:
        failed.update((summary or {}).get("failed") or {})
    if failed:
        from airflow.sdk.exceptions import AirflowFailException

        text = "; ".join(f"{symbol}: {reason}" for symbol, reason in sorted(failed.items()))
        raise AirflowFailException(
            f"{len(failed)} symbol(s) rejected by the API (the others are committed and announced): {text}"
        )
