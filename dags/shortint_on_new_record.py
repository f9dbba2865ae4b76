"""shortint_on_new_record: event-driven loads, scheduled by an AssetWatcher instead of a clock.

For each market, the triggerer runs a ``ShortInterestNewRecordEventTrigger`` on the bellwether
(HK.00700, US.AAPL): it polls the API every ``$SHORTINT_POKE_INTERVAL`` seconds of the triggerer
(default 15 minutes, one request per poll) and fires once per new trade date. The event lands on the
market's watched Asset (``shortint_new_record_hk``, ``..._us``), which starts a run of this DAG:

1. ``pick_universe``: the markets whose bellwether fired (both on a manual run) and their universes
   (Airflow Variable ``shortint_hk_universe`` / ``shortint_us_universe``, else the default list).
2. ``load_incremental``: ``ShortInterestToParquetOperator(mode="incremental")`` on those symbols; the
   markets that got rows emit their lake Asset event, which schedules ``shortint_report``.
3. ``check_rejected``: fails the run if the API rejected a symbol (the rest is committed and announced).

An alternative to ``shortint_daily``: no sensor waiting in a run, no run on a quiet day. Deploying it
fires nothing for data that already exists (the first poll only records the newest date). Needs a
running triggerer; enable one of the two DAGs, not both, or every new date is loaded twice.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Asset, AssetAny, AssetWatcher, dag, task

from airflow_provider_shortint.examples.settings import (
    API_POOL,
    BELLWETHER,
    DEFAULT_UNIVERSE,
    UNIVERSE_VARIABLE,
    conn_id,
    default_lake_path,
    fail_if_rejected,
    table_format,
)
from airflow_provider_shortint.markets import MARKET_CODES
from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator
from airflow_provider_shortint.triggers.short_interest import ShortInterestNewRecordEventTrigger


def new_record_asset(market: str) -> Asset:
    """The Asset a new trade date of ``market`` lands on, watched by the event trigger on its bellwether."""
    # poke_interval=None: the triggerer's $SHORTINT_POKE_INTERVAL (default 15 minutes) sets the pace.
    trigger = ShortInterestNewRecordEventTrigger(
        symbol=BELLWETHER[market], shortint_conn_id=conn_id(), poke_interval=None
    )
    # Named, with no URI: an unknown URI scheme makes Airflow load every provider's URI handlers
    # (boto3, requests: ~0.8 s) each time the file is parsed in a fresh process.
    return Asset(
        name=f"shortint_new_record_{market.lower()}",
        watchers=[AssetWatcher(name=f"shortint_{market.lower()}_bellwether", trigger=trigger)],
    )


NEW_RECORD_ASSETS = {market: new_record_asset(market) for market in MARKET_CODES}


@dag(
    dag_id="shortint_on_new_record",
    schedule=AssetAny(*NEW_RECORD_ASSETS.values()),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["shortint", "example"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=2)},
)
def shortint_on_new_record() -> None:
    @task
    def pick_universe(triggering_asset_events: Any = None) -> list[str]:
        """The universes of the markets that published a new date (all markets on a manual run)."""
        from airflow.sdk import Variable

        fired = {
            market
            for market, asset in NEW_RECORD_ASSETS.items()
            for events in (triggering_asset_events or {}).values()
            for event in events
            if event.asset.uri == asset.uri
        }
        symbols: list[str] = []
        for market in sorted(fired) or MARKET_CODES:
            default = ",".join(DEFAULT_UNIVERSE[market])
            universe = Variable.get(UNIVERSE_VARIABLE[market], default=default)
            symbols += [s.strip() for s in str(universe).split(",") if s.strip()]
        print(f"markets {sorted(fired) or list(MARKET_CODES)}: {len(symbols)} symbol(s)")
        return symbols

    load = ShortInterestToParquetOperator(
        task_id="load_incremental",
        symbols=pick_universe(),
        lake_path=default_lake_path(),
        table_format=table_format(),
        mode="incremental",
        shortint_conn_id=conn_id(),
        pool=API_POOL,
        on_symbol_error="warn",
    )

    @task
    def check_rejected(summary: dict[str, Any]) -> None:
        """Fail the run, without retry, if the API rejected a symbol."""
        fail_if_rejected([summary])

    check_rejected(load.output)


shortint_on_new_record()
