"""An Apache Iceberg table through ``pyiceberg`` (extra ``[iceberg]``), named ``namespace.table`` in a
catalog (``catalog``: an Airflow connection, or an embedded SQLite catalog in a warehouse folder).

Partitioned by ``market`` and ``year(trade_date)`` (hidden partitioning: no extra column), rows sorted by
(symbol, trade_date) in each file.

Writers: ``Table.upsert`` of pyiceberg is not used. Its commit retry re-applies the rows it decided to
insert on top of whatever another writer committed meanwhile, without looking again: four writers on
overlapping keys left 600 rows for 500 keys. Here each upsert reads the stored rows of its keys from one
snapshot, commits only what differs with the catalog's check that the table is still at that snapshot
(``AssertRefSnapshotId``; SQL catalog: a conditional UPDATE of the metadata pointer; REST: the server),
and on a refused commit re-reads and re-compares (``base.MAX_COMMIT_ATTEMPTS``). pyiceberg's own blind
retry is switched off on the table: ``commit.retry.num-retries=0``, set at creation and on a table that
lacks it. ``maintain`` also finds and removes duplicate keys, whoever wrote them.

pyiceberg is imported inside the methods: the DAG processor never pays for it.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
from dataclasses import dataclass
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
from airflow_provider_shortint.lake.formats.catalog import (
    DEFAULT_CATALOG_CONN_ID,
    CatalogConfig,
    catalog_from_connection,
    embedded_catalog,
)
from airflow_provider_shortint.records import COLUMNS
from airflow_provider_shortint.retry import backoff_delay
from airflow_provider_shortint.text import shown

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

_PART = r"[A-Za-z_][A-Za-z0-9_]{0,127}"
IDENTIFIER = re.compile(rf"{_PART}(\.{_PART})+")
MAX_IDENTIFIER = 255
CONN_ID = re.compile(r"[A-Za-z0-9_.\-]{1,250}")
#: pyiceberg's commit retry re-applies an upsert's rows without re-reading: off on every table written here.
NO_BLIND_RETRY = {"commit.retry.num-retries": "0"}
TABLE_PROPERTIES = {
    **NO_BLIND_RETRY,
    "write.parquet.compression-codec": "zstd",
    "write.metadata.delete-after-commit.enabled": "true",  # old metadata files do not pile up
    "write.metadata.previous-versions-max": "100",
}
#: What losing a race to create the namespace or the table looks like (SQL catalogs: a unique constraint).
_CREATE_RACES = (
    "IntegrityError",
    "NamespaceAlreadyExistsError",
    "TableAlreadyExistsError",
    "CommitFailedException",
)
#: A (market, year) partition with at least this many data files is rewritten by compaction.
COMPACT_MIN_FILES = 2


@dataclass(frozen=True)
class _State:
    """One snapshot of the table: what an upsert reads from and commits on top of."""

    table: Any
    snapshot_id: int | None


class IcebergTableLake(TableLake):
    """An Iceberg table of short-interest rows (see the module docstring)."""

    table_format = "iceberg"

    def __init__(
        self, path: object, *, catalog_conn_id: str | None = None, warehouse: str | None = None
    ) -> None:
        super().__init__()
        require("pyiceberg", "iceberg", "table_format='iceberg'")
        self.identifier = check_identifier(path)
        self.namespace, _, self.name = self.identifier.rpartition(".")
        self._asset_uri = iceberg_asset_uri(path, catalog_conn_id=catalog_conn_id, warehouse=warehouse)
        self._conn_id = catalog_conn_id or DEFAULT_CATALOG_CONN_ID
        self._config: CatalogConfig | None = None if warehouse is None else embedded_catalog(warehouse)
        self._catalog: Any = None
        self._checked = False

    def __repr__(self) -> str:
        return f"IcebergTableLake({self.identifier!r})"

    @property
    def config(self) -> CatalogConfig:
        """The catalog (read from the connection on first use)."""
        if self._config is None:
            self._config = catalog_from_connection(self._conn_id)
        return self._config

    @property
    def uri(self) -> str:
        """``iceberg://<catalog_conn_id>/<namespace.table>``, or ``iceberg:/<warehouse>/<namespace.table>``
        for an embedded catalog: names the table without reading the connection (so a DAG can be parsed)."""
        return self._asset_uri

    def asset_uri(self) -> str:
        """The table's Asset URI: :attr:`uri` (see :func:`iceberg_asset_uri`)."""
        return self._asset_uri

    def lineage_dataset(self) -> tuple[str, str]:
        """``(catalog location, "namespace.table")``, e.g. ``("https://catalog.example.com/api/catalog",
        "analytics.short_interest")`` or ``("sqlite:////data/iceberg/catalog.db", "shortint.short_interest")``
        (reads the catalog connection)."""
        return self.config.location, self.identifier

    # -- the table ----------------------------------------------------------------------------------

    def _catalog_(self) -> Any:
        if self._catalog is None:
            self._catalog = self.config.load()
        return self._catalog

    def _load(self) -> Any:
        from pyiceberg.exceptions import NoSuchTableError

        try:
            return self._catalog_().load_table(self.identifier)
        except NoSuchTableError:
            return None

    def _snapshot(self, *, create: bool) -> _State | None:
        table = self._load()
        if table is None:
            if not create:
                return None
            table = self._create()
        table = self._ready(table)
        current = table.current_snapshot()
        return _State(table, None if current is None else current.snapshot_id)

    def _create(self) -> Any:
        """Create the namespace and the table unless they exist; of writers creating them at the same
        moment one wins (a SQL catalog reports a loser as an integrity error) and the others use its table."""
        catalog = self._catalog_()
        for attempt in range(1, self.max_commit_attempts + 1):
            try:
                catalog.create_namespace_if_not_exists(self.namespace)
                table = catalog.create_table_if_not_exists(
                    self.identifier,
                    schema=iceberg_schema(),
                    partition_spec=partition_spec(),
                    sort_order=sort_order(),
                    properties=TABLE_PROPERTIES,
                )
                log.info("table %s: Iceberg table ready in %s", self.identifier, self.config.location)
                return table
            except Exception as err:
                if type(err).__name__ not in _CREATE_RACES:
                    raise
                log.info(
                    "table %s: created by another writer meanwhile (%s)", self.identifier, type(err).__name__
                )
                table = self._load()
                if table is not None:
                    return table
                if attempt < self.max_commit_attempts:
                    self._sleep(backoff_delay(attempt, 0.05, 2.0))
        raise LakeConflictError(
            f"table {self.identifier}: could not be created past other writers creating it"
        )

    def _ready(self, table: Any) -> Any:
        """``table`` checked to be a short-interest table and with pyiceberg's blind retry off."""
        if not self._checked:
            names = [column.name for column in table.schema().columns]
            expected = list(table_schema().names)
            if names != expected:
                raise LakeSchemaError(
                    f"the Iceberg table {self.identifier} has columns {names}; a short-interest table has "
                    f"{expected}"
                )
            self._checked = True
        from pyiceberg.exceptions import CommitFailedException

        for attempt in range(1, self.max_commit_attempts + 1):
            if all(table.properties.get(key) == value for key, value in NO_BLIND_RETRY.items()):
                return table
            log.warning(
                "table %s: setting %s (pyiceberg's commit retry would re-apply rows without re-reading)",
                self.identifier,
                NO_BLIND_RETRY,
            )
            try:
                with table.transaction() as transaction:
                    transaction.set_properties(NO_BLIND_RETRY)
            except CommitFailedException:
                if attempt < self.max_commit_attempts:
                    self._sleep(backoff_delay(attempt, 0.05, 2.0))
            table = self._catalog_().load_table(self.identifier)
        raise LakeConflictError(
            f"table {self.identifier}: its properties could not be set past other writers"
        )

    def _scan(
        self,
        state: Any,
        columns: list[str],
        *,
        symbols: list[str] | None = None,
        markets: list[str] | None = None,
        dates: tuple[dt.date, dt.date] | None = None,
    ) -> pa.Table:
        AlwaysTrue, And, GreaterThanOrEqual, In, LessThanOrEqual = _expressions(
            "AlwaysTrue", "And", "GreaterThanOrEqual", "In", "LessThanOrEqual"
        )

        condition: Any = AlwaysTrue()
        if markets is not None:
            condition = And(condition, In(MARKET_COLUMN, markets))
        if symbols is not None:
            condition = And(condition, In("symbol", symbols))
        if dates is not None:
            condition = And(
                condition,
                And(GreaterThanOrEqual("trade_date", dates[0]), LessThanOrEqual("trade_date", dates[1])),
            )
        if state.snapshot_id is None:
            return table_schema().empty_table().select(columns)
        scan = state.table.scan(
            row_filter=condition, selected_fields=tuple(columns), snapshot_id=state.snapshot_id
        )
        rows: pa.Table = scan.to_arrow()
        return rows.select(columns)

    def _commit(self, state: Any, changed: pa.Table, replaced: pa.Table) -> None:
        transaction = state.table.transaction()
        if replaced.num_rows:
            transaction.overwrite(changed, overwrite_filter=keys_filter(replaced))
        else:
            transaction.append(changed)
        self._committed(transaction)

    def _committed(self, transaction: Any) -> Any:
        """Commit ``transaction``; a refused or unknown outcome is a :class:`CommitConflict` (the caller
        re-reads, so a commit that did land is seen and nothing is written twice)."""
        from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException

        try:
            return transaction.commit_transaction()
        except (CommitFailedException, CommitStateUnknownException) as err:
            raise CommitConflict(str(err)) from err
        except Exception as err:
            if _is_busy_database(err):  # SQLite: another writer holds the catalog's lock
                raise CommitConflict(str(err)) from err
            raise

    # -- versions -----------------------------------------------------------------------------------

    def _at(self, as_of: int | dt.datetime) -> _State:
        as_of = check_as_of(as_of)
        table = self._load()
        if table is None:
            raise InvalidParameterError(
                f"table {self.identifier} does not exist: there is no snapshot to read"
            )
        if isinstance(as_of, int):
            snapshot = table.snapshot_by_id(as_of)
        else:
            snapshot = table.snapshot_as_of_timestamp(int(as_of.timestamp() * 1000))
        if snapshot is None:
            ids = [entry.version for entry in self._versions(table)]
            shown_as_of = as_of if isinstance(as_of, int) else as_of.isoformat()
            raise InvalidParameterError(
                f"table {self.identifier} has no snapshot {shown_as_of} (snapshots: {ids[:20]})"
            )
        return _State(table, snapshot.snapshot_id)

    @property
    def version(self) -> int | None:
        """The current snapshot id; None when the table does not exist or has no snapshot."""
        table = self._load()
        current = None if table is None else table.current_snapshot()
        return None if current is None else int(current.snapshot_id)

    def versions(self) -> list[TableVersion]:
        """Every snapshot the table keeps, oldest first (``maintain`` expires those older than its
        retention)."""
        table = self._load()
        return [] if table is None else self._versions(table)

    @staticmethod
    def _versions(table: Any) -> list[TableVersion]:
        snapshots = sorted(table.snapshots(), key=lambda snapshot: snapshot.timestamp_ms)
        return [
            TableVersion(
                int(snapshot.snapshot_id),
                dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, dt.UTC),
                str(snapshot.summary.operation.value) if snapshot.summary is not None else "",
            )
            for snapshot in snapshots
        ]

    # -- maintenance --------------------------------------------------------------------------------

    def maintain(
        self,
        *,
        compact: bool = True,
        retention: dt.timedelta = DEFAULT_RETENTION,
        dry_run: bool = False,
    ) -> MaintenanceResult:
        """Repair duplicate keys, rewrite each (market, year) partition of ``COMPACT_MIN_FILES`` or more
        files into sorted files, expire snapshots older than ``retention`` (the current one stays), and
        delete files under the table's location that no kept snapshot references and that are older than
        ``retention`` (a writer's files not yet committed are younger). ``dry_run`` changes nothing and
        reports what would be expired and deleted.
        """
        retention = check_retention(retention)
        if self._load() is None:
            return MaintenanceResult(0, 0, 0, 0, 0, None, dry_run)
        repaired = self._repair(dry_run)
        compacted = written = 0
        if compact and not dry_run:
            compacted, written = self._compact()
        cutoff = dt.datetime.now(dt.UTC) - retention
        expired = self._expire(cutoff, dry_run)
        deleted = self._remove_orphans(cutoff, dry_run)
        return MaintenanceResult(
            duplicates_removed=repaired,
            files_compacted=compacted,
            files_written=written,
            versions_expired=expired,
            files_deleted=len(deleted),
            version=self.version,
            dry_run=dry_run,
            deleted=tuple(deleted),
        )

    def _retried(self, what: str, step: Any) -> Any:
        """``step(state)`` on a fresh snapshot until its commit is not refused (bounded, with backoff)."""
        for attempt in range(1, self.max_commit_attempts + 1):
            state = self._snapshot(create=False)
            try:
                return step(state)
            except CommitConflict as err:
                log.info("table %s: %s commit refused (attempt %d): %s", self.identifier, what, attempt, err)
                if attempt < self.max_commit_attempts:
                    self._sleep(backoff_delay(attempt, 0.05, 2.0))
        raise LakeConflictError(
            f"table {self.identifier}: the {what} commit was refused {self.max_commit_attempts} times by "
            "other writers"
        )

    def _repair(self, dry_run: bool) -> int:
        """Drop extra rows of keys stored more than once (the newest ingested_at stays): one commit per
        market rewriting the affected symbols. Returns the rows dropped (or that would be)."""
        And, EqualTo, In = _expressions("And", "EqualTo", "In")

        state = self._snapshot(create=False)
        keys = duplicate_keys(self._scan(state, ["symbol", "trade_date", MARKET_COLUMN]))
        removed = 0
        for market in sorted(set(keys.column(MARKET_COLUMN).to_pylist())):
            symbols = sorted(
                {
                    symbol
                    for symbol, where in zip(
                        keys.column("symbol").to_pylist(), keys.column(MARKET_COLUMN).to_pylist(), strict=True
                    )
                    if where == market
                }
            )

            def rewrite(state: _State, market: str = market, symbols: list[str] = symbols) -> int:
                rows = self._conformed(
                    self._scan(state, [*COLUMNS, MARKET_COLUMN], symbols=symbols, markets=[market]),
                    "the rows to repair",
                )
                kept = sorted_for_write(deduplicated_keep_newest(rows))
                if not dry_run:
                    transaction = state.table.transaction()
                    transaction.overwrite(
                        kept, overwrite_filter=And(EqualTo(MARKET_COLUMN, market), In("symbol", symbols))
                    )
                    self._committed(transaction)
                return int(rows.num_rows - kept.num_rows)

            removed += self._retried("repair", rewrite)
        if removed:
            log.warning(
                "table %s: %d duplicate row(s) %s",
                self.identifier,
                removed,
                "found" if dry_run else "removed",
            )
        return removed

    def _compact(self) -> tuple[int, int]:
        """Rewrite every (market, year) partition holding ``COMPACT_MIN_FILES`` or more data files."""
        And, EqualTo, GreaterThanOrEqual, LessThanOrEqual = _expressions(
            "And", "EqualTo", "GreaterThanOrEqual", "LessThanOrEqual"
        )

        state = self._snapshot(create=False)
        if state is None or state.snapshot_id is None:
            return 0, 0
        counts: dict[tuple[str, int], int] = {}
        files = state.table.inspect.data_files()
        for partition in files.column("partition").to_pylist():
            key = (partition[MARKET_COLUMN], 1970 + int(partition["trade_date_year"]))
            counts[key] = counts.get(key, 0) + 1
        compacted = written = 0
        for (market, year), count in sorted(counts.items()):
            if count < COMPACT_MIN_FILES:
                continue
            bounds = And(
                EqualTo(MARKET_COLUMN, market),
                And(
                    GreaterThanOrEqual("trade_date", dt.date(year, 1, 1)),
                    LessThanOrEqual("trade_date", dt.date(year, 12, 31)),
                ),
            )

            def rewrite(state: _State, market: str = market, year: int = year, bounds: Any = bounds) -> int:
                rows = self._conformed(
                    self._scan(
                        state,
                        [*COLUMNS, MARKET_COLUMN],
                        markets=[market],
                        dates=(dt.date(year, 1, 1), dt.date(year, 12, 31)),
                    ),
                    "the rows to compact",
                )
                transaction = state.table.transaction()
                transaction.overwrite(sorted_for_write(rows), overwrite_filter=bounds)
                table = self._committed(transaction)
                return _files_in(table, market, year)

            written += self._retried("compaction", rewrite)
            compacted += count
        return compacted, written

    def _expire(self, cutoff: dt.datetime, dry_run: bool) -> int:
        """Expire the snapshots committed before ``cutoff`` (never the current one)."""
        table = self._load()
        old = _expired(table, cutoff)
        if old and not dry_run:
            table.maintenance.expire_snapshots().by_ids(old).commit()
        return len(old)

    def _remove_orphans(self, cutoff: dt.datetime, dry_run: bool) -> list[str]:
        """Delete the files under the table's location that no kept snapshot references (data files,
        manifests, manifest lists, metadata files) and that were last modified before ``cutoff``;
        returns their URIs. With ``dry_run`` the snapshots ``_expire`` would expire count as gone."""
        from pyarrow import fs as pafs

        from airflow_provider_shortint.lake.formats.aws import filesystem_for

        table = self._load()
        gone = set(_expired(table, cutoff)) if dry_run else set()
        referenced = _referenced_files(table, [s for s in table.snapshots() if s.snapshot_id not in gone])
        filesystem, base, prefix = filesystem_for(table.location(), self.config.aws_conn_id)
        if filesystem is None:
            log.info("table %s: orphan files are only removed from local and S3 warehouses", self.identifier)
            return []
        try:
            found = filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except OSError as err:
            log.warning("table %s: cannot list %s (%s): orphan files not removed", self.identifier, base, err)
            return []
        orphans = []
        for info in found:
            if info.type != pafs.FileType.File or info.mtime is None:
                continue
            uri = prefix + info.path
            if _normal(uri) in referenced or info.mtime.astimezone(dt.UTC) >= cutoff:
                continue
            orphans.append(uri)
        if not dry_run:
            for uri in orphans:
                table.io.delete(uri)
        return sorted(orphans)


