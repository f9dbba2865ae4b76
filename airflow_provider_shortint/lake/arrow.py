"""Pure Arrow functions of the lake: conform a table to the schema, split it into partitions, merge,
Parquet bytes out and rows back in.

No store here: a stored file arrives as bytes or as a path/file object pyarrow reads, so every rule can
be tested on tables alone. No pandas, and no Python loop over rows (only over symbols or partitions):
a yearly partition holds hundreds of thousands of rows. pyarrow is imported inside the functions (the
DAG processor imports the lake).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow_provider_shortint.exceptions import (
    InvalidParameterError,
    LakeSchemaError,
    UnsupportedSecurityError,
)
from airflow_provider_shortint.lake.layout import (
    DICTIONARY_COLUMNS,
    LEGACY_PARTITION_COLUMNS,
    PARTITION_COLUMNS,
    ROW_GROUP_ROWS,
    Partition,
    partition_of,
)
from airflow_provider_shortint.markets import MARKETS
from airflow_provider_shortint.records import COLUMNS, VALUE_COLUMNS, lake_schema
from airflow_provider_shortint.symbols import normalize_symbol

if TYPE_CHECKING:
    import pyarrow as pa

_UTC_NAMES = ("UTC", "utc", "Etc/UTC", "+00:00", "Z")
_FIRST_DAY = (dt.date.min - dt.date(1970, 1, 1)).days  # date32 reaches years Python's date cannot hold
_LAST_DAY = (dt.date.max - dt.date(1970, 1, 1)).days
_EXAMPLES = 3
#: zstd level of staged files, written once and read once (the lake's files use the library's default
#: level, fast to rewrite).
STAGED_ZSTD_LEVEL = 15
#: Rows of a staged row group shared by several partitions: a commit decodes it once per partition it
#: holds, so it stays small; a partition with more rows has row groups of its own.
STAGED_GROUP_ROWS = 16_384
#: Key of a staged file's footer metadata: the partitions of each row group, in order (JSON list of lists).
STAGED_PARTITIONS_KEY = b"shortint.partitions"
#: Columns ``read()`` may add to the lake columns: the hive keys of both layouts.
READ_EXTRA_COLUMNS = tuple(dict.fromkeys(PARTITION_COLUMNS + LEGACY_PARTITION_COLUMNS))


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


def conform(table: Any, what: str, *, drop_partition_columns: bool = False) -> pa.Table:
    """``table`` in exactly lake_schema() (column order, types, no metadata), or raise LakeSchemaError."""
    import pyarrow as pa

    if not isinstance(table, pa.Table):
        raise LakeSchemaError(f"{what} must be a pyarrow.Table in lake_schema(), got {type(table).__name__}")
    schema = lake_schema()
    names = list(table.column_names)
    if drop_partition_columns:  # what read() and hive readers add (market, year, dt) is not stored
        names = [name for name in names if name not in READ_EXTRA_COLUMNS]
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


def check_rows(table: pa.Table) -> None:
    """Refuse rows the lake must not store: non-canonical or unregistered symbols, unrepresentable dates.

    ``table`` is already conformed. A symbol is stored only in its canonical form ("HK.00007", never
    "HK.7" or "HK.00700/../x"): two spellings of one security would make two keys.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    bad: list[str] = []
    count = 0
    for symbol in pc.unique(table.column("symbol")).to_pylist():
        try:
            canonical = normalize_symbol(symbol)
        except (InvalidParameterError, UnsupportedSecurityError):
            canonical = None
        if canonical != symbol:
            count += 1
            if len(bad) < _EXAMPLES:
                bad.append(repr(symbol) if canonical is None else f"{symbol!r} (canonical {canonical!r})")
    if count:
        raise LakeSchemaError(
            f"{count} symbol(s) are outside the registered markets {list(MARKETS)} or not in canonical "
            f"form, e.g. {', '.join(sorted(bad))}: normalise them with airflow_provider_shortint.symbols"
        )
    days = pc.min_max(table.column("trade_date").cast(pa.int32()))
    low, high = days["min"].as_py(), days["max"].as_py()
    if low is not None and (low < _FIRST_DAY or high > _LAST_DAY):
        outside = low if low < _FIRST_DAY else high
        raise LakeSchemaError(
            f"trade_date must lie between {dt.date.min} and {dt.date.max}, got a date {outside} days "
            "from 1970-01-01"
        )


