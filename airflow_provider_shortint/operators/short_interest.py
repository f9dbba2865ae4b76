"""ShortInterestToParquetOperator: HK/US short interest history into the lake (the partitioned Parquet
lake, or a Delta Lake or Iceberg table: ``table_format``)."""

from __future__ import annotations

import ast
import datetime as dt
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_shortint.exceptions import (
    InvalidParameterError,
    InvalidSymbolError,
    RejectedSymbolsError,
    UnsupportedSecurityError,
)
from airflow_provider_shortint.lake import ParquetLake
from airflow_provider_shortint.lake.location import lake_uri
from airflow_provider_shortint.lineage import lake_assets
from airflow_provider_shortint.markets import MARKETS, market_of
from airflow_provider_shortint.symbols import parse_symbols
from airflow_provider_shortint.text import shown
from airflow_provider_shortint.transports.paging import validate_count
from airflow_provider_shortint.transports.rest.settings import REST_MAX_COUNT
from airflow_provider_shortint.validation import is_template, positive_int, to_date

if TYPE_CHECKING:
    import pyarrow as pa
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

    from airflow_provider_shortint.hooks.base import ShortInterestBaseHook
    from airflow_provider_shortint.lake import Lake, UpsertResult

MODES = ("incremental", "full")
SYMBOL_ERROR_POLICIES = ("fail", "warn")
# Errors that condemn one symbol, not the run: collected, reported once at the end.
SYMBOL_ERRORS = (InvalidSymbolError, UnsupportedSecurityError, InvalidParameterError)
#: Default of ``commit_rows``: about 11 MiB of rows in Arrow wait in memory at most before staging.
COMMIT_ROWS = 100_000