def check_identifier(path: object) -> str:
    """``namespace.table`` (letters, digits, '_'; the namespace may have several levels), or
    InvalidParameterError."""
    if not isinstance(path, str) or len(path) > MAX_IDENTIFIER or not IDENTIFIER.fullmatch(path):
        raise InvalidParameterError(
            "an Iceberg table is named 'namespace.table' (letters, digits, '_'; a namespace may have "
            f"several levels), got {shown(path)}"
        )
    return path


def iceberg_asset_uri(path: object, *, catalog_conn_id: object = None, warehouse: object = None) -> str:
    """The Asset URI of an Iceberg table, from syntax alone (no connection read, no pyiceberg):
    ``iceberg://<catalog_conn_id>/<namespace.table>`` (default connection ``iceberg_default``), or
    ``iceberg:/<abs warehouse>/<namespace.table>`` for an embedded catalog."""
    identifier = check_identifier(path)
    if catalog_conn_id is not None and warehouse is not None:
        raise InvalidParameterError(
            "give either catalog_conn_id (a catalog connection) or warehouse (an embedded catalog), not both"
        )
    if warehouse is not None:
        root = embedded_catalog(warehouse).folder
        return f"iceberg:{root}/{identifier}"  # no authority: Airflow's own spelling of such a URI
    if catalog_conn_id is None:
        catalog_conn_id = DEFAULT_CATALOG_CONN_ID
    if not isinstance(catalog_conn_id, str) or not CONN_ID.fullmatch(catalog_conn_id):
        raise InvalidParameterError(f"catalog_conn_id must be a connection id, got {shown(catalog_conn_id)}")
    return f"iceberg://{catalog_conn_id}/{identifier}"


