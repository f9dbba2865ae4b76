"""Pure Arrow functions of the lake: conform a table to the schema, split it into partitions, merge.

No store and no I/O here (only Parquet bytes in memory), so every rule can be tested on tables alone.
No pandas anywhere; pyarrow is imported inside the functions (the DAG processor imports the lake).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from airflow_provider_shortint.exceptions import (
    InvalidParameterError,
    LakeSchemaError,
    UnsupportedSecurityError,
)
from airflow_provider_shortint.lake.layout import PARTITION_COLUMNS
from airflow_provider_shortint.markets import MARKETS
from airflow_provider_shortint.records import COLUMNS, VALUE_COLUMNS, lake_schema
from airflow_provider_shortint.symbols import normalize_symbol

if TYPE_CHECKING:
    import pyarrow as pa

_UTC_NAMES = ("UTC", "utc", "Etc/UTC", "+00:00", "Z")
_FIRST_DAY = (dt.date.min - dt.date(1970, 1, 1)).days  # date32 reaches years Python's date cannot hold
_LAST_DAY = (dt.date.max - dt.date(1970, 1, 1)).days
_EXAMPLES = 3


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
    """The market of each symbol, from its prefix; a prefix that is not a registered market raises."""
    import pyarrow as pa
    import pyarrow.compute as pc

    prefixes = pc.list_element(pc.split_pattern(symbols, ".", max_splits=1), 0)
    if isinstance(prefixes, pa.ChunkedArray):
        prefixes = prefixes.combine_chunks()
    has_dot = pc.match_substring(symbols, ".")
    known = pc.and_(pc.fill_null(has_dot, False), pc.is_in(prefixes, value_set=pa.array(list(MARKETS))))
    unknown = pc.filter(symbols, pc.invert(known))
    if len(unknown):
        examples = sorted(set(unknown.to_pylist()))[:_EXAMPLES]
        raise LakeSchemaError(
            f"{len(unknown)} row(s) have a symbol of no registered market {list(MARKETS)}, e.g. {examples}"
        )
    return prefixes


def latest_per_market(table: pa.Table) -> dict[str, str]:
    """Market -> newest trade_date (ISO) among ``table``'s rows."""
    import pyarrow as pa

    keyed = pa.table({"market": market_column(table.column("symbol")), "day": table.column("trade_date")})
    grouped = keyed.group_by("market", use_threads=False).aggregate([("day", "max")])
    pairs = zip(grouped.column("market").to_pylist(), grouped.column("day_max").to_pylist(), strict=True)
    return {market: day.isoformat() for market, day in sorted(pairs)}


def values_equal(left: pa.Table, right: pa.Table) -> list[bool]:
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


def sorted_by_symbol(table: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    order = pc.sort_indices(table, sort_keys=[("symbol", "ascending"), ("trade_date", "ascending")])
    return table.take(order).combine_chunks()


def merge(stored: pa.Table | None, incoming: pa.Table) -> tuple[pa.Table | None, int, int]:
    """Merge deduplicated ``incoming`` rows into a partition's ``stored`` rows.

    Returns (table to write or None when nothing changed, rows written, rows unchanged).
    """
    import pyarrow as pa

    if stored is None or stored.num_rows == 0:
        return sorted_by_symbol(incoming), incoming.num_rows, 0
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
        equal = values_equal(incoming.take(_indices(matched_in)), stored.take(_indices(matched_stored)))
        unchanged = {index for index, same in zip(matched_in, equal, strict=True) if same}
    changed = [index for index in range(incoming.num_rows) if index not in unchanged]
    if not changed:
        return None, 0, len(unchanged)
    replaced = {incoming_keys[index] for index in changed}
    kept = [index for index, key in enumerate(stored_keys) if key not in replaced]
    merged = pa.concat_tables([stored.take(_indices(kept)), incoming.take(_indices(changed))])
    return sorted_by_symbol(merged), len(changed), len(unchanged)


def _indices(positions: list[int]) -> pa.Array:
    import pyarrow as pa

    return pa.array(positions, pa.int64())


def split_partitions(table: pa.Table) -> list[tuple[str, dt.date, pa.Table]]:
    """Deduplicate on (symbol, trade_date), last row wins; group by (market, trade_date), sorted.

    The market of a row comes from its symbol's prefix through the market registry; a prefix that is
    not registered raises (no row is ever filed under a default market).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    position = pa.array(range(table.num_rows), pa.int64())
    indexed = table.append_column("__row", position)
    last = indexed.group_by(["symbol", "trade_date"], use_threads=False).aggregate([("__row", "max")])
    rows = table.take(last.column("__row_max"))
    keyed = rows.append_column("__market", market_column(rows.column("symbol")))
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


def to_parquet(table: pa.Table) -> bytes:
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
    data: bytes = sink.getvalue().to_pybytes()
    return data


def from_parquet(data: bytes, where: str, columns: list[str] | None = None, filter: Any = None) -> pa.Table:
    """A stored file's rows in the lake schema (or its ``columns``), else LakeSchemaError naming ``where``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(pa.BufferReader(data)).read()
    except (pa.ArrowException, OSError) as err:
        raise LakeSchemaError(f"{where} is not readable Parquet: {err}") from err
    table = conform(table, where)
    if filter is not None:
        table = table.filter(filter)
    return table if columns is None else table.select(columns)


def read_schema() -> pa.Schema:
    """lake_schema() with the hive partition columns appended."""
    import pyarrow as pa

    return lake_schema().append(pa.field("market", pa.string())).append(pa.field("dt", pa.date32()))


def with_partition_columns(table: pa.Table, market: str, day: dt.date) -> pa.Table:
    """``table`` plus constant ``market`` and ``dt`` columns (what hive readers add from the path)."""
    import pyarrow as pa

    rows = table.num_rows
    table = table.append_column(pa.field("market", pa.string()), pa.array([market] * rows, pa.string()))
    return table.append_column(pa.field("dt", pa.date32()), pa.array([day] * rows, pa.date32()))
