"""What a table format shares: the lake API (upsert, read, latest_dates), reading as of a version, and
the one upsert algorithm every format runs.

An upsert reads the stored rows of the input's keys from one version of the table, keeps the input rows
whose values differ (or that are new), and commits only those, conditioned on that version: the table's
own commit protocol refuses the commit if another writer committed in between, and the upsert then
re-reads, re-compares and tries again, at most ``MAX_COMMIT_ATTEMPTS`` times. Because each attempt
re-reads, a retried (or doubly delivered) commit never adds a row twice, and an upsert in which nothing
changed commits nothing: no new version. A back end (``delta``, ``iceberg``) says how to read, commit and
maintain; it never imports this package's other back ends, and nothing here imports deltalake or pyiceberg.
"""

from __future__ import annotations

import abc
import datetime as dt
import importlib.util
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_shortint.exceptions import (
    InvalidParameterError,
    LakeConflictError,
    LakeSchemaError,
    TableFormatNotInstalledError,
)
from airflow_provider_shortint.lake import arrow
from airflow_provider_shortint.lake.parquet_lake import UpsertResult
from airflow_provider_shortint.records import COLUMNS, VALUE_COLUMNS, lake_schema
from airflow_provider_shortint.retry import backoff_delay
from airflow_provider_shortint.text import clip

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

#: Commits one upsert (or one maintenance step) tries before ``LakeConflictError``: each refused commit
#: means another writer committed first; the upsert re-reads and re-compares before the next attempt.
MAX_COMMIT_ATTEMPTS = 12
#: Base and cap (s) of the jittered wait between two attempts after a refused commit.
CONFLICT_BACKOFF = (0.05, 2.0)
#: The column a table holds beside the lake columns: the market of the row's symbol (partition column).
MARKET_COLUMN = "market"
#: Order of the rows ``read()`` returns: the Parquet lake's (market, year, symbol, trade_date).
READ_ORDER = (
    ("market", "ascending"),
    ("year", "ascending"),
    ("symbol", "ascending"),
    ("trade_date", "ascending"),
)
#: Old versions kept by maintenance unless told otherwise: readers and time travel within a week keep working.
DEFAULT_RETENTION = dt.timedelta(days=7)
_EXTRA_HINT = 'pip install "airflow-provider-shortint[{extra}]"'


def require(module: str, extra: str, what: str) -> None:
    """Fail with one sentence naming the extra when ``module`` is not installed (nothing imported here)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or the module blocked in sys.modules
        found = False
    if not found:
        raise TableFormatNotInstalledError(
            f"{what} needs the Python package {module!r}, which is not installed: "
            + _EXTRA_HINT.format(extra=extra)
        )


def table_schema() -> pa.Schema:
    """The schema of a table: the lake columns (DESIGN.md §6), then ``market`` (string, not null)."""
    import pyarrow as pa

    return lake_schema().append(pa.field(MARKET_COLUMN, pa.string(), nullable=False))


@dataclass(frozen=True)
class TableVersion:
    """One committed version of a table: Delta's version number or Iceberg's snapshot id."""

    version: int
    timestamp: dt.datetime  # when it was committed (UTC)
    operation: str  # "MERGE", "OPTIMIZE", "append", "overwrite", ...


@dataclass(frozen=True)
class MaintenanceResult:
    """What one :meth:`TableLake.maintain` did (or, with ``dry_run``, would do)."""

    duplicates_removed: int  # rows of a key stored more than once, dropped (the newest ingested_at kept)
    files_compacted: int  # data files rewritten into larger ones
    files_written: int  # data files the compaction wrote
    versions_expired: int  # Iceberg snapshots expired (Delta keeps its log; see files_deleted)
    files_deleted: int  # files no live version references, older than the retention, removed
    version: int | None  # the table's version after maintenance
    dry_run: bool = False
    deleted: tuple[str, ...] = field(default=(), repr=False)  # what was (or would be) deleted


class CommitConflict(Exception):
    """A back end's commit was refused because another writer committed first (nothing was written)."""


