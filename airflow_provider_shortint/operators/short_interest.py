"""ShortInterestToParquetOperator: HK/US short interest history into the partitioned Parquet lake."""

from __future__ import annotations

import ast
import datetime as dt
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_shortint.assets import lake_assets, lake_uri
from airflow_provider_shortint.exceptions import (
    InvalidParameterError,
    InvalidSymbolError,
    RejectedSymbolsError,
    UnsupportedSecurityError,
)
from airflow_provider_shortint.markets import MARKETS, market_of
from airflow_provider_shortint.symbols import parse_symbols
from airflow_provider_shortint.validation import MAX_COUNT, is_template, positive_int, to_date, validate_count

if TYPE_CHECKING:
    import pyarrow as pa
    from airflow.sdk import Context

    from airflow_provider_shortint.hooks.short_interest import ShortInterestHook
    from airflow_provider_shortint.lake import ParquetLake

MODES = ("incremental", "full")
SYMBOL_ERROR_POLICIES = ("fail", "warn")
# Days between two records, to size the first page to the expected gap (HK weekly, US twice a month).
# Errors that condemn one symbol, not the run: collected, reported once at the end.
SYMBOL_ERRORS = (InvalidSymbolError, UnsupportedSecurityError, InvalidParameterError)


class ShortInterestToParquetOperator(BaseOperator):
    """Fetch short interest for ``symbols`` and upsert it into the lake at ``lake_path`` (DESIGN.md §5-§6).

    ``mode="incremental"`` asks only for what the lake lacks (one request for an up-to-date symbol);
    ``mode="full"`` re-reads the whole available history. Symbols are fetched and committed in batches
    of ``batch_size``, so memory follows the batch and a failure keeps every batch already written.
    Returns a small summary dict (XCom), never the data.
    """

    template_fields: Sequence[str] = ("symbols", "lake_path", "since")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        symbols: str | Sequence[str],
        lake_path: str,
        mode: str = "incremental",
        since: str | dt.date | None = None,
        page_size: int = MAX_COUNT,
        shortint_conn_id: str = "shortint_default",
        batch_size: int = 50,
        on_symbol_error: str = "fail",
        **kwargs: Any,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if on_symbol_error not in SYMBOL_ERROR_POLICIES:
            raise ValueError(
                f"on_symbol_error must be one of {SYMBOL_ERROR_POLICIES}, got {on_symbol_error!r}"
            )
        validate_count(page_size, "page_size")
        positive_int(batch_size, "batch_size")
        # Values without Jinja are checked now, so a typo fails the DAG import instead of a run.
        if not is_template(symbols) and not (
            isinstance(symbols, (list, tuple)) and any(map(is_template, symbols))
        ):
            parse_symbols(_literal_list(symbols))
        if not is_template(since):
            to_date(since, "since")
        if "outlets" not in kwargs and isinstance(lake_path, str) and not is_template(lake_path):
            kwargs["outlets"] = list(lake_assets(lake_path).values())
        super().__init__(**kwargs)
        self.symbols = symbols
        self.lake_path = lake_path
        self.mode = mode
        self.since = since
        self.page_size = page_size
        self.shortint_conn_id = shortint_conn_id
        self.batch_size = batch_size
        self.on_symbol_error = on_symbol_error

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_shortint.hooks.short_interest import ShortInterestHook
        from airflow_provider_shortint.lake import open_lake

        # Everything the user typed is checked before a single rate-limited request is spent.
        symbols = parse_symbols(_literal_list(self.symbols))
        since = to_date(self.since, "since")
        lake = open_lake(self.lake_path)
        hook = ShortInterestHook(shortint_conn_id=self.shortint_conn_id)
        try:
            summary = self._run(hook, lake, symbols, since)
        finally:
            hook.close()
        self._annotate_assets(context, summary)
        failed = summary["failed"]
        if failed:
            text = "; ".join(f"{symbol}: {reason}" for symbol, reason in failed.items())
            message = (
                f"{len(failed)} of {len(symbols)} symbol(s) rejected by the API (others committed): {text}"
            )
            if self.on_symbol_error == "fail":
                raise RejectedSymbolsError(message, failed)
            self.log.warning("%s", message)
        return summary

    def _run(
        self, hook: ShortInterestHook, lake: ParquetLake, symbols: list[str], since: dt.date | None
    ) -> dict[str, Any]:
        stored = lake.latest_dates(symbols) if self.mode == "incremental" else {}
        totals = _Totals(rows_written=dict.fromkeys(sorted({market_of(s) for s in symbols}), 0))
        for symbol, day in stored.items():
            totals.see_date(market_of(symbol), day.isoformat())
        started = time.monotonic()
        for start in range(0, len(symbols), self.batch_size):
            tables: list[pa.Table] = []
            try:
                for offset, symbol in enumerate(symbols[start : start + self.batch_size], start=start + 1):
                    before = hook.requests_made
                    try:
                        table = self._fetch(hook, symbol, _later(since, stored.get(symbol)))
                    except SYMBOL_ERRORS as err:
                        reason = err.message.removeprefix(f"{symbol}: ")
                        totals.failed[symbol] = f"{err.error_code}: {reason}"
                        self.log.warning(
                            "[%d/%d] %s: rejected (%s)", offset, len(symbols), symbol, err.message
                        )
                        continue
                    finally:
                        totals.requests += hook.requests_made - before
                    tables.append(table)
                    totals.rows_fetched += table.num_rows
                    self.log.info(
                        "[%d/%d] %s: %d row(s), %d request(s) · ETA %s",
                        offset,
                        len(symbols),
                        symbol,
                        table.num_rows,
                        hook.requests_made - before,
                        _eta(started, offset, len(symbols)),
                    )
            finally:
                # Commit what this batch fetched even when a symbol failed hard: a retry resumes from here.
                self._commit(lake, tables, totals)
        return totals.summary(lake.uri, self.mode, len(symbols))

    def _fetch(self, hook: ShortInterestHook, symbol: str, bound: dt.date | None) -> pa.Table:
        """Rows of ``symbol`` newer than ``bound``, asking for no page beyond the bound."""
        first = self.page_size
        if bound is not None:
            # One more than the records expected since the bound, so the first page reaches the bound.
            gap_days = max((dt.datetime.now(dt.UTC).date() - bound).days, 0)
            first = min(self.page_size, math.ceil(gap_days / MARKETS[market_of(symbol)].cadence_days) + 2)
        return hook.get_history(symbol, since=bound, page_size=self.page_size, first_page_size=first)

    def _commit(self, lake: ParquetLake, tables: list[pa.Table], totals: _Totals) -> None:
        """Upsert one batch, market by market so the asset events can say how many rows each got."""
        import pyarrow.compute as pc

        from airflow_provider_shortint.records import concat_tables

        table = concat_tables(tables)
        if table.num_rows == 0:
            return
        for market in sorted({market_of(symbol) for symbol in table.column("symbol").unique().to_pylist()}):
            result = lake.upsert(table.filter(pc.starts_with(table.column("symbol"), f"{market}.")))
            totals.rows_written[market] = totals.rows_written.get(market, 0) + result.rows_written
            totals.partitions.update(result.partitions_written)
            for name, day in result.latest_trade_date.items():
                totals.see_date(name, day)

    def _annotate_assets(self, context: Context, summary: dict[str, Any]) -> None:
        """Attach rows written and the latest trade date to this run's asset events."""
        events = context.get("outlet_events")
        if not self.outlets or events is None:
            return
        assets = lake_assets(self.lake_path)
        for market, asset in assets.items():
            if asset in self.outlets:
                extra = events[asset].extra
                extra["rows_written"] = summary["rows_written_by_market"].get(market, 0)
                extra["latest_trade_date"] = summary["latest_trade_date"].get(market)
                extra["lake"] = lake_uri(self.lake_path)


