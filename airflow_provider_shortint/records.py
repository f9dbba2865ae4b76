"""Turn API items into typed rows and Arrow tables in the lake schema (DESIGN.md §6)."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_shortint.exceptions import ShortInterestResponseError

if TYPE_CHECKING:
    import pyarrow as pa

INT_FIELDS = (
    "avg_daily_short_volume",
    "aggregated_short",
    "shares_short",
    "avg_daily_share_volume",
)
FLOAT_FIELDS = (
    "close_price",
    "last_close_price",
    "aggregated_short_ratio",
    "avg_cost",
    "short_percent",
    "days_to_cover",
)
# Lake column order (DESIGN.md §6); partition values (market, dt) live only in the path.
COLUMNS = (
    "symbol",
    "trade_date",
    "timestamp",
    "close_price",
    "last_close_price",
    "avg_daily_short_volume",
    "aggregated_short",
    "aggregated_short_ratio",
    "avg_cost",
    "shares_short",
    "short_percent",
    "avg_daily_share_volume",
    "days_to_cover",
    "ingested_at",
)
VALUE_COLUMNS = COLUMNS[2:-1]  # the fetched values; an upsert compares these

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_INT = re.compile(r"-?[0-9]{1,40}")
_INT64_MAX = 2**63 - 1
Row = dict[str, Any]


def lake_schema() -> pa.Schema:
    """The fixed Arrow schema of every lake file."""
    import pyarrow as pa

    types: dict[str, pa.DataType] = {
        "symbol": pa.string(),
        "trade_date": pa.date32(),
        "timestamp": pa.int64(),
        "ingested_at": pa.timestamp("us", tz="UTC"),
    }
    not_null = {"symbol", "trade_date", "ingested_at"}
    return pa.schema(
        [
            pa.field(
                name,
                types.get(name, pa.int64() if name in INT_FIELDS else pa.float64()),
                name not in not_null,
            )
            for name in COLUMNS
        ]
    )


def _fail(symbol: str, reason: str, value: object) -> ShortInterestResponseError:
    try:
        excerpt = repr(value)
    except ValueError:  # an int of more than 4300 digits has no repr
        excerpt = f"<{type(value).__name__} too large to show>"
    if len(excerpt) > 80:
        excerpt = excerpt[:77] + "..."
    return ShortInterestResponseError(f"malformed item for {symbol}: {reason} (got {excerpt})", symbol=symbol)


def _to_int(symbol: str, field: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _INT.fullmatch(value.strip()):
        number = int(value)
    else:
        raise _fail(symbol, f"{field} is not an integer", value)
    if abs(number) > _INT64_MAX:
        raise _fail(symbol, f"{field} does not fit in int64", value)
    return number


def _to_float(symbol: str, field: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range, e.g. a JSON number with 400 digits
            raise _fail(symbol, f"{field} is not finite", value) from None
        except ValueError:
            raise _fail(symbol, f"{field} is not a number", value) from None
    else:
        raise _fail(symbol, f"{field} is not a number", value)
    if not math.isfinite(number):
        raise _fail(symbol, f"{field} is not finite", value)
    return number


def parse_item(symbol: str, item: object) -> Row:
    """One API item -> a typed row: int64 strings become int, missing fields None, date from timestamp_str.

    Raises ``ShortInterestResponseError`` for anything that is not a well-formed item.
    """
    if not isinstance(item, Mapping):
        raise _fail(symbol, "an item is not an object", item)
    date_text = item.get("timestamp_str")
    if not isinstance(date_text, str) or not _DATE.fullmatch(date_text):
        raise _fail(symbol, "timestamp_str is not a YYYY-MM-DD date", date_text)
    try:
        trade_date = dt.date.fromisoformat(date_text)
    except ValueError:
        raise _fail(symbol, "timestamp_str is not a valid date", date_text) from None
    row: Row = {
        "symbol": symbol,
        "trade_date": trade_date,
        "timestamp": _to_int(symbol, "timestamp", item.get("timestamp")),
    }
    for name in VALUE_COLUMNS[1:]:
        convert = _to_int if name in INT_FIELDS else _to_float
        row[name] = convert(symbol, name, item.get(name))
    return row


def parse_items(symbol: str, items: object) -> list[Row]:
    """Parse a page's ``data.items`` list, newest first as the API sends them."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise _fail(symbol, "data.items is not a list", items)
    return [parse_item(symbol, item) for item in items]


def rows_to_table(rows: Sequence[Row], ingested_at: dt.datetime | None = None) -> pa.Table:
    """Build an Arrow table in the lake schema from typed rows (column by column, no pandas)."""
    import pyarrow as pa

    schema = lake_schema()
    stamp = ingested_at or dt.datetime.now(dt.timezone.utc)
    arrays = []
    for field in schema:
        if field.name == "ingested_at":
            values: list[Any] = [stamp] * len(rows)
        else:
            values = [row.get(field.name) for row in rows]
        arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def concat_tables(tables: Iterable[pa.Table]) -> pa.Table:
    """Concatenate lake tables; an empty input gives an empty table with the lake schema."""
    import pyarrow as pa

    parts = list(tables)
    if not parts:
        return lake_schema().empty_table()
    return pa.concat_tables(parts)


@dataclass(frozen=True)
class ShortInterestPage:
    """One page of the endpoint: typed rows newest first, and the key of the next (older) page or None."""

    symbol: str
    market: str
    items: list[Row]
    next_key: str | None

    @property
    def oldest_date(self) -> dt.date | None:
        """Trade date of the page's last (oldest) row, or None for an empty page."""
        return min((row["trade_date"] for row in self.items), default=None)
