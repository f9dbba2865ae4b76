"""Turn API items into typed rows and Arrow tables in the lake schema (DESIGN.md §6).

An item's date is its ``timestamp_str``; its ``timestamp`` (if any) must be midnight of that date in the
market's time zone (``markets.Market.timezone``), else the item is refused naming both values.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_shortint.exceptions import ShortInterestResponseError
from airflow_provider_shortint.markets import MARKETS
from airflow_provider_shortint.text import shown

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

_DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_DATE = re.compile(_DATE_PATTERN)
_INT = re.compile(r"-?[0-9]{1,40}")
_INT64_MAX = 2**63 - 1
Row = dict[str, Any]


@functools.cache
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
    return ShortInterestResponseError(
        f"malformed item for {symbol}: {reason} (got {shown(value)})", symbol=symbol
    )


def _timezone(symbol: str) -> str | None:
    market = MARKETS.get(symbol.partition(".")[0])
    return market.timezone if market is not None else None


@functools.lru_cache(maxsize=8192)
def midnight_ms(timezone: str, day: dt.date) -> int:
    """Milliseconds since the epoch at midnight of ``day`` in ``timezone`` (what ``timestamp`` holds)."""
    from zoneinfo import ZoneInfo

    return int(dt.datetime.combine(day, dt.time(), ZoneInfo(timezone)).timestamp()) * 1000


@functools.lru_cache(maxsize=65536)
def _midnight_of_text(timezone: str, date_text: str) -> int:
    return midnight_ms(timezone, dt.date.fromisoformat(date_text))


def _check_midnight(symbol: str, timezone: str | None, timestamp: int | None, date_text: str) -> None:
    if timestamp is None or timezone is None:
        return
    expected = _midnight_of_text(timezone, date_text)
    if timestamp != expected:
        raise ShortInterestResponseError(
            f"malformed item for {symbol}: timestamp {timestamp} disagrees with timestamp_str "
            f"{date_text} (midnight of that day in {timezone} is {expected})",
            symbol=symbol,
        )


def _to_int(symbol: str, field: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)  # some serialisers write 1.0 for an integer
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
    return _parse_item(symbol, _timezone(symbol), item)


def _parse_item(symbol: str, timezone: str | None, item: object) -> Row:
    if not isinstance(item, Mapping):
        raise _fail(symbol, "an item is not an object", item)
    date_text = item.get("timestamp_str")
    if not isinstance(date_text, str) or not _DATE.fullmatch(date_text):
        raise _fail(symbol, "timestamp_str is not a YYYY-MM-DD date", date_text)
    try:
        trade_date = dt.date.fromisoformat(date_text)
    except ValueError:
        raise _fail(symbol, "timestamp_str is not a valid date", date_text) from None
    timestamp = _to_int(symbol, "timestamp", item.get("timestamp"))
    _check_midnight(symbol, timezone, timestamp, date_text)
    row: Row = {"symbol": symbol, "trade_date": trade_date, "timestamp": timestamp}
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
    timezone = _timezone(symbol)
    return [_parse_item(symbol, timezone, item) for item in items]


def rows_to_table(rows: Sequence[Row], ingested_at: dt.datetime | None = None) -> pa.Table:
    """Build an Arrow table in the lake schema from typed rows (column by column, no pandas)."""
    import pyarrow as pa

    schema = lake_schema()
    stamp = ingested_at or dt.datetime.now(dt.UTC)
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


# -- one row per trade date ----------------------------------------------------------------------------
# Pages are fetched one after another; a record published (or a key computed) between two requests can
# make one trade date appear on two pages. The same values twice: the later copy is dropped. Different
# values: the server contradicts itself, and guessing which is right would store a wrong row silently.


def _conflict(symbol: str, day: dt.date, first: Mapping[str, Any], second: Mapping[str, Any]) -> Exception:
    differing = [name for name in VALUE_COLUMNS if first.get(name) != second.get(name)]
    shown_values = "; ".join(
        f"{name} {shown(first.get(name), 30)} vs {shown(second.get(name), 30)}" for name in differing[:3]
    )
    return ShortInterestResponseError(
        f"{symbol}: trade date {day.isoformat()} came twice with different values ({shown_values}); "
        "the server's pages contradict each other",
        symbol=symbol,
    )


class RepeatedDateGuard:
    """Drops rows whose trade date was already seen with the same values; raises on different values."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self._seen: dict[dt.date, Row] = {}

    def filter(self, rows: list[Row]) -> list[Row]:
        kept = []
        for row in rows:
            earlier = self._seen.get(row["trade_date"])
            if earlier is None:
                self._seen[row["trade_date"]] = row
                kept.append(row)
            elif any(earlier.get(name) != row.get(name) for name in VALUE_COLUMNS):
                raise _conflict(self.symbol, row["trade_date"], earlier, row)
        return kept
