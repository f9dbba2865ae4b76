"""shortint_backfill: load the whole available short-interest history of a universe into the lake.

Manual DAG (no schedule). The universe is split into chunks; each chunk is one mapped
``ShortInterestToParquetOperator`` task (``mode="full"``) in the ``shortint_api`` pool, and every task
draws from the same request budget (connection extra ``rate_limit_state_dir``; see docs/DAGS.md).
The chunks only *stage* their rows (``staging="{{ run_id }}"``: durable files under the lake's
``_staging/``, which no reader sees); ``commit`` then writes every partition of the lake once for the
whole run, whatever the number of chunks, also when a chunk failed (what the others staged is kept).
``summarize`` adds the chunks and the commit up and emits one asset event per market that got rows
(through an AssetAlias, since the lake path is a run parameter), which triggers ``shortint_report``
when it is the default lake; a re-run that wrote nothing emits none. ``check_rejected`` then fails the
run if the API rejected a symbol: the loads only warn, so the rows committed are announced all the same.

Trigger with e.g.::

    airflow dags trigger shortint_backfill --conf '{"symbols": "HK.00700,US.AAPL", "chunk_size": 10}'
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import AssetAlias, Param, dag, task

from airflow_provider_shortint.examples.settings import (
    API_POOL,
    DEFAULT_UNIVERSE,
    conn_id,
    default_lake_path,
    fail_if_rejected,
    table_format,
)
from airflow_provider_shortint.markets import MARKET_CODES
from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator

LAKE_ALIAS = "shortint_backfill_lake"
TABLE_FORMAT = table_format()
DEFAULT_SYMBOLS = ",".join(symbol for market in MARKET_CODES for symbol in DEFAULT_UNIVERSE[market])


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
            default_lake_path(),
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
        # Parquet: every chunk stages, `commit` writes each partition once. A table commits each chunk.
        staging="{{ run_id }}" if TABLE_FORMAT == "parquet" else None,
        table_format=TABLE_FORMAT,
        shortint_conn_id=conn_id(),
        pool=API_POOL,
        # A rejected symbol is reported by `check_rejected` once; the rest of its chunk is committed anyway,
        # and the task succeeds, so the rows it wrote are announced.
        on_symbol_error="warn",
    ).expand(symbols=chunks)

    # all_done: a chunk that failed outright does not hold back what the others staged.
    @task(trigger_rule="all_done")
    def commit(params: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
        """Write what every chunk staged under this run into the lake, each partition once (a Delta or
        Iceberg table: nothing to do, each chunk committed its own rows)."""
        from airflow_provider_shortint.lake import ParquetLake, open_lake

        lake = open_lake(params["lake_path"], TABLE_FORMAT)
        if not isinstance(lake, ParquetLake):
            return {}
        result = lake.commit_staged(str(run_id))
        committed = {
            "rows_written": result.rows_written,
            "rows_unchanged": result.rows_unchanged,
            "rows_written_by_market": result.rows_written_by_market,
            "partitions_written": list(result.partitions_written),
            "partitions_unchanged": result.partitions_unchanged,
            "latest_trade_date": result.latest_trade_date,
            "conflicts": result.conflicts,
            "quarantined": list(result.quarantined),
        }
        print(f"committed: {committed}")
        return committed

    @task(outlets=[AssetAlias(LAKE_ALIAS)], trigger_rule="all_done")
    def summarize(
        summaries: list[dict[str, Any]],
        committed: dict[str, Any] | None,
        params: dict[str, Any],
        outlet_events: Any,
    ) -> dict[str, Any]:
        """Totals over the chunks that finished and the commit; one asset event per market that got rows."""
        from airflow_provider_shortint.lineage import lake_assets

        # One slice fetches every chunk's summary (a chunk that failed pushed none); iterating a mapped
        # XCom would probe one past the end (an "XCom not found" log).
        done = [s for s in summaries[0:] if s]
        if not committed:  # a table: each chunk committed its rows
            committed = {"rows_written": sum(s.get("rows_written", 0) for s in done), "latest_trade_date": {}}
            committed["rows_written_by_market"] = by_market = {}
            committed["partitions_written"] = []
            for summary in done:
                for market, rows in (summary.get("rows_written_by_market") or {}).items():
                    by_market[market] = by_market.get(market, 0) + rows
                for market, day in (summary.get("latest_trade_date") or {}).items():
                    latest = committed["latest_trade_date"]
                    latest[market] = max(latest.get(market, ""), day)
        by_market = dict(committed.get("rows_written_by_market") or {})
        totals: dict[str, Any] = {
            "chunks": len(done),
            "symbols": sum(s.get("symbols", 0) for s in done),
            "requests": sum(s.get("requests", 0) for s in done),
            "rows_staged": sum(s.get("rows_staged", 0) for s in done),
            "rows_written": committed.get("rows_written", 0),
            "rows_written_by_market": by_market,
            # Each partition is written once by the commit, whatever the number of chunks.
            "partitions_written": len(committed.get("partitions_written") or []),
            "latest_trade_date": dict(committed.get("latest_trade_date") or {}),
            "failed": {},
        }
        for summary in done:
            totals["failed"].update(summary.get("failed") or {})
        print(f"backfill totals: {totals}")
        assets = lake_assets(params["lake_path"], TABLE_FORMAT)
        for asset in dict.fromkeys(assets.values()):  # a table is one Asset for both markets
            markets = [m for m, a in assets.items() if a == asset and by_market.get(m, 0) > 0]
            if markets:  # an event means new data: none for an unchanged market
                outlet_events[AssetAlias(LAKE_ALIAS)].add(
                    asset,
                    extra={
                        "rows_written": sum(by_market[m] for m in markets),
                        "latest_trade_date": max(totals["latest_trade_date"].get(m) or "" for m in markets),
                    },
                )
        return totals

    @task
    def check_rejected(totals: dict[str, Any]) -> None:
        """Fail the run, without retry, if the API rejected a symbol (the others are in the lake)."""
        fail_if_rejected([totals])

    committed = commit()
    load >> committed
    check = check_rejected(summarize(load.output, committed))
    load >> check  # a chunk that failed fails the run, although `commit` and `summarize` ran


shortint_backfill()