class TableLake(abc.ABC):
    """A table (Delta Lake or Iceberg) of short-interest rows behind the lake API of ``ParquetLake``.

    The table holds the lake columns plus ``market``, partitioned by market, one row per
    (symbol, trade_date). ``read()`` and ``latest_dates()`` mean what they mean on the Parquet lake.
    """

    table_format: ClassVar[str]
    #: What keeps concurrent writers apart (ParquetLake.write_guard's counterpart).
    write_guard: ClassVar[str] = "optimistic-commit"

    def __init__(self) -> None:
        self._sleep: Callable[[float], None] = time.sleep
        self.max_commit_attempts = MAX_COMMIT_ATTEMPTS

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    # -- what a back end provides -------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def uri(self) -> str:
        """Printable location without credentials."""

    @abc.abstractmethod
    def asset_uri(self) -> str:
        """The URI of this table's Airflow Asset (one per table, however its location is spelled)."""

    @abc.abstractmethod
    def lineage_dataset(self) -> tuple[str, str]:
        """``(namespace, name)`` of this table as an OpenLineage dataset."""

    @abc.abstractmethod
    def _snapshot(self, *, create: bool) -> Any:
        """The table at its current version (created first when ``create``), or None if it does not exist."""

    @abc.abstractmethod
    def _scan(
        self,
        state: Any,
        columns: list[str],
        *,
        symbols: list[str] | None = None,
        markets: list[str] | None = None,
        dates: tuple[dt.date, dt.date] | None = None,
    ) -> pa.Table:
        """``columns`` of the rows of ``state`` matching every given filter (symbols, markets, a closed
        range of trade dates), in table types; rows outside may come too (the caller filters exactly)."""

    @abc.abstractmethod
    def _commit(self, state: Any, changed: pa.Table, replaced: pa.Table) -> None:
        """Commit ``changed`` rows (table schema) on top of ``state``, replacing the stored rows of the
        keys in ``replaced`` (symbol, trade_date, market); raise :class:`CommitConflict` when the table is
        no longer at ``state``'s version."""

    @abc.abstractmethod
    def _at(self, as_of: int | dt.datetime) -> Any:
        """The table as of a version (int) or a point in time (aware datetime), or InvalidParameterError."""

    @property
    @abc.abstractmethod
    def version(self) -> int | None:
        """The current version (Delta) or snapshot id (Iceberg); None when the table has none yet."""

    @abc.abstractmethod
    def versions(self) -> list[TableVersion]:
        """Every version still in the table's history, oldest first."""

    @abc.abstractmethod
    def maintain(
        self,
        *,
        compact: bool = True,
        retention: dt.timedelta = DEFAULT_RETENTION,
        dry_run: bool = False,
    ) -> MaintenanceResult:
        """Repair duplicate keys, compact small files, drop versions and files older than ``retention``."""

    # -- writing ------------------------------------------------------------------------------------

    def upsert(self, table: pa.Table) -> UpsertResult:
        """Merge ``table`` (lake schema) into the table on (symbol, trade_date), as ``ParquetLake.upsert``.

        Changed rows replace the stored ones, identical rows keep theirs (and their ingested_at), new
        rows are added; duplicate keys in the input: the last wins. Nothing changed: nothing committed.
        A commit another writer beat is re-read, re-compared and retried (``conflicts`` counts them).
        """
        rows = arrow.conform(table, "upsert() input", drop_partition_columns=True)
        if rows.num_rows == 0:
            return UpsertResult(0, 0, (), 0, {})
        arrow.check_rows(rows)
        latest = arrow.latest_per_market(rows)
        incoming = with_market(arrow.deduplicated(rows))
        markets = sorted(set(incoming.column(MARKET_COLUMN).to_pylist()))
        symbols = sorted(set(incoming.column("symbol").to_pylist()))
        dates = _date_range(incoming)
        conflicts = 0
        for attempt in range(1, self.max_commit_attempts + 1):
            state = self._snapshot(create=True)
            stored = self._conformed(
                self._scan(state, [*COLUMNS, MARKET_COLUMN], symbols=symbols, markets=markets, dates=dates),
                "the stored rows",
            )
            changed_mask, matched_mask = compare(stored, incoming)
            changed = incoming.filter(changed_mask)
            unchanged = incoming.num_rows - changed.num_rows
            touched = sorted(set(changed.column(MARKET_COLUMN).to_pylist()))
            if changed.num_rows == 0:
                return self._result(0, unchanged, [], markets, latest, conflicts, {})
            replaced = incoming.filter(_and(changed_mask, matched_mask)).select(
                ["symbol", "trade_date", MARKET_COLUMN]
            )
            try:
                self._commit(state, sorted_for_write(changed), replaced)
            except CommitConflict as err:
                conflicts += 1
                log.info(
                    "table %s: commit attempt %d refused (%s): re-reading",
                    self.uri,
                    attempt,
                    clip(str(err), 160),
                )
                if attempt < self.max_commit_attempts:
                    self._sleep(backoff_delay(attempt, *CONFLICT_BACKOFF))
                continue
            counts = changed.group_by(MARKET_COLUMN, use_threads=False).aggregate([(MARKET_COLUMN, "count")])
            by_market = dict(
                zip(
                    counts.column(MARKET_COLUMN).to_pylist(),
                    counts.column(f"{MARKET_COLUMN}_count").to_pylist(),
                    strict=True,
                )
            )
            return self._result(changed.num_rows, unchanged, touched, markets, latest, conflicts, by_market)
        raise LakeConflictError(
            f"table {self.uri}: other writers committed first on each of {self.max_commit_attempts} "
            "attempts to upsert; too many writers on one table at once (re-running the upsert converges)"
        )

    def _result(
        self,
        written: int,
        unchanged: int,
        touched: list[str],
        markets: list[str],
        latest: dict[str, str],
        conflicts: int,
        by_market: dict[str, int],
    ) -> UpsertResult:
        result = UpsertResult(
            rows_written=written,
            rows_unchanged=unchanged,
            partitions_written=tuple(f"{MARKET_COLUMN}={market}" for market in touched),
            partitions_unchanged=len(markets) - len(touched),
            latest_trade_date=latest,
            conflicts=conflicts,
            rows_written_by_market=by_market,
        )
        log.info(
            "table %s: %d row(s) written, %d unchanged; %d conflict(s)",
            self.uri,
            written,
            unchanged,
            conflicts,
        )
        return result

    # -- reading ------------------------------------------------------------------------------------

    def read(self, columns: list[str] | None = None, *, as_of: int | dt.datetime | None = None) -> pa.Table:
        """The whole table in the columns and order of ``ParquetLake.read`` (lake columns, then ``market``
        and what the Parquet lake's readers add); ``as_of``: a version (Delta) or snapshot id (Iceberg),
        or an aware datetime. An empty or missing table gives an empty table."""
        import pyarrow.compute as pc

        schema = arrow.read_schema()
        wanted = arrow.wanted_columns(columns, schema.names, "the table")
        state = self._snapshot(create=False) if as_of is None else self._at(as_of)
        if state is None:
            return schema.empty_table().select(wanted)
        rows = self._conformed(self._scan(state, [*COLUMNS, MARKET_COLUMN]), "the table's rows")
        keyed = read_columns(rows, list(dict.fromkeys([*(name for name, _ in READ_ORDER), *wanted])))
        return keyed.take(pc.sort_indices(keyed, sort_keys=list(READ_ORDER))).select(wanted)

    def latest_dates(self, symbols: Iterable[str] | None = None) -> dict[str, dt.date]:
        """Newest stored trade_date per symbol (all symbols when ``symbols`` is None); symbols the table
        does not hold are absent. Reads only ``symbol``, ``trade_date`` (and ``market``) of matching rows."""
        wanted = _wanted_symbols(symbols)
        if wanted is not None and not wanted:
            return {}
        state = self._snapshot(create=False)
        if state is None:
            return {}
        if wanted is None:
            table = self._scan(state, ["symbol", "trade_date"])
        else:
            markets = sorted({market for market in map(_market_of, wanted) if market is not None})
            if not markets:
                return {}
            table = self._scan(state, ["symbol", "trade_date"], symbols=sorted(wanted), markets=markets)
        if table.num_rows == 0:
            return {}
        grouped = table.group_by("symbol", use_threads=False).aggregate([("trade_date", "max")])
        found = dict(
            zip(
                grouped.column("symbol").to_pylist(),
                grouped.column("trade_date_max").to_pylist(),
                strict=True,
            )
        )
        if wanted is not None:
            found = {symbol: day for symbol, day in found.items() if symbol in wanted}
        return dict(sorted(found.items()))

    def _conformed(self, rows: pa.Table, what: str) -> pa.Table:
        """``rows`` of the table (lake columns + market) in exactly the table schema."""
        if MARKET_COLUMN not in rows.column_names:
            raise LakeSchemaError(f"{what} in {self.uri} lack the column {MARKET_COLUMN!r}")
        lake = arrow.conform(rows.drop_columns([MARKET_COLUMN]), f"{what} in {self.uri}")
        market = table_schema().field(MARKET_COLUMN)
        return lake.append_column(market, rows.column(MARKET_COLUMN).cast(market.type))