class ShortInterestToParquetOperator(BaseOperator):
    """Fetch short interest for ``symbols`` and upsert it into the lake at ``lake_path`` (DESIGN.md §5-§6).

    ``mode="incremental"`` asks only for what the lake lacks (one request for an up-to-date symbol);
    ``mode="full"`` re-reads the whole available history. The lake is written once per run, at the
    end, each touched partition once. Until then fetched rows wait in memory; every ``batch_size``
    symbols (or ``commit_rows`` rows) they are *staged*, made durable under the lake's ``_staging/``
    where no reader sees them, so memory follows the batch and a crash loses at most one batch: the
    task's next attempt commits what the crashed one staged before it asks the lake what is missing.
    A run that fails still commits what it fetched before it fails. With ``staging`` the run only
    stages, under that name, and a later task commits every writer's rows at once
    (``ParquetLake.commit_staged``, as ``shortint_backfill`` does). Returns a small summary dict
    (XCom), never the data.

    Asset events mean new data: of the lake's market Assets among the outlets (by default both markets
    when ``lake_path`` has no template), only markets that got rows in this run get an event, with
    ``rows_written``, ``latest_trade_date`` and ``lake`` in its extra. Airflow drops the events of a
    failed task: to announce a partial load, use ``on_symbol_error="warn"`` and fail the run in a later
    task (as ``shortint_backfill`` does). With the OpenLineage provider installed, the task reports the
    API per market as inputs and the lake per market as outputs (schema, rows and files written; with
    ``staging``, the rows it staged for the commit).

    :param symbols: ``"HK.00700,US.AAPL"`` or a list (templated); normalised and validated before any
        request, and at DAG parse time when it has no template.
    :param lake_path: lake root (templated): an absolute local path, ``file://`` URL or an
        ``ObjectStoragePath`` URL such as ``s3://aws_conn@bucket/key``.
    :param mode: ``"incremental"`` (only dates newer than the lake holds per symbol) or ``"full"``.
    :param since: ISO date (templated); only records with a later ``trade_date`` are fetched.
    :param page_size: records per request, 1 to 90 (the REST API's maximum, the default); over an OpenD
        connection it is capped at the SDK's 50.
    :param shortint_conn_id: the Airflow connection of the API.
    :param batch_size: symbols fetched between two stagings at most (what a crash can lose).
    :param commit_rows: rows fetched between two stagings at most (what memory holds, besides one
        symbol's history).
    :param staging: a staging run name (templated, e.g. ``"{{ run_id }}"``): stage everything under it
        and write no partition; ``None`` (default): the run commits its own rows at the end. Parquet
        lake only.
    :param table_format: ``"parquet"`` (the default: the partitioned Parquet lake), ``"delta"`` (a Delta
        Lake table at ``lake_path``) or ``"iceberg"`` (``lake_path`` is ``namespace.table`` in the
        catalog of ``catalog_conn_id``; extras ``[delta]``, ``[iceberg]``). A table commits each batch
        (its commit protocol keeps concurrent writers apart) and is announced as one Asset.
    :param catalog_conn_id: ``table_format="iceberg"``: the ``iceberg_catalog`` connection (default
        ``iceberg_default``).
    :param on_symbol_error: what a symbol the API rejects (-7, -8, -3) does once the rest is committed:
        ``"fail"`` fails the task naming every rejected symbol; ``"warn"`` logs them and succeeds (they
        are in the summary's ``failed``).
    """

    template_fields: Sequence[str] = ("symbols", "lake_path", "since", "shortint_conn_id", "staging")
    ui_color = "#d6eaf8"
    _load_facts: _LoadFacts | None = None  # set by execute, read by the OpenLineage listener

    def __init__(
        self,
        *,
        symbols: str | Sequence[str],
        lake_path: str,
        mode: str = "incremental",
        since: str | dt.date | None = None,
        page_size: int = REST_MAX_COUNT,
        shortint_conn_id: str = "shortint_default",
        batch_size: int = 50,
        commit_rows: int = COMMIT_ROWS,
        staging: str | None = None,
        on_symbol_error: str = "fail",
        table_format: str = "parquet",
        catalog_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        from airflow_provider_shortint.lake import TABLE_FORMATS

        if table_format not in TABLE_FORMATS:
            raise InvalidParameterError(f"table_format must be one of {TABLE_FORMATS}, got {table_format!r}")
        if catalog_conn_id is not None and table_format != "iceberg":
            raise InvalidParameterError("catalog_conn_id names the catalog of table_format 'iceberg' only")
        if staging is not None and table_format != "parquet":
            raise InvalidParameterError(
                f"staging is for the Parquet lake; a {table_format} table commits each batch itself"
            )
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if on_symbol_error not in SYMBOL_ERROR_POLICIES:
            raise ValueError(
                f"on_symbol_error must be one of {SYMBOL_ERROR_POLICIES}, got {on_symbol_error!r}"
            )
        validate_count(page_size, "page_size", REST_MAX_COUNT)
        positive_int(batch_size, "batch_size")
        positive_int(commit_rows, "commit_rows")
        if staging is not None and (not isinstance(staging, str) or not staging.strip()):
            raise InvalidParameterError(f"staging must be a non-empty string or None, got {staging!r}")
        # Values without Jinja (or an XComArg) are checked now, so a typo fails the DAG import, not a run.
        if _is_literal(symbols):
            parse_symbols(_literal_list(symbols))
        if since is None or _is_literal(since):
            to_date(since, "since")
        options = {"catalog_conn_id": catalog_conn_id} if catalog_conn_id is not None else {}
        if "outlets" not in kwargs and isinstance(lake_path, str) and not is_template(lake_path):
            kwargs["outlets"] = list(dict.fromkeys(lake_assets(lake_path, table_format, **options).values()))
        super().__init__(**kwargs)
        self.table_format = table_format
        self.catalog_conn_id = catalog_conn_id
        self.symbols = symbols
        self.lake_path = lake_path
        self.mode = mode
        self.since = since
        self.page_size = page_size
        self.shortint_conn_id = shortint_conn_id
        self.batch_size = batch_size
        self.commit_rows = commit_rows
        self.staging = staging
        self.on_symbol_error = on_symbol_error

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_shortint.hooks.base import hook_for
        from airflow_provider_shortint.lake import open_lake

        # Everything the user typed is checked before a single rate-limited request is spent.
        symbols = parse_symbols(_literal_list(self.symbols))
        since = to_date(self.since, "since")
        if self.staging is not None and (not isinstance(self.staging, str) or not self.staging.strip()):
            raise InvalidParameterError(f"staging must be a non-empty string or None, got {self.staging!r}")
        lake = open_lake(self.lake_path, self.table_format, **self._table_options())
        hook = hook_for(self.shortint_conn_id)  # REST or OpenD, by the connection's type
        # The connection's settings and its budget (Redis included) are read now: a bad extra fails the
        # task here with the connection's message, instead of being blamed on every symbol in turn.
        hook.load_settings()
        _ = hook.rate_limiter
        totals = _Totals(rows_written=dict.fromkeys(sorted({market_of(s) for s in symbols}), 0))
        writer = _Writer(lake, totals, self.staging, _run_names(context, self.task_id))
        try:
            self._run(hook, writer, symbols, since, totals)
        finally:
            # Also after a failure: lineage then reports the batches that were committed.
            self._load_facts = totals.facts(
                _api_source(hook, self.shortint_conn_id),
                self.lake_path,
                _table_dataset(lake),
                staging=self.staging is not None,
            )
            hook.close()
        summary = totals.summary(lake.uri, self.mode, len(symbols))
        self._announce(context, summary)
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
        self,
        hook: ShortInterestBaseHook,
        writer: _Writer,
        symbols: list[str],
        since: dt.date | None,
        totals: _Totals,
    ) -> None:
        writer.resume()  # what a crashed attempt staged is committed before the lake is asked
        stored = writer.lake.latest_dates(symbols) if self.mode == "incremental" else {}
        for symbol, day in stored.items():
            totals.see_date(market_of(symbol), day.isoformat())
        started = time.monotonic()
        try:
            for offset, symbol in enumerate(symbols, start=1):
                before = hook.requests_made
                try:
                    table = self._fetch(hook, symbol, _later(since, stored.get(symbol)))
                except SYMBOL_ERRORS as err:
                    if err.symbol != symbol:  # not about this symbol (the connection, the run): fail
                        raise
                    reason = err.message.removeprefix(f"{symbol}: ")
                    totals.failed[symbol] = f"{err.error_code}: {reason}"
                    self.log.warning("[%d/%d] %s: rejected (%s)", offset, len(symbols), symbol, err.message)
                    continue
                finally:
                    totals.requests += hook.requests_made - before
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
                writer.add(table)
                if writer.symbols >= self.batch_size or writer.rows >= self.commit_rows:
                    writer.stage()
        finally:
            # Also after a failure: what was fetched is committed (or staged), a retry resumes from it.
            writer.finish()

    def _fetch(self, hook: ShortInterestBaseHook, symbol: str, bound: dt.date | None) -> pa.Table:
        """Rows of ``symbol`` newer than ``bound``, asking for no page beyond the bound."""
        size = min(self.page_size, hook.max_count)  # OpenD pages hold at most 50
        first = size
        if bound is not None:
            # One more than the records expected since the bound, so the first page reaches the bound.
            gap_days = max((dt.datetime.now(dt.UTC).date() - bound).days, 0)
            first = min(size, math.ceil(gap_days / MARKETS[market_of(symbol)].cadence_days) + 2)
        return hook.get_history(symbol, since=bound, page_size=size, first_page_size=first)

    def _announce(self, context: Context, summary: dict[str, Any]) -> None:
        """Asset events only for the markets that got rows, with rows written and the latest trade date."""
        if not self.outlets:
            return
        assets = lake_assets(self.lake_path, self.table_format, **self._table_options())
        written = {m: n for m, n in summary["rows_written_by_market"].items() if n > 0 and m in assets}
        # Airflow registers an event for every outlet of a task that succeeds, read from the running task:
        # an Asset without new rows leaves this run's outlets (the DAG still declares it). A table is one
        # Asset for every market: it gets an event when any market got rows.
        announced = {assets[market] for market in written}
        self.outlets = [
            outlet for outlet in self.outlets if outlet in announced or outlet not in assets.values()
        ]
        events = context.get("outlet_events")
        if events is None:
            return
        for asset in announced:
            if asset in self.outlets:
                markets = [market for market in written if assets[market] == asset]
                extra = events[asset].extra
                extra["rows_written"] = sum(written[market] for market in markets)
                extra["latest_trade_date"] = max(
                    summary["latest_trade_date"].get(market) or "" for market in markets
                )
                extra["lake"] = asset.uri if self.table_format != "parquet" else lake_uri(self.lake_path)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage[Any, Any] | None:
        """OpenLineage: the API per market read as inputs, the lake per market as outputs (rows written).

        Built from the few counts ``execute`` kept (also after a failure, for the batches committed);
        None when the task stopped before loading anything.
        """
        facts = self._load_facts
        if facts is None:
            return None
        from airflow_provider_shortint.lineage import build_lineage

        return build_lineage(
            source=facts.source,
            lake_path=facts.lake_path,
            markets=facts.markets,
            rows_written=facts.rows_written,
            files_written=facts.files_written,
            table=facts.table,
        )

    def _table_options(self) -> dict[str, Any]:
        """``open_lake``'s options: the Iceberg catalog connection, when one is named."""
        return {"catalog_conn_id": self.catalog_conn_id} if self.catalog_conn_id is not None else {}


