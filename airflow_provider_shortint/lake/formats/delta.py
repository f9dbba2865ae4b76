"""A Delta Lake table through ``deltalake`` (delta-rs, extra ``[delta]``): MERGE on (symbol, trade_date).

Where: a local folder (``/data/tables/short_interest``, ``file://...``) or S3
(``s3://conn_id@bucket/key``, credentials and endpoint from that Airflow AWS connection, passed to
delta-rs as ``storage_options``). Partitioned by ``market``.

Writers: each upsert MERGEs only the rows that differ from the version it read, with
``when_matched_update_all`` guarded by "some value differs" and ``when_not_matched_insert_all``.
delta-rs commits a version with a put-if-absent of the next log entry (on S3 a conditional write) and
checks a lost race against the winners' changes; a commit it refuses raises ``CommitFailedError``, and
the upsert re-reads and retries (``base.MAX_COMMIT_ATTEMPTS``). No lock service.

deltalake is imported inside the methods: the DAG processor never pays for it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import TYPE_CHECKING, Any

from airflow_provider_shortint.exceptions import InvalidParameterError, LakeConflictError, LakeSchemaError
from airflow_provider_shortint.lake.formats.base import (
    DEFAULT_RETENTION,
    MARKET_COLUMN,
    CommitConflict,
    MaintenanceResult,
    TableLake,
    TableVersion,
    check_as_of,
    check_retention,
    deduplicated_keep_newest,
    duplicate_keys,
    require,
    sorted_for_write,
    table_schema,
)
from airflow_provider_shortint.lake.location import LocalLocation, describe, parse_location
from airflow_provider_shortint.records import COLUMNS, VALUE_COLUMNS
from airflow_provider_shortint.retry import backoff_delay

if TYPE_CHECKING:
    import pyarrow as pa
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_shortint.lake.formats.aws import AwsAccess

log = logging.getLogger(__name__)

S3_PROTOCOLS = ("s3", "s3a")
#: The MERGE's join: the market first, so delta-rs prunes the other market's files before joining.
MERGE_ON = "t.market = s.market AND t.symbol = s.symbol AND t.trade_date = s.trade_date"
#: A matched row is updated only when a value differs (null-safe; NaN equals NaN): identical rows keep
#: their ingested_at even when a concurrent writer stored them between our read and our commit.
VALUES_DIFFER = " OR ".join(f"(t.{name} IS DISTINCT FROM s.{name})" for name in VALUE_COLUMNS)
#: Columns compaction clusters by with ``zorder=True``.
ZORDER_COLUMNS = ("symbol", "trade_date")


def delta_asset_uri(path: object) -> str:
    """The Asset URI of the Delta table at ``path`` from syntax alone (no deltalake, no I/O):
    ``file:///abs/path`` or ``s3://bucket/key``, however the path is spelled."""
    location = parse_location(path, syntax_only=True)
    if isinstance(location, LocalLocation):
        return location.uri
    if location.protocol not in S3_PROTOCOLS:
        raise InvalidParameterError(
            f"lake_path {describe(str(path))}: a Delta table lives in a local folder or on S3 "
            f"(s3://conn_id@bucket/key), not on {location.protocol}://"
        )
    return "s3://" + location.uri.partition("://")[2]