# -- pure Arrow helpers (shared by the back ends) ----------------------------------------------------


def with_market(rows: pa.Table) -> pa.Table:
    """Lake rows plus their ``market`` column (from the symbol's prefix), in the table schema."""
    market = arrow.market_column(rows.column("symbol"))
    return rows.append_column(table_schema().field(MARKET_COLUMN), market)


def deduplicated_keep_newest(rows: pa.Table) -> pa.Table:
    """``rows`` with one row per (symbol, trade_date): the one with the newest ingested_at."""
    import pyarrow.compute as pc

    order = pc.sort_indices(rows, sort_keys=[("ingested_at", "ascending")])
    return arrow.deduplicated(rows.take(order))


def duplicate_keys(keys: pa.Table) -> pa.Table:
    """The (symbol, trade_date, market) keys that ``keys`` holds more than once."""
    import pyarrow.compute as pc

    names = ["symbol", "trade_date", MARKET_COLUMN]
    counted = keys.select(names).group_by(names, use_threads=False).aggregate([([], "count_all")])
    return counted.filter(pc.greater(counted.column("count_all"), 1)).select(names)


def sorted_for_write(rows: pa.Table) -> pa.Table:
    """Rows in the order a table's files keep them: market, symbol, trade_date (a symbol's history is
    contiguous, so file statistics let readers of one symbol skip most files)."""
    import pyarrow.compute as pc

    order = pc.sort_indices(
        rows, sort_keys=[(MARKET_COLUMN, "ascending"), ("symbol", "ascending"), ("trade_date", "ascending")]
    )
    return rows.take(order).combine_chunks()