class _Writer:
    """Where a run's fetched rows go: memory, then the lake's staging area, then the lake, once.

    Without a shared ``staging`` run, the writer stages under a name of its own (derived from the task
    instance, so the task's next attempt finds it) only when a batch fills before the run ends, and
    commits at the end: each partition is written once per run. With ``staging`` it only stages.
    """

    def __init__(self, lake: Lake, totals: _Totals, staging: str | None, names: tuple[str, str]) -> None:
        self.lake = lake
        self.totals = totals
        self.shared = staging
        self.run, self.prefix = (staging, names[1]) if staging else (names[0], "batch")
        self.tables: list[pa.Table] = []
        self.symbols = 0
        self.rows = 0
        self.batches = 0

    def add(self, table: pa.Table) -> None:
        self.tables.append(table)
        self.symbols += 1
        self.rows += table.num_rows

    def resume(self) -> None:
        """Commit what an earlier attempt of this task staged under its own name (none with ``staging``)."""
        if self.shared is None and isinstance(self.lake, ParquetLake):
            self.count(self.lake.commit_staged(self.run))

    def stage(self) -> None:
        """Make the rows waiting in memory durable under the staging run, and forget them (a table:
        commit them, its commit being as cheap as a staged file)."""
        from airflow_provider_shortint.records import concat_tables

        table = concat_tables(self.tables)
        if not isinstance(self.lake, ParquetLake):
            self.tables, self.symbols, self.rows = [], 0, 0
            if table.num_rows:
                self.count(self.lake.upsert(table))
            return
        if table.num_rows:
            self.totals.stage(
                table, self.lake.stage(table, self.run, f"{self.prefix}.{self.batches:05d}").rows
            )
            self.batches += 1
        self.tables, self.symbols, self.rows = [], 0, 0

    def finish(self) -> None:
        """The end of the run: commit (directly when nothing was staged), or only stage with ``staging``."""
        from airflow_provider_shortint.records import concat_tables

        if isinstance(self.lake, ParquetLake) and (self.shared is not None or self.batches):
            self.stage()
            if self.shared is None:
                self.count(self.lake.commit_staged(self.run))
            return
        table = concat_tables(self.tables)
        self.tables, self.symbols, self.rows = [], 0, 0
        if table.num_rows:
            self.count(self.lake.upsert(table))

    def count(self, result: UpsertResult) -> None:
        totals = self.totals
        for market, rows in result.rows_written_by_market.items():
            totals.rows_written[market] = totals.rows_written.get(market, 0) + rows
        totals.partitions.update(result.partitions_written)
        totals.quarantined.extend(result.quarantined)
        for name, day in result.latest_trade_date.items():
            totals.see_date(name, day)