@dataclass
class _Totals:
    """What one run did, kept while it runs and turned into the XCom summary at the end."""

    requests: int = 0
    rows_fetched: int = 0
    rows_written: dict[str, int] = field(default_factory=dict)  # market -> rows new or changed
    partitions: set[str] = field(default_factory=set)  # "market=HK/dt=..." written
    latest_trade_date: dict[str, str] = field(default_factory=dict)  # market -> newest ISO date
    failed: dict[str, str] = field(default_factory=dict)  # symbol -> why the API rejected it

    def see_date(self, market: str, day: str) -> None:
        self.latest_trade_date[market] = max(self.latest_trade_date.get(market, ""), day)

    def summary(self, lake: str, mode: str, symbols: int) -> dict[str, Any]:
        return {
            "lake": lake,
            "mode": mode,
            "symbols": symbols,
            "requests": self.requests,
            "rows_fetched": self.rows_fetched,
            "rows_written": sum(self.rows_written.values()),
            "rows_written_by_market": dict(sorted(self.rows_written.items())),
            "partitions_written": len(self.partitions),
            "latest_trade_date": dict(sorted(self.latest_trade_date.items())),
            "failed": self.failed,
        }


def _later(a: dt.date | None, b: dt.date | None) -> dt.date | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


def _eta(started: float, done: int, total: int) -> str:
    remaining = (time.monotonic() - started) / done * (total - done)
    return f"{remaining / 60:.0f} min" if remaining >= 90 else f"{remaining:.0f} s"


def _literal_list(value: object) -> object:
    """A templated list often renders to its text ("['HK.00700', 'US.AAPL']"): read it back as a list."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            parsed = ast.literal_eval(value.strip())
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            shown = value if len(value) <= 80 else value[:77] + "..."
            raise InvalidParameterError(f"symbols {shown!r} looks like a list but is not one") from None
        return parsed
    return value
