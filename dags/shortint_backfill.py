"""shortint_backfill: load the whole available short-interest history of a universe into the lake.

Manual DAG (no schedule). The universe is split into chunks; each chunk is one mapped
``ShortInterestToParquetOperator`` task (``mode="full"``) in the ``shortint_api`` pool, and every task
draws from the same request budget (connection extra ``rate_limit_state_dir``; see docs/DAGS.md).
A final task emits asset events for the lake actually written (through an AssetAlias, since the lake
path is a run parameter), which triggers ``shortint_report`` when it is the default lake.

Trigger with e.g.::

    airflow dags trigger shortint_backfill --conf '{"symbols": "HK.00700,US.AAPL", "chunk_size": 10}'
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from _shortint_common import API_POOL, CONN_ID, DEFAULT_LAKE_PATH, DEFAULT_UNIVERSE, MARKETS
from airflow.sdk import AssetAlias, Param, dag, task

from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator

LAKE_ALIAS = "shortint_backfill_lake"
DEFAULT_SYMBOLS = ",".join(symbol for market in MARKETS for symbol in DEFAULT_UNIVERSE[market])


@dag(
    dag_id="shortint_backfill",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["shortint", "example"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=1)},
    params={
        "symbols": Param(
            DEFAULT_SYMBOLS,
            type=["string", "array"],
            description="Symbols to backfill: a list or a comma-separated string (HK.00700, US.AAPL...).",
        ),
        "lake_path": Param(
            DEFAULT_LAKE_PATH,
            type="string",
            minLength=1,
            description="Lake root: local path, file:// or s3://conn@bucket/key "
            "(default $SHORTINT_LAKE_PATH or {AIRFLOW_HOME}/shortint_lake).",
        ),
        "chunk_size": Param(
            10, type="integer", minimum=1, description="Symbols per mapped task (one task per chunk)."
        ),
    },
)
def shortint_backfill() -> None:
    @task
    def split_universe(params: dict[str, Any]) -> list[list[str]]:
        """Validate the symbols (no request is spent on a typo) and cut them into chunks."""
        from airflow_provider_shortint.symbols import parse_symbols

        symbols = parse_symbols(params["symbols"])
        size = int(params["chunk_size"])
        chunks = [symbols[i : i + size] for i in range(0, len(symbols), size)]
        print(f"{len(symbols)} symbol(s) in {len(chunks)} chunk(s) of up to {size}")
        return chunks

    chunks = split_universe()

    load = ShortInterestToParquetOperator.partial(
        task_id="load_full_history",
        lake_path="{{ params.lake_path }}",
        mode="full",
        shortint_conn_id=CONN_ID,
        pool=API_POOL,
        # A rejected symbol is reported by `summarize` once; the rest of its chunk is committed anyway.
        on_symbol_error="warn",
    ).expand(symbols=chunks)

    @task(outlets=[AssetAlias(LAKE_ALIAS)])
    def summarize(
        summaries: list[dict[str, Any]], params: dict[str, Any], outlet_events: Any
    ) -> dict[str, Any]:
        """Totals over the chunks; asset events for the lake written; fail if any symbol was rejected."""
        from airflow_provider_shortint.assets import lake_assets

        # Index, not iterate: iterating a mapped XCom probes one past the end (an "XCom not found" log).
        summaries = [summaries[i] for i in range(len(summaries))]
        totals: dict[str, Any] = {
            "chunks": len(summaries),
            "symbols": sum(s.get("symbols", 0) for s in summaries),
            "requests": sum(s.get("requests", 0) for s in summaries),
            "rows_written": sum(s.get("rows_written", 0) for s in summaries),
            # A partition that two chunks both wrote counts twice: these are writes, not distinct files.
            "partition_writes": sum(s.get("partitions_written", 0) for s in summaries),
            "latest_trade_date": {},
            "failed": {},
        }
        by_market: dict[str, int] = {}
        for summary in summaries:
            for market, day in (summary.get("latest_trade_date") or {}).items():
                totals["latest_trade_date"][market] = max(totals["latest_trade_date"].get(market, ""), day)
            for market, rows in (summary.get("rows_written_by_market") or {}).items():
                by_market[market] = by_market.get(market, 0) + rows
            totals["failed"].update(summary.get("failed") or {})
        print(f"backfill totals: {totals}")
        for market, asset in lake_assets(params["lake_path"]).items():
            if market in totals["latest_trade_date"]:
                outlet_events[AssetAlias(LAKE_ALIAS)].add(
                    asset,
                    extra={
                        "rows_written": by_market.get(market, 0),
                        "latest_trade_date": totals["latest_trade_date"][market],
                    },
                )
        if totals["failed"]:
            from airflow.sdk.exceptions import AirflowFailException

            # No retry: the API said no; the other symbols are in the lake already.
            failed = totals["failed"]
            raise AirflowFailException(f"{len(failed)} symbol(s) rejected by the API: {failed}")
        return totals

    summarize(load.output)


shortint_backfill()
