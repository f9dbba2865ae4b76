"""``ParquetLake``: atomic, idempotent upserts keyed on (symbol, trade_date), staging, and the readers.

A partition is one market's calendar year (``layout``). An upsert touches only the partitions of its
input and rewrites one only when a row in it changed. Large loads *stage* their rows first (durable
files under ``_staging/<run>/``, out of every reader's way) and *commit* them once, partition by
partition, so each partition is written once per load whatever the chunking. How concurrent writers are
kept apart is the store's ``guard`` (``stores.base``): a lock per partition (local), compare-and-swap
with re-read and re-merge (S3), or a single-writer lease.

The lake owns its folder: every write first moves files it did not write out of the readers' globs
(into ``_quarantine/``); reads skip them. See docs/LAKE.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_shortint.exceptions import (
    InvalidParameterError,
    LakeConflictError,
    LakeSchemaError,
    LakeWriteError,
)
from airflow_provider_shortint.lake import arrow
from airflow_provider_shortint.lake.layout import (
    PART_FILE,
    STAGING_DIR,
    Partition,
    is_temp_name,
    market_folder,
    parse_data_file,
    parse_staged_file,
    partition_of,
    quarantine_name,
    staged_file,
    staging_folder,
)
from airflow_provider_shortint.lake.lease import WriterLease, refuse_unguarded
from airflow_provider_shortint.lake.location import parse_location
from airflow_provider_shortint.lake.stores import open_store
from airflow_provider_shortint.lake.stores.base import (
    LockingStore,
    StaleRead,
    Stored,
    WriteConflict,
    WriteGuard,
)
from airflow_provider_shortint.markets import MARKETS, market_of
from airflow_provider_shortint.retry import backoff_delay

if TYPE_CHECKING:
    import pyarrow as pa
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

MAX_WRITE_ATTEMPTS = 12  # compare-and-swap: attempts per partition before LakeConflictError
CONFLICT_BACKOFF = (0.02, 1.0)  # base and cap (s) of the jittered wait after a conflict
MAX_READ_ATTEMPTS = 3  # a file replaced while it was being read in ranges is read again, this often
# latest_dates(symbols): how far back, in records of the market's cadence (Market.cadence_days), it
# looks for a wanted symbol before reporting it absent: 53 records = about a year for HK (weekly), two
# for US (fortnightly). A symbol with no record in that window is reported absent, so the operator
# fetches its whole history and the upsert keeps the identical stored rows unchanged (docs/LAKE.md).
LOOKBACK_RECORDS = 53
_SHOWN = 5  # foreign files named in one log line
#: A temp file in a staging folder (a stager killed while it wrote) is removed by a commit once it is
#: this old (no lock tells whether its writer still runs); ``discard_staged`` removes it at once.
STALE_STAGING_TEMP_SECONDS = 3600.0
_T = TypeVar("_T")


@dataclass(frozen=True)
class UpsertResult:
    """What one :meth:`ParquetLake.upsert` (or :meth:`ParquetLake.commit_staged`) did."""

    rows_written: int  # input rows that were new or differed from the stored version
    rows_unchanged: int  # input rows identical to the stored version (stored row and ingested_at kept)
    partitions_written: tuple[str, ...]  # "market=HK/year=2026", sorted
    partitions_unchanged: int  # partitions of the input in which nothing changed (files not touched)
    latest_trade_date: dict[str, str]  # market -> newest trade_date (ISO) among the input rows
    conflicts: int = 0  # compare-and-swap writes another writer beat, each re-read, re-merged, retried
    rows_written_by_market: dict[str, int] = field(default_factory=dict)  # market -> rows written
    quarantined: tuple[str, ...] = ()  # files the lake did not write, moved to _quarantine/ first


@dataclass(frozen=True)
class _StagedPart:
    """Where a commit finds one partition's staged rows: row groups of one staged file, and every
    partition those row groups hold (a row of another one is refused)."""

    file: str
    row_groups: list[int]
    named: frozenset[Partition]


@dataclass(frozen=True)
class StageResult:
    """What one :meth:`ParquetLake.stage` made durable: rows and the staged file (one per call)."""

    rows: int
    files: tuple[str, ...]


@dataclass(frozen=True)
class Contents:
    """One listing of the lake, sorted out: what readers take, what the lake did not write."""

    partitions: tuple[Partition, ...]  # the data files of the lake (yearly; daily in a daily lake)
    legacy: tuple[Partition, ...]  # daily-layout data files
    foreign: tuple[str, ...]  # files the lake did not write that readers would take: quarantined
    strangers: tuple[str, ...]  # other files outside the market folders: left alone

    @property
    def daily(self) -> bool:
        """A lake of the daily layout only (read, never written: ``lake.migrate`` moves it)."""
        return bool(self.legacy) and not any(not part.legacy for part in self.partitions)


class ParquetLake:
    """A hive-partitioned Parquet dataset of short-interest rows (DESIGN.md §6, docs/LAKE.md)."""

    def __init__(self, path: str | os.PathLike[str] | ObjectStoragePath) -> None:
        self._store = open_store(parse_location(path))
        self._sleep: Callable[[float], None] = time.sleep
        self._stageable = False  # set once stage() found the lake writable

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
        """Location of the file holding ``market``'s rows of ``trade_date``:
        ``{uri}/market=HK/year=2026/part-0.parquet``."""
        if market not in MARKETS:
            raise InvalidParameterError(f"market must be one of {list(MARKETS)}, got {market!r}")
        if isinstance(trade_date, dt.datetime):
            trade_date = trade_date.date()
        if not isinstance(trade_date, dt.date):
            raise InvalidParameterError(
                f"trade_date must be a datetime.date, got {type(trade_date).__name__}"
            )
        return self._store.full(partition_of(market, trade_date).file)

    # -- what is in the lake ----------------------------------------------------------------------------

    def _contents(self) -> Contents:
        """One listing of the lake (its '_'/'.' folders excepted), sorted into partitions and foreign files.

        A data file is a registered market's ``year=YYYY/part-0.parquet`` (or, in a lake of the daily
        layout, ``dt=YYYY-MM-DD/part-0.parquet``). Anything else in a market folder, and any other
        ``*.parquet`` file, is foreign: readers would take it beside the lake's own rows.
        """
        years: list[Partition] = []
        legacy: list[Partition] = []
        foreign: list[str] = []
        strangers: list[str] = []
        for rel in self._store.list_files():
            partition = parse_data_file(rel)
            if partition is not None:
                (legacy if partition.legacy else years).append(partition)
            elif market_folder(rel) is not None or rel.endswith(".parquet"):
                foreign.append(rel)
            else:
                strangers.append(rel)
        if years:  # the lake's own layout: daily files beside yearly ones are foreign
            foreign.extend(part.file for part in legacy)
            partitions = years
        else:
            partitions = legacy
        return Contents(
            tuple(sorted(partitions)), tuple(sorted(legacy)), tuple(sorted(foreign)), tuple(strangers)
        )

    def _readable(self) -> Contents:
        """The contents, with one warning naming what readers of the lake skip."""
        contents = self._contents()
        if contents.foreign:
            log.warning(
                "lake %s: skipping %d file(s) the lake did not write: %s; the next write moves them to "
                "_quarantine/ (docs/LAKE.md)",
                self.uri,
                len(contents.foreign),
                _some(contents.foreign),
            )
        return contents

    def _refuse_daily(self, contents: Contents) -> None:
        if contents.daily:
            raise LakeSchemaError(
                f"lake {self.uri} holds {len(contents.legacy)} partition(s) of the daily layout (e.g. "
                f"{contents.legacy[-1].file}); the lake writes yearly partitions (market=XX/year=YYYY/"
                "part-0.parquet) and never both in one folder, where readers would read both: move it "
                "into a new folder with `python -m airflow_provider_shortint.lake.migrate SOURCE TARGET` "
                "(docs/LAKE.md); nothing was written"
            )

    def _quarantine(self, contents: Contents) -> tuple[str, ...]:
        """Move the foreign files out of the readers' way; files outside market folders that are not
        Parquet are left alone (and named in a warning)."""
        if contents.strangers:
            log.warning(
                "lake %s: %d file(s) outside the market folders that the lake did not write are left "
                "alone: %s (pyarrow.dataset over the lake would try to read them)",
                self.uri,
                len(contents.strangers),
                _some(contents.strangers),
            )
        if not contents.foreign:
            return ()
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        moved: list[str] = []
        folders: set[str] = set()
        for rel in contents.foreign:
            target = quarantine_name(rel, stamp)
            try:
                self._store.move(rel, target)
            except FileNotFoundError:
                continue  # another writer moved it first
            except LakeWriteError as err:  # a symbolic link on the way: nothing is moved through it
                log.warning("lake %s: %s left in place: %s", self.uri, rel, err)
                continue
            moved.append(rel)
            folders.add(rel.rpartition("/")[0])
            log.warning(
                "lake %s: moved %s, a file the lake did not write, to %s (readers would count its rows "
                "beside the lake's own); upsert its rows if they belong in the lake",
                self.uri,
                rel,
                target,
            )
        for folder in sorted(folders, reverse=True):
            if folder and not _is_partition_folder(folder):
                self._store.prune(folder)
        return tuple(moved)

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
        parts = dict(arrow.split_partitions(rows))
        return self._write(sorted(parts), parts.__getitem__, arrow.latest_per_market(rows))

    def _write(
        self,
        partitions: list[Partition],
        load: Callable[[Partition], pa.Table],
        latest: dict[str, str],
        after: Callable[[Partition], None] | None = None,
    ) -> UpsertResult:
        """Quarantine foreign files, then commit each of ``partitions`` with the rows ``load`` gives for
        it (one partition's rows in memory at a time); ``after`` runs once a partition is committed.
        ``latest`` is read at the end (``load`` may fill it in)."""
        contents = self._contents()
        self._refuse_daily(contents)
        written: list[str] = []
        by_market: dict[str, int] = {}
        rows_written = rows_unchanged = partitions_unchanged = conflicts = 0
        single_writer = self._store.guard is WriteGuard.SINGLE_WRITER
        with WriterLease(self._store) if single_writer else contextlib.nullcontext() as lease:
            quarantined = self._quarantine(contents)
            for index, partition in enumerate(partitions):
                try:
                    if isinstance(lease, WriterLease):
                        lease.refresh()
                    changed, n_written, n_unchanged, n_conflicts = self._commit(partition, load(partition))
                    if after is not None:
                        after(partition)
                except BaseException as err:
                    pending = [part.name for part in partitions[index:]]
                    failure = self._failed(err, partition.name, written, pending)
                    if failure is err:
                        raise
                    raise failure from err
                if changed:
                    written.append(partition.name)
                    by_market[partition.market] = by_market.get(partition.market, 0) + n_written
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
            latest_trade_date=dict(sorted(latest.items())),
            conflicts=conflicts,
            rows_written_by_market=dict(sorted(by_market.items())),
            quarantined=quarantined,
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

    def _commit(self, partition: Partition, incoming: pa.Table) -> tuple[bool, int, int, int]:
        """Read, merge, write one partition as the store's guard requires.

        Returns (changed, rows written, rows unchanged, conflicts retried).
        """
        store = self._store
        if store.guard is WriteGuard.LOCK:
            if not isinstance(store, LockingStore):
                raise TypeError(f"{type(store).__name__} declares the guard 'lock' but has no lock()")
            with store.lock(partition.name):
                store.remove_stale_temps(partition.name)
                return (*self._merge_and_write(partition, incoming), 0)
        if store.guard is WriteGuard.SINGLE_WRITER:  # the caller holds the writer lease
            return (*self._merge_and_write(partition, incoming), 0)
        for attempt in range(1, MAX_WRITE_ATTEMPTS + 1):
            try:
                return (*self._merge_and_write(partition, incoming), attempt - 1)
            except WriteConflict:
                log.info(
                    "lake %s: %s changed while merging (attempt %d): re-reading",
                    self.uri,
                    partition.name,
                    attempt,
                )
                if attempt < MAX_WRITE_ATTEMPTS:
                    self._sleep(backoff_delay(attempt, *CONFLICT_BACKOFF))
        raise LakeConflictError(
            f"partition {partition.name} was replaced by other writers on each of {MAX_WRITE_ATTEMPTS} "
            "attempts to merge into it; too many writers on one partition at once"
        )

    def _merge_and_write(self, partition: Partition, incoming: pa.Table) -> tuple[bool, int, int]:
        rel = partition.file
        stored = self._store.read(rel)
        current = None if stored.data is None else arrow.from_parquet(stored.data, self._where(rel))
        merged, n_written, n_unchanged = arrow.merge(current, incoming)
        if merged is None:
            return False, 0, n_unchanged
        self._write_partition(partition, merged, stored)
        log.debug("%s/%s: %d row(s) written, %d unchanged", self.uri, partition.name, n_written, n_unchanged)
        return True, n_written, n_unchanged

    def _write_partition(self, partition: Partition, table: pa.Table, expected: Stored) -> None:
        """Replace one partition's file atomically with ``table`` (already merged)."""
        self._store.write(partition.file, arrow.to_parquet(table), expected)

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

    # -- staging ------------------------------------------------------------------------------------

    def stage(self, table: pa.Table, run: str, name: str) -> StageResult:
        """Make ``table``'s rows durable under ``_staging/<run>/`` (one file named ``name``, its footer
        naming the partitions of each row group) without touching a partition: :meth:`commit_staged`
        writes them later, each partition once for every writer of ``run``. Re-staging one ``name``
        replaces its file.

        Staged files end in ``.stage`` under a '_' folder: no documented reader sees them.
        """
        _check_name(run, "run")
        _check_name(name, "name")
        rows = arrow.conform(table, "stage() input", drop_partition_columns=True)
        if rows.num_rows == 0:
            return StageResult(0, ())
        arrow.check_rows(rows)
        if not self._stageable:  # once per lake object: a lake that cannot be written fails here
            refuse_unguarded(self._store)
            self._refuse_daily(self._contents())
            self._stageable = True
        rel = staged_file(run, name)
        self._store.put(rel, arrow.staged_parquet(rows))
        log.info("lake %s: staged %d row(s) of run %r in %s", self.uri, rows.num_rows, run, rel)
        return StageResult(rows.num_rows, (rel,))

    def staged_runs(self) -> dict[str, int]:
        """Staging runs waiting for a commit: folder name under ``_staging/`` -> number of staged files."""
        runs: dict[str, int] = {}
        for rel in self._store.list_files(STAGING_DIR, hidden=True):
            run = rel.split("/")[1] if rel.count("/") >= 1 else ""
            if run:
                runs[run] = runs.get(run, 0) + 1
        return dict(sorted(runs.items()))

    def discard_staged(self, run: str) -> int:
        """Delete what ``run`` staged without committing it; returns the number of files deleted."""
        _check_name(run, "run")
        folder = staging_folder(run)
        files = self._store.list_files(folder, hidden=True)
        for rel in files:
            self._store.delete(rel)
        self._store.prune(folder)
        return len(files)

    def commit_staged(self, run: str) -> UpsertResult:
        """Upsert everything ``run`` staged, one partition at a time, then delete the staged files.

        Each partition is read, merged and written once, whatever number of writers staged into it;
        memory holds one partition's staged rows (only the row groups of each staged file that hold it
        are read) and its stored rows. Among staged rows with one key, the file named last wins. A
        commit that fails half way leaves every staged file in place: committing again converges (rows
        already committed compare equal and are not rewritten).
        """
        _check_name(run, "run")
        folder = staging_folder(run)
        files: list[str] = []
        temps: set[str] = set()
        for rel in self._store.list_files(folder, hidden=True):
            if parse_staged_file(rel, run) is not None:
                files.append(rel)
            elif is_temp_name(rel.rpartition("/")[2]):
                temps.add(rel.rpartition("/")[0])
            else:
                log.warning("lake %s: %s is not a staged file of run %r: left alone", self.uri, rel, run)
        if isinstance(self._store, LockingStore):
            for temp_folder in sorted(temps):
                self._store.remove_stale_temps(temp_folder, older_than=STALE_STAGING_TEMP_SECONDS)
        groups: dict[Partition, list[_StagedPart]] = {}
        for rel in sorted(files):  # name order: the file named last wins a key
            where = self._where(rel)
            found = self._with_file(rel, functools.partial(arrow.staged_row_groups, where=where)) or []
            partitions: dict[str, Partition] = {}
            for name in sorted({name for names in found for name in names}):
                partition = parse_data_file(f"{name}/{PART_FILE}")
                if partition is None or partition.legacy:
                    raise LakeSchemaError(
                        f"lake {self.uri}: {where} names no partition of the lake: {name!r}"
                    )
                partitions[name] = partition
            for name, partition in partitions.items():
                held = [index for index, names in enumerate(found) if name in names]
                named = {partitions[other] for index in held for other in found[index]}
                groups.setdefault(partition, []).append(_StagedPart(rel, held, frozenset(named)))
        if not groups:
            for rel in files:
                self._store.delete(rel)
            self._store.prune(folder)
            return UpsertResult(0, 0, (), 0, {})
        latest: dict[str, str] = {}

        def load(partition: Partition) -> pa.Table:
            rows = self._staged_rows(partition, groups[partition])
            if rows.num_rows:
                for market, day in arrow.latest_per_market(rows).items():
                    latest[market] = max(latest.get(market, ""), day)
            return rows

        result = self._write(sorted(groups), load, latest)
        for rel in files:
            self._store.delete(rel)
        self._store.prune(folder)
        return result

    def _staged_rows(self, partition: Partition, parts: list[_StagedPart]) -> pa.Table:
        """The rows staged for ``partition``: the row groups of each staged file that hold it (files in
        name order, the last one wins per key), each file's rows of other partitions dropped as it is
        read. A row of a partition its row group does not name is refused, never dropped."""
        import pyarrow as pa

        from airflow_provider_shortint.records import lake_schema

        tables = []
        for part in parts:
            where = self._where(part.file)
            read = functools.partial(arrow.staged_rows, groups=part.row_groups, where=where)
            rows = self._with_file(part.file, read)
            if rows is None:  # committed and deleted by another commit of the run meanwhile
                continue
            mine, stray = _split_staged(rows, partition, part.named)
            if stray.num_rows:
                raise LakeSchemaError(
                    f"lake {self.uri}: the staged rows read for {partition.name} from {where} hold "
                    f"{stray.num_rows} row(s) of a market or year their row group does not name, e.g. "
                    f"{stray.slice(0, 1).to_pylist()[0]['symbol']}; discard the run (discard_staged) or "
                    f"move the file"
                )
            tables.append(mine)
        if not tables:
            return lake_schema().empty_table()
        rows = arrow.deduplicated(pa.concat_tables(tables))
        arrow.check_rows(rows)
        return rows

    # -- reading ------------------------------------------------------------------------------------

    def _where(self, rel: str) -> str:
        kind = "staged file" if rel.startswith(STAGING_DIR + "/") else "stored file"
        return f"{kind} {self._store.full(rel)}"

    def _with_file(self, rel: str, use: Callable[[Any], _T]) -> _T | None:
        """``use`` the stored file ``rel`` opened for reading (footer read, schema checked); None when
        the file is gone. A file replaced while it is read in ranges is read again, at most
        ``MAX_READ_ATTEMPTS`` times in all."""
        where = self._where(rel)
        for _ in range(MAX_READ_ATTEMPTS):
            try:
                return use(arrow.open_parquet(self._store.source(rel), where))
            except FileNotFoundError:
                return None
            except StaleRead:
                continue
        raise LakeConflictError(
            f"lake {self.uri}: {rel} was replaced on each of {MAX_READ_ATTEMPTS} attempts to read it"
        )

    def _rows(self, rel: str, columns: list[str], symbols: list[str] | None = None) -> pa.Table | None:
        """``columns`` of the stored file ``rel`` (only ``symbols``' rows when given); None if gone."""
        where = self._where(rel)
        return self._with_file(rel, lambda parquet: arrow.rows_from(parquet, where, columns, symbols))

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """The whole lake: the lake columns, then ``market`` (string) and ``year`` (int32), the hive
        keys readers take from the path (``dt``, date32, equal to ``trade_date``, on request).

        Rows come ordered by market, year, symbol, trade_date. ``columns`` selects (and orders)
        columns. An empty or missing lake gives an empty table. Files the lake did not write are skipped.
        """
        import pyarrow as pa

        schema = arrow.read_schema()
        wanted = arrow.wanted_columns(columns, schema.names, "the lake")
        stored = [name for name in wanted if name not in arrow.READ_EXTRA_COLUMNS]
        if any(name in ("year", "dt") for name in wanted) and "trade_date" not in stored:
            stored.append("trade_date")
        tables = []
        for partition in self._readable().partitions:
            rows = self._rows(partition.file, stored)
            if rows is not None:
                tables.append(arrow.with_partition_columns(rows, partition.market, wanted))
        if not tables:
            return pa.Table.from_batches([], schema=pa.schema([schema.field(name) for name in wanted]))
        return pa.concat_tables(tables)

    def latest_dates(self, symbols: Iterable[str] | None = None) -> dict[str, dt.date]:
        """Newest stored trade_date per symbol (all symbols when ``symbols`` is None).

        Reads only the ``symbol`` and ``trade_date`` columns. With ``symbols``, each market's partitions
        are read newest first, only the row groups that can hold a wanted symbol, and reading stops once
        every symbol has been seen: an up-to-date universe costs the newest file of its market. A symbol
        without a record in the last ``LOOKBACK_RECORDS`` cadences of its market (counted from the
        market's newest trade date) is absent from the result, as is a symbol the lake lacks: an absent
        symbol costs at most that window, never a scan of the whole lake.
        """
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
        partitions = self._readable().partitions
        found: dict[str, dt.date] = {}
        if wanted is None:
            for partition in partitions:
                self._max_dates(self._rows(partition.file, ["symbol", "trade_date"]), found)
            return dict(sorted(found.items()))
        by_market: dict[str, list[str]] = {}
        for symbol in wanted:
            with contextlib.suppress(Exception):
                by_market.setdefault(market_of(symbol), []).append(symbol)
        for market, market_symbols in sorted(by_market.items()):
            newest_first = sorted(
                (p for p in partitions if p.market == market), key=lambda p: p.last, reverse=True
            )
            self._latest_in_market(market, newest_first, set(market_symbols), found)
        return dict(sorted(found.items()))

    def _latest_in_market(
        self, market: str, partitions: list[Partition], missing: set[str], found: dict[str, dt.date]
    ) -> None:
        """Read ``partitions`` (newest first) until every symbol of ``missing`` is found or the look-back
        window, counted from the newest trade date of the market (the newest file's statistics), is
        passed."""
        window = dt.timedelta(days=MARKETS[market].cadence_days * LOOKBACK_RECORDS)
        oldest: dt.date | None = None
        for partition in partitions:
            if not missing or (oldest is not None and partition.last < oldest):
                return
            wanted = sorted(missing)
            where = self._where(partition.file)

            def use(parquet: Any, wanted: list[str] = wanted, where: str = where) -> tuple[Any, Any]:
                return arrow.newest_in(parquet), arrow.rows_from(
                    parquet, where, ["symbol", "trade_date"], wanted
                )

            read = self._with_file(partition.file, use)
            if read is None:
                continue
            newest, rows = read
            if oldest is None:
                oldest = (newest if newest is not None and not partition.legacy else partition.last) - window
            before = set(found)
            self._max_dates(rows, found)
            missing -= set(found) - before

    @staticmethod
    def _max_dates(table: pa.Table | None, found: dict[str, dt.date]) -> None:
        if table is None or table.num_rows == 0:
            return
        grouped = table.group_by("symbol", use_threads=False).aggregate([("trade_date", "max")])
        symbols = grouped.column("symbol").to_pylist()
        newest = grouped.column("trade_date_max").to_pylist()
        for symbol, day in zip(symbols, newest, strict=True):
            if symbol not in found or day > found[symbol]:
                found[symbol] = day


def _some(rels: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(rels[:_SHOWN])
    return shown if len(rels) <= _SHOWN else f"{shown} and {len(rels) - _SHOWN} more"


def _is_partition_folder(folder: str) -> bool:
    return parse_data_file(f"{folder}/part-0.parquet") is not None


def _check_name(value: object, what: str) -> None:
    """A staging run or file name: a non-empty string without surrounding blanks or control characters
    (``layout.safe_name`` turns it into one file-name segment)."""
    if (
        not isinstance(value, str)
        or not value.strip()
        or value != value.strip()
        or any(ord(char) < 32 or ord(char) == 127 for char in value)
    ):
        raise InvalidParameterError(
            f"the staging {what} must be a non-empty string without surrounding blanks or control "
            f"characters, got {value!r}"
        )


def _split_staged(
    rows: pa.Table, partition: Partition, named: frozenset[Partition]
) -> tuple[pa.Table, pa.Table]:
    """``rows`` (read from row groups holding the partitions ``named``, ``partition`` among them) split
    into those of ``partition`` and the stray ones, of no partition ``named``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    markets = arrow.market_column(rows.column("symbol"))
    years = pc.year(rows.column("trade_date"))
    masks = {other: pc.and_(pc.equal(markets, other.market), pc.equal(years, other.year)) for other in named}
    inside: Any = pa.repeat(False, rows.num_rows)
    for mask in masks.values():
        inside = pc.or_(inside, mask)
    stray = rows.slice(0, 0) if pc.all(inside).as_py() else rows.filter(pc.invert(inside))
    return (rows if len(named) == 1 else rows.filter(masks[partition])), stray
