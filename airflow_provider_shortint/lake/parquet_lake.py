"""``ParquetLake``: atomic, idempotent upserts keyed on (symbol, trade_date), and the lake's readers.

An upsert touches only the partitions present in its input and rewrites a partition only when a row
in it changed. How concurrent writers are kept apart is the store's ``guard`` (store.py): a lock per
partition (local), compare-and-swap with re-read and re-merge (S3), or a single-writer lease.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_shortint.exceptions import InvalidParameterError, LakeConflictError, LakeWriteError
from airflow_provider_shortint.lake import arrow
from airflow_provider_shortint.lake.layout import partition_file, partition_name, partition_values
from airflow_provider_shortint.lake.lease import WriterLease
from airflow_provider_shortint.lake.location import parse_location
from airflow_provider_shortint.lake.stores import open_store
from airflow_provider_shortint.lake.stores.base import LockingStore, Stored, WriteConflict, WriteGuard
from airflow_provider_shortint.markets import MARKETS, market_of
from airflow_provider_shortint.retry import backoff_delay

if TYPE_CHECKING:
    import pyarrow as pa
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

MAX_WRITE_ATTEMPTS = 12  # compare-and-swap: attempts per partition before LakeConflictError
CONFLICT_BACKOFF = (0.02, 1.0)  # base and cap (s) of the jittered wait after a conflict
# latest_dates(symbols): how far back, in records of the market's cadence (Market.cadence_days), it
# looks for a wanted symbol before reporting it absent: 53 records = about a year for HK (weekly), two
# for US (fortnightly). A symbol with no record in that window is reported absent, so the operator
# fetches its whole history and the upsert keeps the identical stored rows unchanged (docs/LAKE.md).
LOOKBACK_RECORDS = 53


@dataclass(frozen=True)
class UpsertResult:
    """What one :meth:`ParquetLake.upsert` did."""

    rows_written: int  # input rows that were new or differed from the stored version
    rows_unchanged: int  # input rows identical to the stored version (stored row and ingested_at kept)
    partitions_written: tuple[str, ...]  # "market=HK/dt=2026-05-15", sorted
    partitions_unchanged: int  # partitions of the input in which nothing changed (files not touched)
    latest_trade_date: dict[str, str]  # market -> newest trade_date (ISO) among the input rows
    conflicts: int = 0  # compare-and-swap writes another writer beat, each re-read, re-merged, retried


def open_lake(path: str | os.PathLike[str] | ObjectStoragePath) -> ParquetLake:
    """Open the lake at ``path``: an absolute local path, a ``file://`` URL, or an ObjectStoragePath URL.

    Object storage takes Airflow's form ``s3://aws_conn_id@bucket/prefix`` (the connection id before
    '@'). Only the syntax is checked here; nothing is read or created until the first upsert or read.
    Raises ``InvalidParameterError`` for relative paths, '..' segments, surrounding whitespace, a path
    that is a file, empty strings, non-paths and unknown schemes.
    """
    return ParquetLake(path)


class ParquetLake:
    """A hive-partitioned Parquet dataset of short-interest rows (DESIGN.md §6, docs/LAKE.md)."""

    def __init__(self, path: str | os.PathLike[str] | ObjectStoragePath) -> None:
        self._store = open_store(parse_location(path))
        self._sleep: Callable[[float], None] = time.sleep

    def __repr__(self) -> str:
        return f"ParquetLake({self.uri!r})"

    @property
    def uri(self) -> str:
        """Printable location without credentials: an absolute path, or e.g. ``s3://bucket/prefix``."""
        return self._store.uri

    @property
    def is_local(self) -> bool:
        """True when the lake is a local directory (cross-process locking applies)."""
        return self._store.local_root() is not None

    @property
    def write_guard(self) -> str:
        """How concurrent writers are kept apart: "lock", "compare-and-swap" or "single-writer"."""
        return self._store.guard.value

    def partition_path(self, market: str, trade_date: dt.date) -> str:
        """Location of one partition's file, e.g. ``{uri}/market=HK/dt=2026-05-15/part-0.parquet``."""
        if market not in MARKETS:
            raise InvalidParameterError(f"market must be one of {list(MARKETS)}, got {market!r}")
        if isinstance(trade_date, dt.datetime):
            trade_date = trade_date.date()
        if not isinstance(trade_date, dt.date):
            raise InvalidParameterError(
                f"trade_date must be a datetime.date, got {type(trade_date).__name__}"
            )
        return self._store.full(partition_file(partition_name(market, trade_date)))

    # -- writing ------------------------------------------------------------------------------------

    def upsert(self, table: pa.Table) -> UpsertResult:
        """Merge ``table`` (lake schema, any markets/dates/symbols) into the lake, partition by partition.

        Each touched partition is read, merged on (symbol, trade_date) and, only if a row changed,
        replaced atomically without losing a concurrent writer's rows. Duplicate keys: the last wins.
        A failure names the partitions already written and those not written.
        """
        rows = arrow.conform(table, "upsert() input", drop_partition_columns=True)
        if rows.num_rows == 0:
            return UpsertResult(0, 0, (), 0, {})
        arrow.check_rows(rows)
        latest = arrow.latest_per_market(rows)
        parts = [
            (partition_name(market, day), incoming) for market, day, incoming in arrow.split_partitions(rows)
        ]
        written: list[str] = []
        rows_written = rows_unchanged = partitions_unchanged = conflicts = 0
        single_writer = self._store.guard is WriteGuard.SINGLE_WRITER
        with WriterLease(self._store) if single_writer else contextlib.nullcontext() as lease:
            for index, (partition, incoming) in enumerate(parts):
                try:
                    if isinstance(lease, WriterLease):
                        lease.refresh()
                    changed, n_written, n_unchanged, n_conflicts = self._commit(partition, incoming)
                except BaseException as err:
                    failure = self._failed(err, partition, written, [name for name, _ in parts[index:]])
                    if failure is err:
                        raise
                    raise failure from err
                if changed:
                    written.append(partition)
                else:
                    partitions_unchanged += 1
                rows_written += n_written
                rows_unchanged += n_unchanged
                conflicts += n_conflicts
        result = UpsertResult(
            rows_written=rows_written,
            rows_unchanged=rows_unchanged,
            partitions_written=tuple(sorted(written)),
            partitions_unchanged=partitions_unchanged,
            latest_trade_date=latest,
            conflicts=conflicts,
        )
        log.info(
            "lake %s: %d row(s) written, %d unchanged; %d partition(s) written, %d unchanged; %d conflict(s)",
            self.uri,
            rows_written,
            rows_unchanged,
            len(written),
            partitions_unchanged,
            conflicts,
        )
        return result

    def _commit(self, partition: str, incoming: pa.Table) -> tuple[bool, int, int, int]:
        """Read, merge, write one partition as the store's guard requires.

        Returns (changed, rows written, rows unchanged, conflicts retried).
        """
        store = self._store
        if store.guard is WriteGuard.LOCK:
            if not isinstance(store, LockingStore):
                raise TypeError(f"{type(store).__name__} declares the guard 'lock' but has no lock()")
            with store.lock(partition):
                store.remove_stale_temps(partition)
                return (*self._merge_and_write(partition, incoming), 0)
        if store.guard is WriteGuard.SINGLE_WRITER:  # the caller holds the writer lease
            return (*self._merge_and_write(partition, incoming), 0)
        for attempt in range(1, MAX_WRITE_ATTEMPTS + 1):
            try:
                return (*self._merge_and_write(partition, incoming), attempt - 1)
            except WriteConflict:
                log.info(
                    "lake %s: %s changed while merging (attempt %d): re-reading", self.uri, partition, attempt
                )
                if attempt < MAX_WRITE_ATTEMPTS:
                    self._sleep(backoff_delay(attempt, *CONFLICT_BACKOFF))
        raise LakeConflictError(
            f"partition {partition} was replaced by other writers on each of {MAX_WRITE_ATTEMPTS} attempts "
            "to merge into it; too many writers on one partition at once"
        )

    def _merge_and_write(self, partition: str, incoming: pa.Table) -> tuple[bool, int, int]:
        rel = partition_file(partition)
        stored = self._store.read(rel)
        current = (
            None
            if stored.data is None
            else arrow.from_parquet(stored.data, f"stored file {self._store.full(rel)}")
        )
        merged, n_written, n_unchanged = arrow.merge(current, incoming)
        if merged is None:
            return False, 0, n_unchanged
        self._write_partition(partition, merged, stored)
        log.debug("%s/%s: %d row(s) written, %d unchanged", self.uri, partition, n_written, n_unchanged)
        return True, n_written, n_unchanged

    def _write_partition(self, partition: str, table: pa.Table, expected: Stored) -> None:
        """Replace one partition's file atomically with ``table`` (already merged and sorted)."""
        self._store.write(partition_file(partition), arrow.to_parquet(table), expected)

    def _failed(
        self, err: BaseException, partition: str, written: list[str], pending: list[str]
    ) -> BaseException:
        """``err`` naming the lake, the failed partition, what was written and what was not."""
        done = (
            f"{len(written)} partition(s) were already replaced (each atomically): {written}"
            if written
            else "no partition was written"
        )
        note = (
            f"lake {self.uri}: the upsert failed at {partition}; {done}; not written: {pending}; "
            "re-running the upsert converges"
        )
        if isinstance(err, OSError) and not isinstance(err, LakeWriteError):
            wrapped = LakeWriteError(f"lake {self.uri}: writing partition {partition} failed: {err}")
            wrapped.errno = err.errno
            err = wrapped
        elif isinstance(err, LakeConflictError):
            err.message = f"lake {self.uri}: {err.message}"
            err.args = (err.message,)
        err.add_note(note)
        return err

    # -- reading ------------------------------------------------------------------------------------

    def _dataset(self, rel_files: list[str]) -> Any:
        """A pyarrow dataset over local files (a local lake's readers map the files they need)."""
        import pyarrow as pa
        import pyarrow.dataset as ds

        base = self._store.local_root()
        partitioning = ds.partitioning(
            pa.schema([pa.field("market", pa.string()), pa.field("dt", pa.date32())]), flavor="hive"
        )
        return ds.dataset(
            [f"{base}/{rel}" for rel in rel_files],
            schema=arrow.read_schema(),
            format="parquet",
            partitioning=partitioning,
            partition_base_dir=base,
        )

    def _table(self, rel_files: list[str], columns: list[str], filter: Any = None) -> pa.Table:
        """Rows of ``rel_files`` (``columns``, partition columns included), in file order."""
        import pyarrow as pa

        if self.is_local:
            table: pa.Table = self._dataset(rel_files).to_table(columns=columns, filter=filter)
            return table
        # Object storage: each file fetched whole and fresh (no cached listing, no stale ETag).
        wanted = [name for name in columns if name not in ("market", "dt")]
        tables = []
        for rel, data in self._store.read_many(rel_files):
            market, day = partition_values(rel)
            rows = arrow.from_parquet(data, f"stored file {self._store.full(rel)}", filter=filter)
            tables.append(arrow.with_partition_columns(rows.select(wanted), market, day).select(columns))
        if not tables:
            return arrow.read_schema().empty_table().select(columns)
        return pa.concat_tables(tables)

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """The whole lake, lake columns then ``market`` (string) and ``dt`` (date32).

        Rows come ordered by market, dt, symbol. ``columns`` selects (and orders) columns, partition
        columns included. An empty or missing lake gives an empty table.
        """
        schema = arrow.read_schema()
        if columns is None:
            wanted = list(schema.names)
        else:
            if isinstance(columns, str) or not isinstance(columns, Iterable):
                raise InvalidParameterError("columns must be a list of column names")
            wanted = list(columns)
            unknown = [name for name in wanted if not isinstance(name, str) or name not in schema.names]
            if unknown:
                raise InvalidParameterError(f"unknown column(s) {unknown}; the lake has {list(schema.names)}")
            if len(set(wanted)) != len(wanted):
                raise InvalidParameterError(f"columns {wanted} repeat a name")
        files = self._store.list_data_files()
        if not files:
            return schema.empty_table().select(wanted)
        return self._table(files, wanted)

    def latest_dates(self, symbols: Iterable[str] | None = None) -> dict[str, dt.date]:
        """Newest stored trade_date per symbol (all symbols when ``symbols`` is None).

        Reads only the ``symbol`` and ``trade_date`` columns. With ``symbols``, partitions are read
        newest first and reading stops once every symbol has been seen, so the cost follows the
        recent data, not the history. Symbols absent from the lake are absent from the result, and so
        is a symbol without a record in the last ``LOOKBACK_RECORDS`` cadences of its market: an
        absent symbol costs at most that window, never a scan of the whole lake.
        """
        import pyarrow.dataset as ds

        wanted: set[str] | None = None
        if symbols is not None:
            if isinstance(symbols, str):
                symbols = [symbols]
            if not isinstance(symbols, Iterable):
                raise InvalidParameterError(
                    f"symbols must be an iterable of strings, got {type(symbols).__name__}"
                )
            wanted = set()
            for symbol in symbols:
                if not isinstance(symbol, str):
                    raise InvalidParameterError(f"symbols must be strings, got {type(symbol).__name__}")
                wanted.add(symbol)
            if not wanted:
                return {}
        files = self._store.list_data_files()
        if wanted is not None:
            markets = {market_of(symbol) for symbol in wanted}
            files = [rel for rel in files if partition_values(rel)[0] in markets]
        if not files:
            return {}
        found: dict[str, dt.date] = {}
        if wanted is None:
            self._max_dates(self._table(files, ["symbol", "trade_date"]), found)
            return dict(sorted(found.items()))
        # Newest partitions first, in growing batches; stop once every symbol was seen (a file's
        # trade_date equals its dt, so older partitions cannot hold a newer date), or once the
        # look-back window of each market with a missing symbol is read.
        newest = {
            market: max(partition_values(rel)[1] for rel in files if rel.startswith(f"market={market}/"))
            for market in {partition_values(rel)[0] for rel in files}
        }
        oldest = {
            market: day - dt.timedelta(days=MARKETS[market].cadence_days * LOOKBACK_RECORDS)
            for market, day in newest.items()
        }
        by_day: dict[dt.date, list[str]] = {}
        for rel in files:
            market, day = partition_values(rel)
            if day >= oldest[market]:
                by_day.setdefault(day, []).append(rel)
        days = sorted(by_day, reverse=True)
        batch = 1
        while days and not wanted.issubset(found):
            chunk, days = days[:batch], days[batch:]
            batch = min(batch * 2, 64)
            missing = sorted(wanted - set(found))
            open_markets = {market_of(symbol) for symbol in missing}
            chunk_files = [
                rel for day in chunk for rel in by_day[day] if partition_values(rel)[0] in open_markets
            ]
            if not chunk_files:
                continue
            table = self._table(
                chunk_files, ["symbol", "trade_date"], filter=ds.field("symbol").isin(missing)
            )
            self._max_dates(table, found)
        return dict(sorted(found.items()))

    @staticmethod
    def _max_dates(table: pa.Table, found: dict[str, dt.date]) -> None:
        if table.num_rows == 0:
            return
        grouped = table.group_by("symbol", use_threads=False).aggregate([("trade_date", "max")])
        symbols = grouped.column("symbol").to_pylist()
        newest = grouped.column("trade_date_max").to_pylist()
        for symbol, day in zip(symbols, newest, strict=True):
            if symbol not in found or day > found[symbol]:
                found[symbol] = day
