"""Constants shared by the shortint example DAGs (standard library only: imported on every parse).

Nothing here touches the network, the lake or the metadata DB. The two paths below are read from the
environment when the DAG files are parsed, so the DAG processor, the workers and the CLI must see the
same ``SHORTINT_LAKE_PATH`` (the lake's Asset URIs are derived from it).
"""

from __future__ import annotations

import os


def _airflow_home() -> str:
    return os.path.expanduser(os.environ.get("AIRFLOW_HOME") or "~/airflow")


#: The lake the example DAGs write and read: $SHORTINT_LAKE_PATH, else {AIRFLOW_HOME}/shortint_lake.
#: Any value the operator accepts works (local path, file://, s3://conn@bucket/key).
DEFAULT_LAKE_PATH: str = os.environ.get("SHORTINT_LAKE_PATH") or os.path.join(
    _airflow_home(), "shortint_lake"
)

#: Where shortint_report writes: $SHORTINT_REPORT_DIR, else {AIRFLOW_HOME}/shortint_reports (local).
DEFAULT_REPORT_DIR: str = os.environ.get("SHORTINT_REPORT_DIR") or os.path.join(
    _airflow_home(), "shortint_reports"
)

#: Connection id every example task uses.
CONN_ID = "shortint_default"

#: Airflow pool that caps how many API-calling tasks run at once (create it: see docs/DAGS.md).
API_POOL = "shortint_api"

MARKETS: tuple[str, ...] = ("HK", "US")

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

#: Which column measures short interest in each market (HK: share of turnover; US: share of float).
SHORT_METRIC: dict[str, str] = {"HK": "aggregated_short_ratio", "US": "short_percent"}