def _run_names(context: Any, task_id: str) -> tuple[str, str]:
    """(the task's own staging run, the name of its files in a shared run), stable across attempts.

    From the task instance (DAG, run, task, map index); outside a DAG run (no task instance) a name of
    its own, which a later call never resumes.
    """
    ti = context.get("ti") if isinstance(context, dict) else None
    dag_id, run_id = getattr(ti, "dag_id", None), getattr(ti, "run_id", None)
    if not dag_id or not run_id:
        import uuid

        unique = uuid.uuid4().hex[:12]
        return f"{task_id}.{unique}", f"{task_id}.{unique}"
    index = getattr(ti, "map_index", -1)
    index = -1 if not isinstance(index, int) else index
    mapped = f"{task_id}.{index:05d}" if index >= 0 else task_id
    return f"{dag_id}.{run_id}.{mapped}", mapped


@dataclass(frozen=True)
class _LoadFacts:
    """What lineage needs from a run: counts per market, never rows."""

    source: str | None  # OpenLineage namespace of the API, None if the connection could not be read
    lake_path: str
    markets: tuple[str, ...]
    rows_written: dict[str, int]
    files_written: dict[str, int]
    table: tuple[str, str] | None  # a Delta or Iceberg table's (namespace, name); None: the Parquet lake