def compare(stored: pa.Table, incoming: pa.Table) -> tuple[pa.Array, pa.Array]:
    """For each incoming row: (differs from its stored row or has none, has a stored row).

    ``stored`` may hold rows of other keys; values compare as ``arrow.values_equal`` (null equals null,
    NaN equals NaN). A key stored twice (a damaged table) counts as unchanged if either copy is equal.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    count = incoming.num_rows
    positions = pa.array(range(count), pa.int64())
    if stored.num_rows == 0:
        return pa.array([True] * count, pa.bool_()), pa.array([False] * count, pa.bool_())
    keys = ["symbol", "trade_date"]
    left = incoming.select([*keys, *VALUE_COLUMNS]).append_column("__pos", positions)
    right = stored.select([*keys, *VALUE_COLUMNS]).rename_columns(
        [*keys, *(f"__stored_{name}" for name in VALUE_COLUMNS)]
    )
    joined = left.join(right, keys=keys, join_type="inner", use_threads=False)
    matched = joined.column("__pos")
    if joined.num_rows == 0:
        return pa.array([True] * count, pa.bool_()), pa.array([False] * count, pa.bool_())
    equal = arrow.values_equal(
        joined.select(list(VALUE_COLUMNS)),
        joined.select([f"__stored_{name}" for name in VALUE_COLUMNS]).rename_columns(list(VALUE_COLUMNS)),
    )
    if isinstance(equal, list):  # arrow.values_equal gives a list or an array, depending on its version
        equal = pa.array(equal, pa.bool_())
    elif isinstance(equal, pa.ChunkedArray):
        equal = equal.combine_chunks()
    same = pc.filter(matched.combine_chunks(), equal)
    changed = pc.invert(pc.is_in(positions, value_set=same))
    has_stored = pc.is_in(positions, value_set=matched.combine_chunks())
    return changed, has_stored


def read_columns(rows: pa.Table, wanted: list[str]) -> pa.Table:
    """``wanted`` columns of table rows (lake columns + market), computing what ``read()`` adds beyond
    them the way the Parquet lake's hive readers do: ``year`` and ``dt`` from trade_date."""
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = arrow.read_schema()
    arrays = []
    for name in wanted:
        if name in rows.column_names:
            arrays.append(rows.column(name).cast(schema.field(name).type))
        elif name == "dt":
            arrays.append(rows.column("trade_date"))
        elif name == "year":
            arrays.append(pc.year(rows.column("trade_date")).cast(schema.field(name).type))
        else:
            raise LakeSchemaError(f"a table cannot compute the read column {name!r}")
    return pa.Table.from_arrays(arrays, schema=pa.schema([schema.field(name) for name in wanted]))