class DeltaTableLake(TableLake):
    """A Delta table of short-interest rows at a local path or on S3 (see the module docstring)."""

    table_format = "delta"

    def __init__(self, path: str | os.PathLike[str] | ObjectStoragePath) -> None:
        super().__init__()
        require("deltalake", "delta", "table_format='delta'")
        location = parse_location(path)
        if isinstance(location, LocalLocation):
            self._table_uri = location.root
            self._aws_conn_id: str | None = None
            self._remote = False
        elif location.protocol in S3_PROTOCOLS:
            self._table_uri = location.uri.replace(f"{location.protocol}://", "s3://", 1)
            self._aws_conn_id = location.conn_id
            self._remote = True
        else:
            delta_asset_uri(path)  # raises: neither local nor S3
        self._location = location
        self._access: AwsAccess | None = None
        self._checked = False

    @property
    def uri(self) -> str:
        """``/abs/path`` or ``s3://bucket/key`` (no connection id, no credentials)."""
        return self._table_uri

    def asset_uri(self) -> str:
        """``file:///abs/path`` or ``s3://bucket/key``: the table's URI."""
        return self._table_uri if self._remote else self._location.uri

    def lineage_dataset(self) -> tuple[str, str]:
        """OpenLineage naming of a path: ``("file", "/abs/path")`` or ``("s3://bucket", "key")``."""
        if not self._remote:
            return "file", self._table_uri
        bucket, _, key = self._table_uri[len("s3://") :].partition("/")
        return f"s3://{bucket}", key

    # -- the table ----------------------------------------------------------------------------------

    def _options(self) -> dict[str, str] | None:
        """delta-rs ``storage_options`` (secrets: never logged); None for a local table."""
        if not self._remote:
            return None
        if self._access is None:
            from airflow_provider_shortint.lake.formats.aws import aws_access

            self._access = aws_access(self._aws_conn_id)
        return self._access.delta_options()

    def _open(self, version: int | None = None) -> Any:
        """The DeltaTable (latest or ``version``), or None when there is no table at the path."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            table = DeltaTable(self._table_uri, version=version, storage_options=self._options())
        except TableNotFoundError:
            return None
        if not self._checked:
            self._check_schema(table)
        return table

    def _check_schema(self, table: Any) -> None:
        """Refuse a table at the path that is not a short-interest table (other columns or partitions)."""
        names = [field.name for field in table.schema().fields]
        expected = list(table_schema().names)
        partitions = list(table.metadata().partition_columns)
        if names != expected or partitions != [MARKET_COLUMN]:
            raise LakeSchemaError(
                f"the Delta table at {self.uri} has columns {names} partitioned by {partitions}; a "
                f"short-interest table has {expected} partitioned by ['{MARKET_COLUMN}']"
            )
        self._checked = True

    def _snapshot(self, *, create: bool) -> Any:
        table = self._open()
        if table is not None or not create:
            return table
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError

        try:
            DeltaTable.create(
                self._table_uri,
                table_schema(),
                mode="error",
                partition_by=[MARKET_COLUMN],
                name="short_interest",
                storage_options=self._options(),
            )
            log.info("table %s: Delta table created", self.uri)
        except DeltaError as err:  # another writer created it first: use theirs
            log.info("table %s: created by another writer meanwhile (%s)", self.uri, err)
        table = self._open()
        if table is None:
            raise LakeConflictError(f"table {self.uri}: the Delta table could not be created or read back")
        return table

    def _scan(
        self,
        state: Any,
        columns: list[str],
        *,
        symbols: list[str] | None = None,
        markets: list[str] | None = None,
        dates: tuple[dt.date, dt.date] | None = None,
    ) -> pa.Table:
        import pyarrow as pa
        from deltalake import QueryBuilder

        where = _where(symbols, markets, dates)
        query = f"SELECT {', '.join(columns)} FROM rows" + (f" WHERE {where}" if where else "")
        rows = pa.table(QueryBuilder().register("rows", state).execute(query))
        schema = table_schema()
        return rows.cast(
            pa.schema([schema.field(name) for name in rows.column_names])
        )  # string_view -> string

    def _commit(self, state: Any, changed: pa.Table, replaced: pa.Table) -> None:
        from deltalake import WriterProperties
        from deltalake.exceptions import CommitFailedError

        try:
            (
                state.merge(
                    changed,
                    predicate=MERGE_ON,
                    source_alias="s",
                    target_alias="t",
                    writer_properties=WriterProperties(compression="ZSTD"),
                    streamed_exec=False,  # the source is in memory: its key ranges prune target files
                )
                .when_matched_update_all(predicate=VALUES_DIFFER)
                .when_not_matched_insert_all()
                .execute()
            )
        except CommitFailedError as err:
            raise CommitConflict(str(err)) from err

    # -- versions -----------------------------------------------------------------------------------

    def _at(self, as_of: int | dt.datetime) -> Any:
        from deltalake.exceptions import DeltaError

        as_of = check_as_of(as_of)
        table = self._open()
        if table is None:
            raise InvalidParameterError(f"table {self.uri} does not exist: there is no version to read")
        try:
            table.load_as_version(as_of)
        except (DeltaError, ValueError, OSError) as err:
            shown = as_of if isinstance(as_of, int) else as_of.isoformat()
            raise InvalidParameterError(
                f"table {self.uri} has no version {shown} (versions {self._version_range(table)}): {err}"
            ) from err
        return table

    @staticmethod
    def _version_range(table: Any) -> str:
        history = table.history()
        if not history:
            return "none"
        numbers = sorted(entry["version"] for entry in history)
        return f"{numbers[0]}..{numbers[-1]} in the log"

    @property
    def version(self) -> int | None:
        """The table's current version number; None when there is no table."""
        table = self._open()
        return None if table is None else int(table.version())

    def versions(self) -> list[TableVersion]:
        """Every version in the table's log, oldest first (``read(as_of=...)`` reads each of them
        while its files are kept: ``maintain`` removes the files of versions older than its retention)."""
        table = self._open()
        if table is None:
            return []
        entries = sorted(table.history(), key=lambda entry: entry["version"])
        return [
            TableVersion(
                int(entry["version"]),
                dt.datetime.fromtimestamp(entry["timestamp"] / 1000, dt.UTC),
                str(entry.get("operation", "")),
            )
            for entry in entries
        ]

    # -- maintenance --------------------------------------------------------------------------------

    def maintain(
        self,
        *,
        compact: bool = True,
        retention: dt.timedelta = DEFAULT_RETENTION,
        dry_run: bool = False,
        zorder: bool = False,
    ) -> MaintenanceResult:
        """Repair duplicate keys, compact small files (``zorder``: cluster by symbol and trade_date),
        vacuum files no version younger than ``retention`` needs, and checkpoint the log.

        Reading a version older than ``retention`` fails once its files are vacuumed. A retention
        below the table's ``delta.deletedFileRetentionDuration`` (7 days) is honoured with a warning:
        a reader or writer still on an older version loses its files. ``dry_run`` changes nothing and
        reports what the vacuum would delete.
        """
        retention = check_retention(retention)
        table = self._open()
        if table is None:
            return MaintenanceResult(0, 0, 0, 0, 0, None, dry_run)
        repaired = self._repair(dry_run)
        compacted = written = 0
        if compact and not dry_run:
            metrics = self._retried("compaction", lambda t: _optimize(t, zorder))
            compacted = int(metrics.get("numFilesRemoved", 0))
            written = int(metrics.get("numFilesAdded", 0))
        hours = int(retention.total_seconds() // 3600)
        enforce = retention >= DEFAULT_RETENTION
        if not enforce:
            log.warning(
                "table %s: vacuum with a retention of %s: readers of older versions lose their files",
                self.uri,
                retention,
            )
        table = self._open()
        # The log keeps a removed file's tombstone for the table's retention: vacuum lists it again after
        # the file is gone. Only files still there are reported (and deleted).
        candidates = table.vacuum(retention_hours=hours, dry_run=True, enforce_retention_duration=enforce)
        deleted = self._existing(candidates)
        if deleted and not dry_run:
            table.vacuum(retention_hours=hours, dry_run=False, enforce_retention_duration=enforce)
        if not dry_run:
            table = self._open()
            table.create_checkpoint()
            table.cleanup_metadata()
        return MaintenanceResult(
            duplicates_removed=repaired,
            files_compacted=compacted,
            files_written=written,
            versions_expired=0,
            files_deleted=len(deleted),
            version=self.version,
            dry_run=dry_run,
            deleted=tuple(sorted(deleted)),
        )

    def _existing(self, paths: list[str]) -> list[str]:
        """Those of ``paths`` (relative to the table, absolute, or URIs) that exist, as absolute URIs."""
        from pyarrow import fs as pafs

        from airflow_provider_shortint.lake.formats.aws import filesystem_for

        if not paths:
            return []
        filesystem, base, prefix = filesystem_for(self._table_uri, self._aws_conn_id)
        located = [
            path.partition("://")[2] if "://" in path else path if path.startswith("/") else f"{base}/{path}"
            for path in paths
        ]
        infos = filesystem.get_file_info(located)
        return sorted(prefix + info.path for info in infos if info.type == pafs.FileType.File)

    def _retried(self, what: str, step: Any) -> dict[str, Any]:
        """Run ``step(table)`` on a fresh table until its commit is not refused (bounded, with backoff)."""
        from deltalake.exceptions import CommitFailedError

        for attempt in range(1, self.max_commit_attempts + 1):
            try:
                result: dict[str, Any] = step(self._open()) or {}
                return result
            except CommitFailedError as err:
                log.info("table %s: %s commit refused (attempt %d): %s", self.uri, what, attempt, err)
                if attempt < self.max_commit_attempts:
                    self._sleep(backoff_delay(attempt, 0.05, 2.0))
        raise LakeConflictError(
            f"table {self.uri}: the {what} commit was refused {self.max_commit_attempts} times by other "
            "writers"
        )

    def _repair(self, dry_run: bool) -> int:
        """Drop extra rows of keys stored more than once (the newest ingested_at stays), in one commit per
        market that rewrites only the affected symbols. Returns the rows dropped (or that would be)."""
        table = self._open()
        keys = duplicate_keys(self._scan(table, ["symbol", "trade_date", MARKET_COLUMN]))
        if keys.num_rows == 0:
            return 0
        removed = 0
        for market in sorted(set(keys.column(MARKET_COLUMN).to_pylist())):
            symbols = sorted(
                {
                    symbol
                    for symbol, row_market in zip(
                        keys.column("symbol").to_pylist(), keys.column(MARKET_COLUMN).to_pylist(), strict=True
                    )
                    if row_market == market
                }
            )

            def rewrite(current: Any, market: str = market, symbols: list[str] = symbols) -> dict[str, Any]:
                from deltalake import write_deltalake

                rows = self._conformed(
                    self._scan(current, [*COLUMNS, MARKET_COLUMN], symbols=symbols, markets=[market]),
                    "the rows to repair",
                )
                kept = sorted_for_write(deduplicated_keep_newest(rows))
                nonlocal removed
                removed += rows.num_rows - kept.num_rows
                if not dry_run:
                    write_deltalake(
                        current,
                        kept,
                        mode="overwrite",
                        predicate=_in_predicate(market, symbols),
                        storage_options=self._options(),
                    )
                return {}

            self._retried("repair", rewrite)
        log.warning("table %s: %d duplicate row(s) %s", self.uri, removed, "found" if dry_run else "removed")
        return removed


def _optimize(table: Any, zorder: bool) -> dict[str, Any]:
    from deltalake import WriterProperties

    properties = WriterProperties(compression="ZSTD")
    if zorder:
        result: dict[str, Any] = table.optimize.z_order(list(ZORDER_COLUMNS), writer_properties=properties)
    else:
        result = table.optimize.compact(writer_properties=properties)
    return result


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _in_predicate(market: str, symbols: list[str]) -> str:
    """``market = 'HK' AND symbol IN ('HK.00700', ...)`` (symbols are canonical: no quote inside)."""
    return f"{MARKET_COLUMN} = {_quoted(market)} AND symbol IN ({', '.join(map(_quoted, symbols))})"


def _where(
    symbols: list[str] | None, markets: list[str] | None, dates: tuple[dt.date, dt.date] | None
) -> str:
    """The SQL condition of a scan (delta-rs' own engine prunes files on it: partitions, then file stats)."""
    terms = []
    if markets is not None:
        terms.append(f"{MARKET_COLUMN} IN ({', '.join(map(_quoted, markets))})")
    if symbols is not None:
        terms.append(f"symbol IN ({', '.join(map(_quoted, symbols))})")
    if dates is not None:
        low, high = dates
        terms.append(f"trade_date BETWEEN DATE '{low.isoformat()}' AND DATE '{high.isoformat()}'")
    return " AND ".join(terms)