@dataclass
class _Totals:
    """What one run did, kept while it runs and turned into the XCom summary at the end."""

    requests: int = 0
    rows_fetched: int = 0
    rows_staged: int = 0  # rows made durable under _staging/ (committed by this run, or later)
    staged_by_market: dict[str, int] = field(default_factory=dict)  # market -> rows staged
    rows_written: dict[str, int] = field(default_factory=dict)  # market -> rows new or changed
    partitions: set[str] = field(default_factory=set)  # "market=HK/year=2026" written
    latest_trade_date: dict[str, str] = field(default_factory=dict)  # market -> newest ISO date
    failed: dict[str, str] = field(default_factory=dict)  # symbol -> why the API rejected it
    quarantined: list[str] = field(default_factory=list)  # files the lake did not write, moved away

    def stage(self, table: pa.Table, rows: int) -> None:
        """Count ``rows`` staged (per market, for lineage)."""
        import pyarrow.compute as pc

        from airflow_provider_shortint.lake.arrow import market_column

        self.rows_staged += rows
        counts = pc.value_counts(market_column(table.column("symbol")))
        for entry in counts.to_pylist():
            market = entry["values"]
            self.staged_by_market[market] = self.staged_by_market.get(market, 0) + entry["counts"]

    def facts(
        self, source: str | None, lake_path: str, table: tuple[str, str] | None, staging: bool
    ) -> _LoadFacts:
        """What lineage reports; a staging run reports the rows it staged (a later commit writes them)."""
        files: dict[str, int] = {}
        for partition in self.partitions:
            market = partition.partition("/")[0].removeprefix("market=")
            files[market] = files.get(market, 0) + 1
        rows = (
            {m: self.staged_by_market.get(m, 0) for m in self.rows_written} if staging else self.rows_written
        )
        return _LoadFacts(source, lake_path, tuple(self.rows_written), dict(rows), files, table)

    def see_date(self, market: str, day: str) -> None:
        self.latest_trade_date[market] = max(self.latest_trade_date.get(market, ""), day)

    def summary(self, lake: str, mode: str, symbols: int) -> dict[str, Any]:
        return {
            "lake": lake,
            "mode": mode,
            "symbols": symbols,
            "requests": self.requests,
            "rows_fetched": self.rows_fetched,
            "rows_staged": self.rows_staged,
            "rows_written": sum(self.rows_written.values()),
            "rows_written_by_market": dict(sorted(self.rows_written.items())),
            "partitions_written": len(self.partitions),
            "latest_trade_date": dict(sorted(self.latest_trade_date.items())),
            "failed": self.failed,
            "quarantined": sorted(self.quarantined),
        }


def _api_source(hook: ShortInterestBaseHook, conn_id: str) -> str | None:
    """The API's OpenLineage namespace (from the connection, never its secrets); None if unreadable."""
    from airflow_provider_shortint.lineage import api_namespace

    try:
        return api_namespace(hook.get_connection(conn_id))
    except Exception:  # lineage must never fail a load
        return None


def _table_dataset(lake: Lake) -> tuple[str, str] | None:
    """A table's OpenLineage ``(namespace, name)``; None for the Parquet lake (one dataset per market)."""
    if isinstance(lake, ParquetLake):
        return None
    try:
        return lake.lineage_dataset()
    except Exception:  # lineage must never fail a load
        return None


def _later(a: dt.date | None, b: dt.date | None) -> dt.date | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


def _eta(started: float, done: int, total: int) -> str:
    remaining = (time.monotonic() - started) / done * (total - done)
    return f"{remaining / 60:.0f} min" if remaining >= 90 else f"{remaining:.0f} s"


def _is_literal(value: object) -> bool:
    """A value written in the DAG file (not Jinja, not an XComArg): checkable at parse time."""
    if isinstance(value, (list, tuple)):
        return all(isinstance(item, str) and not is_template(item) for item in value)
    return isinstance(value, (str, dt.date)) and not is_template(value)


def _literal_list(value: object) -> object:
    """A templated list often renders to its text ("['HK.00700', 'US.AAPL']"): read it back as a list."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            parsed = ast.literal_eval(value.strip())
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            raise InvalidParameterError(f"symbols {shown(value)} looks like a list but is not one") from None
        return parsed
    return value