def _and(left: pa.Array, right: pa.Array) -> pa.Array:
    import pyarrow.compute as pc

    result: pa.Array = pc.and_(left, right)
    return result


def _date_range(rows: pa.Table) -> tuple[dt.date, dt.date]:
    import pyarrow.compute as pc

    bounds = pc.min_max(rows.column("trade_date"))
    return bounds["min"].as_py(), bounds["max"].as_py()


def _market_of(symbol: str) -> str | None:
    from airflow_provider_shortint.markets import MARKETS

    prefix = symbol.partition(".")[0]
    return prefix if prefix in MARKETS and "." in symbol else None


def _wanted_symbols(symbols: Iterable[str] | None) -> set[str] | None:
    if symbols is None:
        return None
    if isinstance(symbols, str):
        symbols = [symbols]
    if not isinstance(symbols, Iterable):
        raise InvalidParameterError(f"symbols must be an iterable of strings, got {type(symbols).__name__}")
    wanted: set[str] = set()
    for symbol in symbols:
        if not isinstance(symbol, str):
            raise InvalidParameterError(f"symbols must be strings, got {type(symbol).__name__}")
        wanted.add(symbol)
    return wanted


def check_as_of(as_of: object) -> int | dt.datetime:
    """A version number (int >= 0) or an aware datetime, else InvalidParameterError."""
    if isinstance(as_of, bool) or not isinstance(as_of, (int, dt.datetime)):
        raise InvalidParameterError(
            f"as_of must be a version number or a timezone-aware datetime, got {type(as_of).__name__}"
        )
    if isinstance(as_of, int) and as_of < 0:
        raise InvalidParameterError(f"as_of must be a version number >= 0, got {as_of}")
    if isinstance(as_of, dt.datetime) and as_of.utcoffset() is None:
        raise InvalidParameterError(f"as_of {as_of.isoformat()} has no time zone: give an aware datetime")
    return as_of


def check_retention(retention: object) -> dt.timedelta:
    """A non-negative timedelta, else InvalidParameterError."""
    if not isinstance(retention, dt.timedelta) or retention < dt.timedelta(0):
        raise InvalidParameterError(f"retention must be a timedelta >= 0, got {retention!r}")
    return retention
