"""The partitioned Parquet lake (DESIGN.md §6): atomic, idempotent upserts keyed on (symbol, trade_date).

Layout: ``{lake}/market=HK/dt=2026-05-15/part-0.parquet``, one file per (market, trading date), every
file in :func:`~airflow_provider_shortint.records.lake_schema`, rows sorted by symbol. An upsert touches
only the partitions present in its input, rewrites a partition only when a row in it changed, and
replaces a file atomically (local: temp file + ``os.replace``; object stores: one PUT of the whole
file). Local writers serialise per partition with ``fcntl.flock`` on ``{lake}/_locks/*.lock``.

pyarrow is imported inside the functions that need it: the DAG processor imports operator modules on
every parse and must not pay for it. See docs/LAKE.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from airflow_provider_shortint.exceptions import InvalidParameterError
from airflow_provider_shortint.records import COLUMNS, VALUE_COLUMNS, lake_schema
from airflow_provider_shortint.markets import MARKETS, market_of

if TYPE_CHECKING:
    import pyarrow as pa
    from airflow.sdk import ObjectStoragePath

__all__ = [
    "LOCK_DIR",
    "PARTITION_COLUMNS",
    "PART_FILE",
    "LakeSchemaError",
    "ParquetLake",
    "UpsertResult",
    "open_lake",
]

log = logging.getLogger(__name__)

PART_FILE = "part-0.parquet"
LOCK_DIR = "_locks"  # '_' prefix: pyarrow, Spark, Trino skip it; DuckDB's **/*.parquet never matches it
PARTITION_COLUMNS = ("market", "dt")
TEMP_PREFIX = f".{PART_FILE}."  # temp files: '.'-prefixed and ending in ".tmp", never "*.parquet"
TEMP_SUFFIX = ".tmp"

# A data file as readers see it: market=X/dt=YYYY-MM-DD/<name>.parquet, name not hidden ('.', '_').
_DATA_FILE = re.compile(r"market=([A-Za-z0-9]+)/dt=([0-9]{4}-[0-9]{2}-[0-9]{2})/[^/._][^/]*\.parquet")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_LOCAL_SCHEMES = ("file", "local")
_UTC_NAMES = ("UTC", "utc", "Etc/UTC", "+00:00", "Z")


class LakeSchemaError(ValueError):
    """A table or stored file that is not in the lake schema and cannot be cast to it losslessly."""


@dataclass(frozen=True)
class UpsertResult:
    """What one :meth:`ParquetLake.upsert` did."""

    rows_written: int  # input rows that were new or differed from the stored version
    rows_unchanged: int  # input rows identical to the stored version (stored row and ingested_at kept)
    partitions_written: tuple[str, ...]  # "market=HK/dt=2026-05-15", sorted
    partitions_unchanged: int  # partitions of the input in which nothing changed (files not touched)
    latest_trade_date: dict[str, str]  # market -> newest trade_date (ISO) among the input rows


# --------------------------------------------------------------------------------------------------
# Opening a lake: path validation without I/O
# --------------------------------------------------------------------------------------------------


def open_lake(path: str | os.PathLike[str] | ObjectStoragePath) -> ParquetLake:
    """Open the lake at ``path``: an absolute local path, a ``file://`` URL, or an ObjectStoragePath URL.

    Object storage takes Airflow's form ``s3://aws_conn_id@bucket/prefix`` (the connection id before
    '@'). Only the syntax is checked here; nothing is read or created until the first upsert or read.
    Raises ``InvalidParameterError`` for relative paths, empty strings, non-paths and unknown schemes.
    """
    return ParquetLake(path)


def _bad(message: str) -> InvalidParameterError:
    return InvalidParameterError(message)


def _describe(text: str) -> str:
    """The path for an error message, with anything that could be a secret (user:password@) removed."""
    if "://" not in text:
        return repr(text)
    scheme, _, rest = text.partition("://")
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "…@" + netloc.rpartition("@")[2]
    return repr(f"{scheme}://{netloc}{slash}{tail}")


def _resolve(path: object) -> _LocalStore | _RemoteStore:
    if isinstance(path, str):
        return _resolve_text(path)
    if isinstance(path, bytes) or path is None or isinstance(path, (int, float, bool)):
        raise _bad(f"lake_path must be an absolute path, file:// URL or object storage URL, not {path!r}")
    from airflow.sdk import ObjectStoragePath

    if isinstance(path, ObjectStoragePath):
        protocol = (path.protocol or "file").lower()
        if protocol in _LOCAL_SCHEMES:
            return _local_store(str(path.path), str(path))
        bucket = path.bucket
        if not bucket:
            raise _bad(f"lake_path {_describe(str(path))} names no bucket or container")
        return _RemoteStore(protocol, path.conn_id, bucket, path.key.strip("/"), path)
    if isinstance(path, os.PathLike):
        text = os.fspath(path)
        if not isinstance(text, str):
            raise _bad("lake_path must be a text path, got a bytes path")
        return _resolve_text(text)
    raise _bad(
        f"lake_path must be an absolute path, file:// URL or object storage URL, got {type(path).__name__}"
    )


def _resolve_text(text: str) -> _LocalStore | _RemoteStore:
    if not text.strip():
        raise _bad("lake_path is empty: give an absolute path, a file:// URL or an object storage URL")
    if "://" not in text:
        return _local_store(text, text)
    scheme = text.partition("://")[0]
    if not _SCHEME.fullmatch(scheme):
        raise _bad(f"lake_path {_describe(text)} has a malformed URL scheme")
    scheme = scheme.lower()
    try:
        parts = urlsplit(text)
    except ValueError:
        raise _bad(f"lake_path {_describe(text)} is not a valid URL") from None
    if scheme in _LOCAL_SCHEMES:
        if parts.netloc not in ("", "localhost"):
            raise _bad(
                f"lake_path {_describe(text)}: a file:// URL must name a local path (file:///abs/path)"
            )
        return _local_store(unquote(parts.path), text)
    from airflow.sdk.io import has_fs

    if not has_fs(scheme):
        raise _bad(
            f"lake_path {_describe(text)} uses the scheme {scheme!r}, for which Airflow has no filesystem "
            "(install the provider that brings it, or use a local path or s3://conn_id@bucket/prefix)"
        )
    userinfo, at, bucket = parts.netloc.rpartition("@")
    if ":" in userinfo:
        raise _bad(
            f"lake_path {_describe(text)} carries credentials: put them in an Airflow connection and "
            "name its id before '@' (s3://conn_id@bucket/prefix)"
        )
    if not bucket:
        raise _bad(f"lake_path {_describe(text)} names no bucket or container")
    if parts.query or parts.fragment:
        raise _bad(f"lake_path {_describe(text)} must not have a query or fragment")
    conn_id = unquote(userinfo) if at and userinfo else None
    return _RemoteStore(scheme, conn_id, bucket, unquote(parts.path).strip("/"), None)


def _local_store(path: str, shown: str) -> _LocalStore:
    if "\x00" in path:
        raise _bad("lake_path contains a NUL character")
    if not os.path.isabs(path):
        raise _bad(
            f"lake_path {_describe(shown)} is relative: give an absolute path (the working directory "
            "of an Airflow worker is not stable)"
        )
    return _LocalStore(os.path.normpath(path))


# --------------------------------------------------------------------------------------------------
# Storage back ends: local directory (flock + os.replace) and object storage (one PUT per file)
# --------------------------------------------------------------------------------------------------


class _LocalStore:
    """A lake in a local (or POSIX network) directory."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.uri = root

    def full(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}"

    @contextlib.contextmanager
    def lock(self, partition: str) -> Iterator[None]:
        """Hold the partition's exclusive flock (released when the fd closes, also if the process dies)."""
        import fcntl

        lock_dir = os.path.join(self.root, LOCK_DIR)
        os.makedirs(lock_dir, exist_ok=True)
        name = partition.replace("/", "_") + ".lock"
        fd = os.open(os.path.join(lock_dir, name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def remove_stale_temps(self, partition: str) -> None:
        """Delete temp files of writers that died mid-write (the caller holds the partition lock)."""
        folder = self.full(partition)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
                    log.info("removed a stale temp file %s/%s", folder, name)

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            with open(self.full(rel), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def write_atomic(self, rel: str, data: Any) -> None:
        """Temp file in the same folder, flush + fsync, os.replace, fsync the folder."""
        final = self.full(rel)
        folder = os.path.dirname(final)
        self._make_dirs(folder)
        temp = os.path.join(folder, f"{TEMP_PREFIX}{os.getpid()}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        _fsync_dir(folder)

    def _make_dirs(self, folder: str) -> None:
        missing: list[str] = []
        current = folder
        while not os.path.isdir(current):
            missing.append(current)
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
        if not missing:
            return
        os.makedirs(folder, exist_ok=True)
        for created in reversed(missing):  # make the new directory entries durable too
            _fsync_dir(os.path.dirname(created))

    def list_data_files(self) -> list[str]:
        """Relative paths of every data file (market=*/dt=*/*.parquet), sorted."""
        found: list[str] = []
        try:
            markets = os.listdir(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return found
        for market in markets:
            if not market.startswith("market="):
                continue
            try:
                days = os.listdir(os.path.join(self.root, market))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for day in days:
                try:
                    names = os.listdir(os.path.join(self.root, market, day))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                found.extend(f"{market}/{day}/{name}" for name in names)
        return sorted(rel for rel in found if _DATA_FILE.fullmatch(rel))

    def arrow_location(self) -> tuple[Any, str]:
        return None, self.root


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _RemoteStore:
    """A lake under an ObjectStoragePath (s3://conn_id@bucket/prefix, gs://..., ...).

    Object stores have no rename and no flock: a changed partition is built in memory and written to
    its final key in one write, so readers see the old object or the new one.
    """

    def __init__(
        self, protocol: str, conn_id: str | None, bucket: str, key: str, base: ObjectStoragePath | None
    ) -> None:
        self.protocol = protocol
        self.conn_id = conn_id
        self.bucket = bucket
        self.key = key
        self._base = base
        self.uri = f"{protocol}://{bucket}/{key}" if key else f"{protocol}://{bucket}"

    @property
    def base(self) -> ObjectStoragePath:
        if self._base is None:  # built on first use: building it resolves the connection
            from airflow.sdk import ObjectStoragePath

            self._base = ObjectStoragePath(self.uri, conn_id=self.conn_id)
        return self._base

    @property
    def fs(self) -> Any:
        return self.base.fs

    @property
    def root(self) -> str:
        return str(self.base.path).rstrip("/")

    def full(self, rel: str) -> str:
        return f"{self.uri}/{rel}"

    @contextlib.contextmanager
    def lock(self, partition: str) -> Iterator[None]:
        yield  # object stores: no cross-writer lock (see docs/LAKE.md, "Object storage")

    def remove_stale_temps(self, partition: str) -> None:
        return None  # nothing is ever written anywhere but the final key

    def read_bytes(self, rel: str) -> bytes | None:
        target: Any = self.base / rel
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(f"{self.root}/{rel}".rpartition("/")[0])
        try:
            with target.open("rb") as handle:
                data: bytes = handle.read()
                return data
        except FileNotFoundError:
            return None

    def write_atomic(self, rel: str, data: Any) -> None:
        payload = data.to_pybytes() if hasattr(data, "to_pybytes") else bytes(data)
        target: Any = self.base / rel
        with target.open("wb") as handle:
            handle.write(payload)

    def list_data_files(self) -> list[str]:
        root = self.root
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(root)
        try:
            paths = self.fs.find(root)
        except FileNotFoundError:
            return []
        prefix = root + "/"
        rels = (str(path)[len(prefix) :] for path in paths if str(path).startswith(prefix))
        return sorted(rel for rel in rels if _DATA_FILE.fullmatch(rel))

    def arrow_location(self) -> tuple[Any, str]:
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return PyFileSystem(FSSpecHandler(self.fs)), self.root


# --------------------------------------------------------------------------------------------------
# Arrow helpers (no pandas anywhere)
# --------------------------------------------------------------------------------------------------


def _castable(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether ``source`` may become ``target`` without changing a value (a safe cast checks again)."""
    import pyarrow as pa

    types = pa.types
    if source.equals(target) or types.is_null(source):
        return True
    if types.is_dictionary(source):
        return _castable(source.value_type, target)
    if types.is_string(target):
        return bool(types.is_string(source) or types.is_large_string(source) or types.is_string_view(source))
    if types.is_int64(target):
        return bool(source in (pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint16(), pa.uint32()))
    if types.is_float64(target):
        return bool(types.is_float16(source) or types.is_float32(source))
    if types.is_date32(target):
        return bool(types.is_date64(source))
    if types.is_timestamp(target):
        return bool(types.is_timestamp(source) and source.tz in _UTC_NAMES)
    return False


def _conform(table: Any, what: str, *, drop_partition_columns: bool = False) -> pa.Table:
    """``table`` in exactly lake_schema() (column order, types, no metadata), or raise LakeSchemaError."""
    import pyarrow as pa

    if not isinstance(table, pa.Table):
        raise LakeSchemaError(f"{what} must be a pyarrow.Table in lake_schema(), got {type(table).__name__}")
    schema = lake_schema()
    names = list(table.column_names)
    if drop_partition_columns:
        names = [name for name in names if name not in PARTITION_COLUMNS]
    missing = [name for name in COLUMNS if name not in names]
    extra = [name for name in names if name not in COLUMNS]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if missing or extra or duplicated:
        problems = []
        if missing:
            problems.append(f"missing columns {missing}")
        if extra:
            problems.append(f"unexpected columns {extra}")
        if duplicated:
            problems.append(f"duplicated columns {duplicated}")
        raise LakeSchemaError(f"{what} is not in the lake schema: " + "; ".join(problems))
    arrays = []
    for field in schema:
        column = table.column(field.name)
        if not column.type.equals(field.type):
            if not _castable(column.type, field.type):
                raise LakeSchemaError(
                    f"{what}: column {field.name!r} is {column.type}, which cannot be cast to "
                    f"{field.type} without loss"
                )
            try:
                column = column.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise LakeSchemaError(
                    f"{what}: column {field.name!r} does not fit {field.type}: {err}"
                ) from err
        if not field.nullable and column.null_count:
            raise LakeSchemaError(f"{what}: column {field.name!r} has {column.null_count} null value(s)")
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=schema)


def _values_equal(left: pa.Table, right: pa.Table) -> list[bool]:
    """Row-wise equality of VALUE_COLUMNS; null equals null and NaN equals NaN."""
    import pyarrow as pa
    import pyarrow.compute as pc

    same = pa.array([True] * left.num_rows, pa.bool_())
    for name in VALUE_COLUMNS:
        a, b = left.column(name), right.column(name)
        equal = pc.fill_null(pc.equal(a, b), False)
        both_null = pc.and_(pc.is_null(a), pc.is_null(b))
        equal = pc.or_(equal, both_null)
        if pa.types.is_floating(a.type):
            both_nan = pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False)
            equal = pc.or_(equal, both_nan)
        same = pc.and_(same, equal)
    result: list[bool] = same.to_pylist()
    return result


def _sorted_by_symbol(table: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    order = pc.sort_indices(table, sort_keys=[("symbol", "ascending"), ("trade_date", "ascending")])
    return table.take(order).combine_chunks()


def _merge(stored: pa.Table | None, incoming: pa.Table) -> tuple[pa.Table | None, int, int]:
    """Merge deduplicated ``incoming`` rows into a partition's ``stored`` rows.

    Returns (table to write or None when nothing changed, rows written, rows unchanged).
    """
    import pyarrow as pa

    if stored is None or stored.num_rows == 0:
        return _sorted_by_symbol(incoming), incoming.num_rows, 0
    stored_keys = list(zip(stored["symbol"].to_pylist(), stored["trade_date"].to_pylist(), strict=True))
    incoming_keys = list(zip(incoming["symbol"].to_pylist(), incoming["trade_date"].to_pylist(), strict=True))
    position = {key: index for index, key in enumerate(stored_keys)}
    matched_in: list[int] = []
    matched_stored: list[int] = []
    for index, key in enumerate(incoming_keys):
        found = position.get(key)
        if found is not None:
            matched_in.append(index)
            matched_stored.append(found)
    unchanged: set[int] = set()
    if matched_in:
        equal = _values_equal(incoming.take(_indices(matched_in)), stored.take(_indices(matched_stored)))
        unchanged = {index for index, same in zip(matched_in, equal, strict=True) if same}
    changed = [index for index in range(incoming.num_rows) if index not in unchanged]
    if not changed:
        return None, 0, len(unchanged)
    replaced = {incoming_keys[index] for index in changed}
    kept = [index for index, key in enumerate(stored_keys) if key not in replaced]
    merged = pa.concat_tables([stored.take(_indices(kept)), incoming.take(_indices(changed))])
    return _sorted_by_symbol(merged), len(changed), len(unchanged)


def _indices(positions: list[int]) -> pa.Array:
    import pyarrow as pa

    return pa.array(positions, pa.int64())


def _split_partitions(table: pa.Table) -> list[tuple[str, dt.date, pa.Table]]:
    """Deduplicate on (symbol, trade_date), last row wins; group by (market, trade_date), sorted."""
    import pyarrow as pa
    import pyarrow.compute as pc

    position = pa.array(range(table.num_rows), pa.int64())
    indexed = table.append_column("__row", position)
    last = indexed.group_by(["symbol", "trade_date"], use_threads=False).aggregate([("__row", "max")])
    rows = table.take(last.column("__row_max"))
    markets = pc.if_else(pc.starts_with(rows.column("symbol"), "HK."), "HK", "US")
    keyed = rows.append_column("__market", markets)
    order = pc.sort_indices(
        keyed,
        sort_keys=[("__market", "ascending"), ("trade_date", "ascending"), ("symbol", "ascending")],
    )
    rows = rows.take(order)
    # Partition boundaries from one group_by over the sorted rows: Python loops per partition, not per row.
    keys = pa.table(
        {
            "market": keyed.column("__market").take(order),
            "trade_date": rows.column("trade_date"),
            "pos": pa.array(range(rows.num_rows), pa.int64()),
        }
    )
    groups = keys.group_by(["market", "trade_date"], use_threads=False).aggregate(
        [("pos", "min"), ("pos", "count")]
    )
    groups = groups.sort_by("pos_min")
    return [
        (market, day, rows.slice(start, count))
        for market, day, start, count in zip(
            groups.column("market").to_pylist(),
            groups.column("trade_date").to_pylist(),
            groups.column("pos_min").to_pylist(),
            groups.column("pos_count").to_pylist(),
            strict=True,
        )
    ]


def _check_symbols(table: pa.Table) -> None:
    import pyarrow.compute as pc

    symbols = table.column("symbol")
    known = pc.or_(pc.starts_with(symbols, "HK."), pc.starts_with(symbols, "US."))
    bad = pc.filter(symbols, pc.invert(known))
    if len(bad):
        examples = sorted(set(bad.to_pylist()))[:3]
        raise LakeSchemaError(
            f"{len(bad)} row(s) have a symbol outside the HK and US markets, e.g. {examples}: "
            "normalise symbols with airflow_provider_shortint.symbols first"
        )


def _to_parquet(table: pa.Table) -> pa.Buffer:
    """Deterministic Parquet bytes: same rows -> same bytes (one row group, zstd, lake schema only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(
        table.combine_chunks().replace_schema_metadata(None),
        sink,
        compression="zstd",
        row_group_size=max(1, table.num_rows),
        write_statistics=True,
    )
    return sink.getvalue()


def _partition_name(market: str, trade_date: dt.date) -> str:
    return f"market={market}/dt={trade_date.isoformat()}"


# --------------------------------------------------------------------------------------------------
# The lake
# --------------------------------------------------------------------------------------------------


class ParquetLake:
    """A hive-partitioned Parquet dataset of short-interest rows (see module docstring)."""

    def __init__(self, path: str | os.PathLike[str] | ObjectStoragePath) -> None:
        self._store = _resolve(path)

    def __repr__(self) -> str:
        return f"ParquetLake({self.uri!r})"

    @property
    def uri(self) -> str:
        """Printable location without credentials: an absolute path, or e.g. ``s3://bucket/prefix``."""
        return self._store.uri

    @property
    def is_local(self) -> bool:
        """True when the lake is a local directory (cross-process locking applies)."""
        return isinstance(self._store, _LocalStore)

    def partition_path(self, market: str, trade_date: dt.date) -> str:
        """Location of one partition's file, e.g. ``{uri}/market=HK/dt=2026-05-15/part-0.parquet``."""
        if market not in MARKETS:
            raise _bad(f"market must be one of {list(MARKETS)}, got {market!r}")
        if isinstance(trade_date, dt.datetime):
            trade_date = trade_date.date()
        if not isinstance(trade_date, dt.date):
            raise _bad(f"trade_date must be a datetime.date, got {type(trade_date).__name__}")
        return self._store.full(f"{_partition_name(market, trade_date)}/{PART_FILE}")

    # -- writing ------------------------------------------------------------------------------------

    def upsert(self, table: pa.Table) -> UpsertResult:
        """Merge ``table`` (lake schema, any markets/dates/symbols) into the lake, partition by partition.

        Each touched partition is read, merged on (symbol, trade_date) and, only if a row changed,
        rewritten atomically under the partition's lock. Duplicate keys in ``table``: the last wins.
        """
        import pyarrow.compute as pc

        rows = _conform(table, "upsert() input", drop_partition_columns=True)
        if rows.num_rows == 0:
            return UpsertResult(0, 0, (), 0, {})
        _check_symbols(rows)
        latest: dict[str, str] = {}
        for name in MARKETS:
            mask = pc.starts_with(rows.column("symbol"), f"{name}.")
            newest = pc.max(pc.filter(rows.column("trade_date"), mask)).as_py()
            if newest is not None:
                latest[name] = newest.isoformat()
        written: list[str] = []
        rows_written = rows_unchanged = partitions_unchanged = 0
        for market, trade_date, incoming in _split_partitions(rows):
            partition = _partition_name(market, trade_date)
            try:
                with self._store.lock(partition):
                    self._store.remove_stale_temps(partition)
                    stored = self._read_partition(partition)
                    merged, n_written, n_unchanged = _merge(stored, incoming)
                    if merged is not None:
                        self._write_partition(partition, merged)
                        written.append(partition)
                    else:
                        partitions_unchanged += 1
            except BaseException as err:
                if written:
                    err.add_note(
                        f"lake {self.uri}: {len(written)} partition(s) were already replaced (each "
                        f"atomically) before {partition} failed; re-running the upsert converges"
                    )
                raise
            rows_written += n_written
            rows_unchanged += n_unchanged
            log.debug("%s/%s: %d row(s) written, %d unchanged", self.uri, partition, n_written, n_unchanged)
        result = UpsertResult(
            rows_written=rows_written,
            rows_unchanged=rows_unchanged,
            partitions_written=tuple(sorted(written)),
            partitions_unchanged=partitions_unchanged,
            latest_trade_date=latest,
        )
        log.info(
            "lake %s: %d row(s) written, %d unchanged; %d partition(s) written, %d unchanged",
            self.uri,
            rows_written,
            rows_unchanged,
            len(written),
            partitions_unchanged,
        )
        return result

    def _read_partition(self, partition: str) -> pa.Table | None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rel = f"{partition}/{PART_FILE}"
        data = self._store.read_bytes(rel)
        if data is None:
            return None
        where = f"stored file {self._store.full(rel)}"
        try:
            table = pq.ParquetFile(pa.BufferReader(data)).read()
        except (pa.ArrowException, OSError) as err:
            raise LakeSchemaError(f"{where} is not readable Parquet: {err}") from err
        return _conform(table, where)

    def _write_partition(self, partition: str, table: pa.Table) -> None:
        """Replace one partition's file atomically with ``table`` (already merged and sorted)."""
        self._store.write_atomic(f"{partition}/{PART_FILE}", _to_parquet(table))

    # -- reading ------------------------------------------------------------------------------------

    def _dataset(self, rel_files: list[str]) -> Any:
        import pyarrow as pa
        import pyarrow.dataset as ds

        filesystem, base = self._store.arrow_location()
        partitioning = ds.partitioning(
            pa.schema([pa.field("market", pa.string()), pa.field("dt", pa.date32())]), flavor="hive"
        )
        return ds.dataset(
            [f"{base}/{rel}" for rel in rel_files],
            schema=_read_schema(),
            format="parquet",
            filesystem=filesystem,
            partitioning=partitioning,
            partition_base_dir=base,
        )

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """The whole lake, lake columns then ``market`` (string) and ``dt`` (date32).

        Rows come ordered by market, dt, symbol. ``columns`` selects (and orders) columns, partition
        columns included. An empty or missing lake gives an empty table.
        """
        schema = _read_schema()
        if columns is None:
            wanted = list(schema.names)
        else:
            if isinstance(columns, str) or not isinstance(columns, Iterable):
                raise _bad("columns must be a list of column names")
            wanted = list(columns)
            unknown = [name for name in wanted if not isinstance(name, str) or name not in schema.names]
            if unknown:
                raise _bad(f"unknown column(s) {unknown}; the lake has {list(schema.names)}")
            if len(set(wanted)) != len(wanted):
                raise _bad(f"columns {wanted} repeat a name")
        files = self._store.list_data_files()
        if not files:
            return schema.empty_table().select(wanted)
        return self._dataset(files).to_table(columns=wanted)

    def latest_dates(self, symbols: Iterable[str] | None = None) -> dict[str, dt.date]:
        """Newest stored trade_date per symbol (all symbols when ``symbols`` is None).

        Reads only the ``symbol`` and ``trade_date`` columns. With ``symbols``, partitions are read
        newest first and reading stops once every symbol has been seen, so the cost follows the
        recent data, not the history. Symbols absent from the lake are absent from the result.
        """
        import pyarrow.dataset as ds

        wanted: set[str] | None = None
        if symbols is not None:
            if isinstance(symbols, str):
                symbols = [symbols]
            if not isinstance(symbols, Iterable):
                raise _bad(f"symbols must be an iterable of strings, got {type(symbols).__name__}")
            wanted = set()
            for symbol in symbols:
                if not isinstance(symbol, str):
                    raise _bad(f"symbols must be strings, got {type(symbol).__name__}")
                wanted.add(symbol)
            if not wanted:
                return {}
        files = self._store.list_data_files()
        if wanted is not None:
            markets = {market_of(symbol) for symbol in wanted}
            files = [rel for rel in files if rel.split("/", 1)[0][len("market=") :] in markets]
        if not files:
            return {}
        found: dict[str, dt.date] = {}
        if wanted is None:
            self._max_dates(self._dataset(files).to_table(columns=["symbol", "trade_date"]), found)
            return dict(sorted(found.items()))
        # Newest partitions first, in growing batches; stop once every symbol was seen (a file's
        # trade_date equals its dt, so older partitions cannot hold a newer date).
        by_day: dict[str, list[str]] = {}
        for rel in files:
            by_day.setdefault(rel.split("/")[1], []).append(rel)
        days = sorted(by_day, reverse=True)
        batch = 1
        while days and not wanted.issubset(found):
            chunk, days = days[:batch], days[batch:]
            batch = min(batch * 2, 64)
            missing = sorted(wanted - set(found))
            table = self._dataset([rel for day in chunk for rel in by_day[day]]).to_table(
                columns=["symbol", "trade_date"], filter=ds.field("symbol").isin(missing)
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


def _read_schema() -> pa.Schema:
    """lake_schema() with the hive partition columns appended."""
    import pyarrow as pa

    return lake_schema().append(pa.field("market", pa.string())).append(pa.field("dt", pa.date32()))
