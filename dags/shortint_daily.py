"""shortint_daily: per market, wait for a new trading date, then load what the lake lacks.

For HK and US independently (one task group each):

1. ``wait_for_new_record``: a deferrable ``ShortInterestNewRecordSensor`` on the market's bellwether
   (HK.00700, US.AAPL). With ``lake_path`` it waits for a record newer than the lake holds for that
   symbol; it waits in the triggerer, holding no worker slot. HK publishes weekly and US twice a month,
   so on most days nothing comes: after ``SENSOR_TIMEOUT`` the sensor is skipped (``soft_fail``) and so
   is the load.
2. ``load_incremental``: ``ShortInterestToParquetOperator(mode="incremental")`` on the market's
   universe, in the ``shortint_api`` pool. When it wrote rows, it emits an asset event on that market's
   lake Asset, which schedules ``shortint_report``; a load that found nothing new emits none.
3. ``check_rejected``: fails the run if the API rejected a symbol of the universe. The load only warns,
   so the rows it committed for the other symbols are announced all the same.

Universe of a market, first found wins: the DAG param ``hk_symbols`` / ``us_symbols`` (list or
comma-separated string), the Airflow Variable ``shortint_hk_universe`` / ``shortint_us_universe``
(comma-separated), the default list in ``airflow_provider_shortint.examples.settings``. The lake is
``$SHORTINT_LAKE_PATH`` (default ``{AIRFLOW_HOME}/shortint_lake``), fixed at parse time because it names
the Assets.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import DAG, Param, TaskGroup, task

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
from airflow_provider_shortint.lineage import lake_assets
from airflow_provider_shortint.markets import MARKET_CODES
from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator
from airflow_provider_shortint.sensors.short_interest import ShortInterestNewRecordSensor

#: How long a run waits for a new record before giving up for the day (the task is then skipped).
SENSOR_TIMEOUT = dt.timedelta(hours=6)
LAKE_PATH = default_lake_path()
TABLE_FORMAT = table_format()
#: The weekday (Friday) on which a run also compacts a Delta or Iceberg table and clears old versions.
MAINTENANCE_WEEKDAY = 4


def universe_template(market: str) -> str:
    """Jinja for the market's symbols: DAG param, else Airflow Variable, else the default list.

    Rendered at run time only: parsing the file reads no Variable.
    """
    param = f"{market.lower()}_symbols"
    default = ",".join(DEFAULT_UNIVERSE[market])
    return f"{{{{ params.{param} or var.value.get('{UNIVERSE_VARIABLE[market]}', '{default}') }}}}"


with DAG(
    dag_id="shortint_daily",
    # Weekdays after the US close; HK data of the day is out long before.
    schedule="30 22 * * 1-5",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["shortint", "example"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=2)},
    params={
        f"{market.lower()}_symbols": Param(
            None,
            type=["null", "string", "array"],
            description=f"{market} universe for this run; empty: Variable {UNIVERSE_VARIABLE[market]}, "
            f"else the default ({len(DEFAULT_UNIVERSE[market])} symbols).",
        )
        for market in MARKET_CODES
    },
) as shortint_daily:
    assets = lake_assets(LAKE_PATH, TABLE_FORMAT)
    loads = []
    for market in MARKET_CODES:
        with TaskGroup(group_id=market.lower(), tooltip=f"{market}: new trading date -> incremental load"):
            wait = ShortInterestNewRecordSensor(
                task_id="wait_for_new_record",
                symbol=BELLWETHER[market],
                lake_path=LAKE_PATH,
                table_format=TABLE_FORMAT,
                shortint_conn_id=conn_id(),
                deferrable=True,
                # None: the triggerer's $SHORTINT_POKE_INTERVAL (default 15 minutes, one request a poll).
                poke_interval=None,
                timeout=SENSOR_TIMEOUT.total_seconds(),
                soft_fail=True,
            )
            load = ShortInterestToParquetOperator(
                task_id="load_incremental",
                symbols=universe_template(market),
                lake_path=LAKE_PATH,
                table_format=TABLE_FORMAT,
                mode="incremental",
                shortint_conn_id=conn_id(),
                pool=API_POOL,
                # Only this market's Asset, and an event only when rows were written.
                outlets=[assets[market]],
                # Rejected symbols fail `check_rejected`, not the load: a failed task's events are dropped.
                on_symbol_error="warn",
            )

            @task
            def check_rejected(summary: dict[str, Any]) -> None:
                """Fail the run, without retry, if the API rejected a symbol of the universe."""
                fail_if_rejected([summary])

            wait >> load
            check_rejected(load.output)
            loads.append(load)

    @task(trigger_rule="all_done")
    def maintain_table(logical_date: Any = None) -> dict[str, Any]:
        """Weekly, for a Delta or Iceberg table: compact small files and clear versions past the retention
        (7 days: readers and time travel within a week keep working). The Parquet lake needs none."""
        from airflow.sdk.exceptions import AirflowSkipException

        if TABLE_FORMAT == "parquet":
            raise AirflowSkipException("the Parquet lake needs no maintenance (one file per market and year)")
        if logical_date is not None and logical_date.weekday() != MAINTENANCE_WEEKDAY:
            raise AirflowSkipException("table maintenance runs on Fridays")
        import dataclasses

        from airflow_provider_shortint.lake.formats import open_table

        result = dataclasses.asdict(open_table(LAKE_PATH, TABLE_FORMAT).maintain())
        result.pop("deleted", None)  # the file list can be long; the counts are in the result
        print(f"maintenance: {result}")
        return result

    loads >> maintain_table()