def market_column(symbols: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The market of each symbol, from its prefix; a prefix that is not a registered market raises.

    Worked out once per distinct symbol (a partition holds thousands of rows per symbol)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(symbols, pa.ChunkedArray):
        symbols = symbols.combine_chunks()
    encoded = pc.dictionary_encode(symbols)
    distinct = encoded.dictionary
    prefixes = pc.list_element(pc.split_pattern(distinct, ".", max_splits=1), 0)
    known = pc.and_(pc.match_substring(distinct, "."), pc.is_in(prefixes, value_set=pa.array(list(MARKETS))))
    known_rows = pc.fill_null(known.take(encoded.indices), False)  # a null symbol is of no market
    unknown = pc.filter(symbols, pc.invert(known_rows))
    if len(unknown):
        examples = sorted(set(unknown.to_pylist()), key=str)[:_EXAMPLES]
        raise LakeSchemaError(
            f"{len(unknown)} row(s) have a symbol of no registered market {list(MARKETS)}, e.g. {examples}"
        )
    return prefixes.take(encoded.indices)


def latest_per_market(table: pa.Table) -> dict[str, str]:
    """Market -> newest trade_date (ISO) among ``table``'s rows."""
    import pyarrow as pa

    keyed = pa.table({"market": market_column(table.column("symbol")), "day": table.column("trade_date")})
    grouped = keyed.group_by("market", use_threads=False).aggregate([("day", "max")])
    pairs = zip(grouped.column("market").to_pylist(), grouped.column("day_max").to_pylist(), strict=True)
    return {market: day.isoformat() for market, day in sorted(pairs)}


def values_equal(left: pa.Table, right: pa.Table) -> pa.Array:
    """Row-wise equality of VALUE_COLUMNS (a boolean array); null equals null and NaN equals NaN."""
    import pyarrow as pa
    import pyarrow.compute as pc

    same: Any = pa.array([True] * left.num_rows, pa.bool_())
    for name in VALUE_COLUMNS:
        a, b = left.column(name), right.column(name)
        equal = pc.fill_null(pc.equal(a, b), False)
        equal = pc.or_(equal, pc.and_(pc.is_null(a), pc.is_null(b)))
        if pa.types.is_floating(a.type):
            equal = pc.or_(equal, pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
        same = pc.and_(same, equal)
    if isinstance(same, pa.ChunkedArray):
        same = same.combine_chunks()
    result: pa.Array = same
    return result


def sorted_rows(table: pa.Table) -> pa.Table:
    """``table`` sorted by (symbol, trade_date), in one chunk (so its Parquet bytes are deterministic)."""
    import pyarrow.compute as pc

    order = pc.sort_indices(table, sort_keys=[("symbol", "ascending"), ("trade_date", "ascending")])
    return table.take(order).combine_chunks()


def _positions(count: int) -> pa.Array:
    import pyarrow as pa

    return pa.array(range(count), pa.int64())


def _without(count: int, positions: pa.Array) -> pa.Array:
    """A boolean mask of ``count`` rows, False at ``positions``."""
    import pyarrow.compute as pc

    if len(positions) == 0:
        import pyarrow as pa

        return pa.array([True] * count, pa.bool_())
    mask: pa.Array = pc.invert(pc.is_in(_positions(count), value_set=positions))
    return mask


def merge(stored: pa.Table | None, incoming: pa.Table) -> tuple[pa.Table | None, int, int]:
    """Merge deduplicated ``incoming`` rows into a partition's ``stored`` rows, with Arrow joins.

    Returns (table to write or None when nothing changed, rows written, rows unchanged). Only stored
    rows on a date and of a symbol the input has can match, so a new trading date appended to a year
    of history joins nothing; the rest is one hash join on the candidates and vectorised comparisons.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if stored is None or stored.num_rows == 0:
        return sorted_rows(incoming), incoming.num_rows, 0
    candidates = pc.indices_nonzero(
        pc.and_(
            pc.is_in(stored.column("trade_date"), value_set=pc.unique(incoming.column("trade_date"))),
            pc.is_in(stored.column("symbol"), value_set=pc.unique(incoming.column("symbol"))),
        )
    )
    unchanged_in: pa.Array = pa.array([], pa.int64())
    replaced: pa.Array = pa.array([], pa.int64())
    if len(candidates):
        left = pa.table(
            {
                "symbol": incoming.column("symbol"),
                "trade_date": incoming.column("trade_date"),
                "__in": _positions(incoming.num_rows),
            }
        )
        right = pa.table(
            {
                "symbol": stored.column("symbol").take(candidates),
                "trade_date": stored.column("trade_date").take(candidates),
                "__stored": candidates,
            }
        )
        pairs = left.join(right, keys=["symbol", "trade_date"], join_type="inner", use_threads=False)
        matched_in = pairs.column("__in").combine_chunks()
        matched_stored = pairs.column("__stored").combine_chunks()
        equal = values_equal(incoming.take(matched_in), stored.take(matched_stored))
        unchanged_in = pc.filter(matched_in, equal)
        replaced = pc.filter(matched_stored, pc.invert(equal))
    changed = _without(incoming.num_rows, unchanged_in)
    n_unchanged = len(unchanged_in)
    n_changed = incoming.num_rows - n_unchanged
    if n_changed == 0:
        return None, 0, n_unchanged
    kept = stored if len(replaced) == 0 else stored.filter(_without(stored.num_rows, replaced))
    merged = pa.concat_tables([kept, incoming.filter(changed)])
    return sorted_rows(merged), n_changed, n_unchanged


def deduplicated(table: pa.Table) -> pa.Table:
    """One row per (symbol, trade_date): the last one wins (a later page, a later staged file)."""
    if table.num_rows < 2:
        return table
    indexed = table.append_column("__row", _positions(table.num_rows))
    last = indexed.group_by(["symbol", "trade_date"], use_threads=False).aggregate([("__row", "max")])
    if last.num_rows == table.num_rows:
        return table
    rows: pa.Table = table.take(last.column("__row_max"))
    return rows


def split_partitions(table: pa.Table) -> list[tuple[Partition, pa.Table]]:
    """Deduplicate on (symbol, trade_date), last row wins; group by partition (market, year), sorted.

    The market of a row comes from its symbol's prefix through the market registry; a prefix that is
    not registered raises (no row is ever filed under a default market).
    """
    import datetime as dt

    import pyarrow as pa
    import pyarrow.compute as pc

    rows = deduplicated(table)
    keys = pa.table(
        {
            "market": market_column(rows.column("symbol")),
            "year": pc.year(rows.column("trade_date")),
            "pos": _positions(rows.num_rows),
        }
    )
    groups = keys.group_by(["market", "year"], use_threads=False).aggregate([("pos", "list")])
    parts = []
    for market, year, positions in zip(
        groups.column("market").to_pylist(),
        groups.column("year").to_pylist(),
        groups.column("pos_list"),
        strict=True,
    ):
        partition = partition_of(market, dt.date(year, 1, 1))
        parts.append((partition, rows.take(positions.values)))
    return sorted(parts, key=lambda item: item[0])


def to_parquet(table: pa.Table) -> bytes:
    """Deterministic Parquet bytes: same rows -> same bytes, whatever their order or chunking.

    Rows sorted by (symbol, trade_date), row groups of ``ROW_GROUP_ROWS`` rows with statistics (a
    filter on one symbol reads one group per file), zstd, dictionary encoding for the columns with few
    distinct values, the lake schema and no other metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sorted_rows(table).replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    pq.write_table(
        rows,
        sink,
        compression="zstd",
        row_group_size=ROW_GROUP_ROWS,
        use_dictionary=list(DICTIONARY_COLUMNS),
        sorting_columns=[pq.SortingColumn(0), pq.SortingColumn(1)],
    )
    data: bytes = sink.getvalue().to_pybytes()
    return data


def staged_parquet(table: pa.Table) -> bytes:
    """One staged file for every partition of ``table`` (deduplicated, the last row of a key wins).

    Partitions in order, each one's rows sorted by (symbol, trade_date). Consecutive partitions share a
    row group of at most ``STAGED_GROUP_ROWS`` rows (a chunk of ten symbols holds a few hundred to a
    few thousand rows per year: row groups of their own would cost more in metadata and compression than
    the rows); a larger partition has row groups of its own. The footer names the partitions of each
    row group (``STAGED_PARTITIONS_KEY``), so a commit reads, for one partition, only the row groups
    that hold it. Written once and read by the lake alone: no statistics, no embedded Arrow schema,
    integers delta-encoded, zstd at ``STAGED_ZSTD_LEVEL``."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    names: list[list[str]] = []
    with pq.ParquetWriter(
        sink,
        lake_schema().remove_metadata(),
        compression="zstd",
        compression_level=STAGED_ZSTD_LEVEL,
        use_dictionary=["symbol"],
        # Integers (dates, timestamps, counts) delta-encoded: smaller than dictionaries here.
        column_encoding={
            field.name: "DELTA_BINARY_PACKED"
            for field in lake_schema()
            if pa.types.is_integer(field.type) or pa.types.is_date32(field.type)
        },
        write_statistics=False,
        store_schema=False,
    ) as writer:
        shared: list[tuple[str, pa.Table]] = []  # consecutive small partitions, one row group

        def write_shared() -> None:
            if shared:
                rows = pa.concat_tables([part for _, part in shared])
                writer.write_table(rows, row_group_size=rows.num_rows)
                names.append([name for name, _ in shared])
                shared.clear()

        for partition, rows in split_partitions(table):
            ordered = sorted_rows(rows).replace_schema_metadata(None)
            if ordered.num_rows > STAGED_GROUP_ROWS:
                write_shared()
                for start in range(0, ordered.num_rows, ROW_GROUP_ROWS):
                    writer.write_table(ordered.slice(start, ROW_GROUP_ROWS), row_group_size=ROW_GROUP_ROWS)
                    names.append([partition.name])
                continue
            if sum(part.num_rows for _, part in shared) + ordered.num_rows > STAGED_GROUP_ROWS:
                write_shared()
            shared.append((partition.name, ordered))
        write_shared()
        writer.add_key_value_metadata({STAGED_PARTITIONS_KEY: json.dumps(names).encode()})
    data: bytes = sink.getvalue().to_pybytes()
    return data


def staged_row_groups(parquet: Any, where: str) -> list[tuple[str, ...]]:
    """The partition names of each row group of an open staged file, from its footer (an entry may also
    be a single name: a row group of one partition); a file without that record (not staged by this
    lake) raises LakeSchemaError naming ``where``."""
    import json

    metadata = parquet.metadata
    recorded = (metadata.metadata or {}).get(STAGED_PARTITIONS_KEY)
    try:
        entries = json.loads(recorded) if recorded is not None else None
    except ValueError:
        entries = None
    groups: list[tuple[str, ...]] = []
    for entry in entries if isinstance(entries, list) else ():
        names = [entry] if isinstance(entry, str) else entry
        if isinstance(names, list) and names and all(isinstance(name, str) for name in names):
            groups.append(tuple(names))
    if not isinstance(entries, list) or len(groups) != len(entries) or len(groups) != metadata.num_row_groups:
        raise LakeSchemaError(f"{where} does not say which partition each of its row groups belongs to")
    return groups


def staged_rows(parquet: Any, groups: list[int], where: str) -> pa.Table:
    """The rows of row groups ``groups`` of an open staged file, in the lake schema."""
    import pyarrow as pa

    try:
        table = parquet.read_row_groups(groups, columns=list(COLUMNS))
    except (pa.ArrowException, OSError, ValueError) as err:
        failure = _unreadable(err, where)
        if failure is err:
            raise
        raise failure from err
    return conform(_cast(table, where), where)


def check_schema(schema: pa.Schema, what: str) -> None:
    """Refuse a stored file whose schema is not the lake's (names, order-free; lossless types only)."""
    names = list(schema.names)
    if sorted(names) != sorted(COLUMNS):
        missing = [name for name in COLUMNS if name not in names]
        extra = [name for name in names if name not in COLUMNS]
        raise LakeSchemaError(
            f"{what} is not in the lake schema: missing columns {missing}, unexpected columns {extra}"
        )
    for field in lake_schema():
        found = schema.field(field.name).type
        if not _castable(found, field.type):
            raise LakeSchemaError(f"{what}: column {field.name!r} is {found}, not {field.type}")


def _cast(table: pa.Table, what: str) -> pa.Table:
    """``table`` (a subset of the lake columns) with each column in its lake type."""
    import pyarrow as pa

    schema = lake_schema()
    arrays = []
    fields = []
    for name in table.column_names:
        field = schema.field(name)
        column = table.column(name)
        if not column.type.equals(field.type):
            try:
                column = column.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise LakeSchemaError(f"{what}: column {name!r} does not fit {field.type}: {err}") from err
        arrays.append(column)
        fields.append(field)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _groups_with(metadata: Any, symbols: list[str]) -> list[int]:
    """Row groups whose ``symbol`` statistics admit one of the sorted ``symbols`` (all without stats)."""
    import bisect

    index = metadata.schema.to_arrow_schema().get_field_index("symbol")
    groups = []
    for number in range(metadata.num_row_groups):
        stats = metadata.row_group(number).column(index).statistics
        if stats is None or not stats.has_min_max:
            groups.append(number)
            continue
        low, high = stats.min, stats.max
        if isinstance(low, bytes):
            low, high = low.decode(), high.decode()
        at = bisect.bisect_left(symbols, low)
        if at < len(symbols) and symbols[at] <= high:
            groups.append(number)
    return groups


def open_parquet(source: Any, where: str) -> Any:
    """A ``pyarrow.parquet.ParquetFile`` over ``source`` (path, file object or bytes) whose schema is the
    lake's; only the footer is read. Errors as :func:`rows_from`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(
            pa.BufferReader(source) if isinstance(source, bytes) else source, pre_buffer=True
        )
    except (pa.ArrowException, OSError, ValueError) as err:
        failure = _unreadable(err, where)
        if failure is err:
            raise
        raise failure from err
    check_schema(parquet.schema_arrow, where)
    return parquet


def rows_from(
    parquet: Any, where: str, columns: list[str] | None = None, symbols: list[str] | None = None
) -> pa.Table:
    """The rows of an open stored file: ``columns`` of them (all: the lake schema), only ``symbols``'
    rows when given, reading just the row groups whose symbol statistics admit one of them.

    A file that is not readable Parquet raises LakeSchemaError naming ``where``; an OS error (missing,
    permission, I/O) is raised as it is (it names the path).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = list(COLUMNS) if columns is None else list(columns)
    try:
        if symbols is None:
            table = parquet.read(columns=wanted)
        else:
            ordered = sorted(set(symbols))
            groups = _groups_with(parquet.metadata, ordered)
            read = wanted if "symbol" in wanted else ["symbol", *wanted]
            table = parquet.read_row_groups(groups, columns=read) if groups else None
            if table is None:
                table = lake_schema().empty_table().select(read)
            table = table.filter(pc.is_in(table.column("symbol"), value_set=pa.array(ordered, pa.string())))
            table = table.select(wanted)
    except (pa.ArrowException, OSError, ValueError) as err:
        failure = _unreadable(err, where)
        if failure is err:
            raise
        raise failure from err
    table = _cast(table, where)
    return conform(table, where) if columns is None else table


def read_rows(
    source: Any, where: str, columns: list[str] | None = None, symbols: list[str] | None = None
) -> pa.Table:
    """:func:`rows_from` a stored file given as path, file object or bytes."""
    return rows_from(open_parquet(source, where), where, columns, symbols)


def _unreadable(err: BaseException, where: str) -> BaseException:
    """What a failed read of a stored file raises: the OS error itself (missing, permission, I/O: it
    names the path), else LakeSchemaError naming ``where`` (not Parquet, truncated, not our schema)."""
    if isinstance(err, OSError) and err.errno is not None:
        return err
    return LakeSchemaError(f"{where} is not readable Parquet: {err}")


def newest_in(parquet: Any) -> dt.date | None:
    """The newest ``trade_date`` an open stored file holds, from its footer (None: no statistics)."""
    metadata = parquet.metadata
    index = metadata.schema.to_arrow_schema().get_field_index("trade_date")
    newest: dt.date | None = None
    for number in range(metadata.num_row_groups):
        stats = metadata.row_group(number).column(index).statistics
        if stats is None or not stats.has_min_max:
            return None
        if newest is None or stats.max > newest:
            newest = stats.max
    return newest


def from_parquet(data: bytes, where: str) -> pa.Table:
    """A stored file's bytes as rows in the lake schema, else LakeSchemaError naming ``where``."""
    return read_rows(data, where)


def read_schema() -> pa.Schema:
    """lake_schema() with what ``read()`` adds: ``market`` (string), ``year`` (int32), ``dt`` (date32)."""
    import pyarrow as pa

    return (
        lake_schema()
        .append(pa.field("market", pa.string()))
        .append(pa.field("year", pa.int32()))
        .append(pa.field("dt", pa.date32()))
    )


#: Columns ``read()`` returns only when asked for them (the daily layout's hive key).
ON_REQUEST = ("dt",)


def wanted_columns(columns: Iterable[str] | None, names: list[str], owner: str) -> list[str]:
    """The columns a ``read(columns)`` returns, checked against ``names`` (what ``owner``, e.g. "the
    lake", has): all but those on request when None; else unknown or repeated names are refused."""
    if columns is None:
        return [name for name in names if name not in ON_REQUEST]
    if isinstance(columns, str) or not isinstance(columns, Iterable):
        raise InvalidParameterError("columns must be a list of column names")
    wanted = list(columns)
    unknown = [name for name in wanted if not isinstance(name, str) or name not in names]
    if unknown:
        raise InvalidParameterError(f"unknown column(s) {unknown}; {owner} has {list(names)}")
    if len(set(wanted)) != len(wanted):
        raise InvalidParameterError(f"columns {wanted} repeat a name")
    return wanted


def with_partition_columns(table: pa.Table, market: str, columns: list[str]) -> pa.Table:
    """``table``'s ``columns``, computing ``market`` (constant), ``year`` and ``dt`` (from trade_date):
    the values hive readers take from the path."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = []
    for name in columns:
        if name == "market":
            arrays.append(pa.array([market] * table.num_rows, pa.string()))
        elif name == "year":
            arrays.append(pc.year(table.column("trade_date")).cast(pa.int32()))
        elif name == "dt":
            arrays.append(table.column("trade_date"))
        else:
            arrays.append(table.column(name))
    schema = read_schema()
    return pa.Table.from_arrays(arrays, schema=pa.schema([schema.field(name) for name in columns]))