# -- table definition and filters --------------------------------------------------------------------


@functools.cache
def iceberg_schema() -> Any:
    """The Iceberg schema of the table: the lake columns (required where the lake says not null) + market."""
    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import DateType, DoubleType, LongType, NestedField, StringType, TimestamptzType

    types = {
        pa.string(): StringType(),
        pa.date32(): DateType(),
        pa.int64(): LongType(),
        pa.float64(): DoubleType(),
        pa.timestamp("us", tz="UTC"): TimestamptzType(),
    }
    fields = [
        NestedField(
            field_id=index, name=field.name, field_type=types[field.type], required=not field.nullable
        )
        for index, field in enumerate(table_schema(), start=1)
    ]
    return Schema(*fields)


def _field_id(name: str) -> int:
    return int(iceberg_schema().find_field(name).field_id)


def partition_spec() -> Any:
    """``market`` (identity) and ``year(trade_date)``."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform, YearTransform

    return PartitionSpec(
        PartitionField(
            source_id=_field_id(MARKET_COLUMN),
            field_id=1000,
            transform=IdentityTransform(),
            name=MARKET_COLUMN,
        ),
        PartitionField(
            source_id=_field_id("trade_date"),
            field_id=1001,
            transform=YearTransform(),
            name="trade_date_year",
        ),
    )


def sort_order() -> Any:
    """(symbol, trade_date): what the writer sorts each file by, declared for other engines."""
    from pyiceberg.table.sorting import SortField, SortOrder
    from pyiceberg.transforms import IdentityTransform

    return SortOrder(
        SortField(source_id=_field_id("symbol"), transform=IdentityTransform()),
        SortField(source_id=_field_id("trade_date"), transform=IdentityTransform()),
    )


def keys_filter(keys: pa.Table) -> Any:
    """An Iceberg row filter matching exactly the (symbol, trade_date) keys of ``keys`` (one term per
    market and symbol: ``market = m AND symbol = s AND trade_date IN (...)``)."""
    And, EqualTo, In, Or = _expressions("And", "EqualTo", "In", "Or")

    dates: dict[tuple[str, str], list[dt.date]] = {}
    for symbol, day, market in zip(
        keys.column("symbol").to_pylist(),
        keys.column("trade_date").to_pylist(),
        keys.column(MARKET_COLUMN).to_pylist(),
        strict=True,
    ):
        dates.setdefault((market, symbol), []).append(day)
    terms = [
        And(EqualTo(MARKET_COLUMN, market), And(EqualTo("symbol", symbol), In("trade_date", days)))
        for (market, symbol), days in sorted(dates.items())
    ]
    return functools.reduce(Or, terms)


def _files_in(table: Any, market: str, year: int) -> int:
    count = 0
    for partition in table.inspect.data_files().column("partition").to_pylist():
        if partition[MARKET_COLUMN] == market and 1970 + int(partition["trade_date_year"]) == year:
            count += 1
    return count


def _expressions(*names: str) -> list[Any]:
    """pyiceberg's row-filter classes (``pyiceberg.expressions``), untyped: their pydantic signatures
    confuse mypy's view of the positional (term, value) form pyiceberg documents."""
    import pyiceberg.expressions as expressions

    return [getattr(expressions, name) for name in names]


def _normal(uri: str) -> str:
    """A file URI as both pyiceberg and a listing spell it (``file:/x``, ``file:///x`` and ``/x`` alike)."""
    if uri.startswith("file:"):
        return "/" + uri[len("file:") :].lstrip("/")
    if uri.startswith("s3a://"):
        return "s3://" + uri[len("s3a://") :]
    return uri


def _expired(table: Any, cutoff: dt.datetime) -> list[int]:
    """Ids of the snapshots committed before ``cutoff``, the current one excepted."""
    current = table.current_snapshot()
    limit = int(cutoff.timestamp() * 1000)
    return [
        snapshot.snapshot_id
        for snapshot in table.snapshots()
        if snapshot.timestamp_ms < limit and (current is None or snapshot.snapshot_id != current.snapshot_id)
    ]


def _referenced_files(table: Any, snapshots: list[Any]) -> set[str]:
    """Every file ``snapshots`` need (their manifest lists, manifests, live data and delete files), and
    the table's metadata files (current and logged)."""
    referenced: set[str] = {_normal(table.metadata_location)}
    referenced.update(_normal(entry.metadata_file) for entry in table.metadata.metadata_log)
    seen: set[str] = set()
    for snapshot in snapshots:
        referenced.add(_normal(snapshot.manifest_list))
        for manifest in snapshot.manifests(table.io):
            referenced.add(_normal(manifest.manifest_path))
            if manifest.manifest_path in seen:
                continue
            seen.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                referenced.add(_normal(entry.data_file.file_path))
    return referenced


def _is_busy_database(err: Exception) -> bool:
    """A SQL catalog's "database is locked" (SQLite): the statement did not run; safe to re-read and retry."""
    return type(err).__name__ == "OperationalError" and "locked" in str(err).lower()
