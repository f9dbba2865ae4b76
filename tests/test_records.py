"""Item parsing and the lake schema (DESIGN.md §2, §6), including a hypothesis property test."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_shortint.exceptions import ShortInterestResponseError
from airflow_provider_shortint.records import COLUMNS, lake_schema, parse_item, parse_items, rows_to_table
from tests._helpers import HK_ITEM


def test_hk_item_is_typed() -> None:
    row = parse_item("HK.00700", HK_ITEM)
    assert row["trade_date"] == dt.date(2026, 5, 15)
    assert row["aggregated_short"] == 54177721 and isinstance(row["aggregated_short"], int)
    assert row["avg_daily_short_volume"] == 3755740
    assert row["aggregated_short_ratio"] == 0.59
    assert row["timestamp"] == 1778774400000
    assert row["shares_short"] is None and row["days_to_cover"] is None  # US-only fields


def test_date_comes_from_timestamp_str_not_utc_conversion() -> None:
    # Midnight in Hong Kong is the previous day in UTC: the date must still be the local one.
    row = parse_item("HK.00700", {**HK_ITEM, "timestamp": 1778774400000})
    assert dt.datetime.fromtimestamp(1778774400, dt.UTC).date() == dt.date(2026, 5, 14)
    assert row["trade_date"] == dt.date(2026, 5, 15)


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"timestamp_str": None}, "timestamp_str"),
        ({"timestamp_str": "15/05/2026"}, "timestamp_str"),
        ({"timestamp_str": "2026-02-30"}, "valid date"),
        ({"aggregated_short": "5.4e7"}, "aggregated_short is not an integer"),
        ({"aggregated_short": True}, "aggregated_short is not an integer"),
        ({"aggregated_short": str(2**64)}, "int64"),
        ({"close_price": "abc"}, "close_price is not a number"),
        ({"close_price": [1]}, "close_price is not a number"),
        ({"close_price": float("nan")}, "finite"),
    ],
)
def test_bad_fields_raise_response_error(patch: dict[str, object], reason: str) -> None:
    with pytest.raises(ShortInterestResponseError, match=reason):
        parse_item("HK.00700", {**HK_ITEM, **patch})


def test_items_must_be_a_list_of_objects() -> None:
    assert parse_items("US.AAPL", None) == []
    with pytest.raises(ShortInterestResponseError, match="not a list"):
        parse_items("US.AAPL", {"a": 1})
    with pytest.raises(ShortInterestResponseError, match="not an object"):
        parse_items("US.AAPL", [1])


def test_schema_is_exactly_the_contract() -> None:
    schema = lake_schema()
    assert tuple(schema.names) == COLUMNS
    assert str(schema.field("trade_date").type) == "date32[day]"
    assert str(schema.field("ingested_at").type) == "timestamp[us, tz=UTC]"
    assert schema.field("symbol").type == pa.string()  # not large_string
    assert [f.name for f in schema if not f.nullable] == ["symbol", "trade_date", "ingested_at"]
    table = rows_to_table([parse_item("HK.00700", HK_ITEM)])
    assert table.schema.equals(schema)
    assert table.column("aggregated_short").to_pylist() == [54177721]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(
    json_values,
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.dates().map(lambda d: d.isoformat()),
)
item_like = st.dictionaries(st.sampled_from([*COLUMNS, "timestamp_str", "x"]), field_values, max_size=10)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, item_like, st.lists(item_like, max_size=3)))
def test_parser_returns_typed_rows_or_response_error(value: object) -> None:
    """On arbitrary JSON the parser either returns typed rows or raises ShortInterestResponseError."""
    value = json.loads(json.dumps(value))  # only what JSON can carry
    try:
        rows = parse_items("US.AAPL", value if isinstance(value, list) else [value])
    except ShortInterestResponseError:
        return
    table = rows_to_table(rows)  # typed rows always fit the schema
    assert table.num_rows == len(rows)
    for row in rows:
        assert isinstance(row["trade_date"], dt.date)
        for name in ("aggregated_short", "shares_short", "timestamp"):
            assert row[name] is None or type(row[name]) is int
        for name in ("close_price", "short_percent"):
            assert row[name] is None or type(row[name]) is float


STAMP = dt.datetime(2026, 5, 16, tzinfo=dt.UTC)


api_item = st.fixed_dictionaries(
    {"timestamp_str": st.dates(min_value=dt.date(1, 1, 1)).map(dt.date.isoformat)},
    optional={
        "timestamp": st.integers(min_value=-(2**63), max_value=2**63) | st.floats(allow_nan=False),
        **{
            name: st.integers(min_value=-(2**64), max_value=2**64).map(str) | st.none()
            for name in (
                "aggregated_short",
                "shares_short",
                "avg_daily_share_volume",
                "avg_daily_short_volume",
            )
        },
        **{
            name: st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**60), 2**60) | st.none()
            for name in ("close_price", "last_close_price", "aggregated_short_ratio", "short_percent")
        },
    },
)


@settings(max_examples=100, deadline=None)
@given(st.lists(api_item, min_size=1, max_size=5))
def test_items_become_a_table_or_one_clear_error(items: list[dict[str, object]]) -> None:
    """Any item of the documented shape becomes a lake table or a ShortInterestResponseError."""
    try:
        rows = parse_items("US.AAPL", items)
    except ShortInterestResponseError as err:
        assert err.message.startswith("malformed item for US.AAPL")
        return
    table = rows_to_table(rows, STAMP)
    assert table.schema.equals(lake_schema()) and table.num_rows == len(items)


# -- timestamp vs timestamp_str, repeated trade dates ----------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "timestamp", "day"),
    [
        ("HK.00700", 1778774400000 + 3_600_000, "2026-05-15"),  # an hour off
        ("HK.00700", 1778716800000, "2026-05-15"),  # midnight UTC, not Hong Kong
        ("US.AAPL", 1778774400000, "2026-05-15"),  # Hong Kong's midnight on a US symbol
    ],
)
def test_timestamp_must_be_midnight_of_timestamp_str(symbol: str, timestamp: int, day: str) -> None:
    item = {**HK_ITEM, "timestamp": timestamp, "timestamp_str": day}
    with pytest.raises(ShortInterestResponseError) as caught:
        parse_items(symbol, [item])
    message = caught.value.message
    assert symbol in message and str(timestamp) in message and day in message


def test_midnight_follows_daylight_saving() -> None:
    """US midnight is 04:00 UTC in summer and 05:00 UTC in winter; both are accepted."""
    summer = {"timestamp": 1778817600000, "timestamp_str": "2026-05-15"}
    winter = {"timestamp": 1768453200000, "timestamp_str": "2026-01-15"}
    rows = parse_items("US.AAPL", [summer, winter])
    assert [row["trade_date"] for row in rows] == [dt.date(2026, 5, 15), dt.date(2026, 1, 15)]
    with pytest.raises(ShortInterestResponseError, match="disagrees"):
        parse_items("US.AAPL", [{**winter, "timestamp": winter["timestamp"] - 3_600_000}])


def test_repeated_trade_dates() -> None:
    from airflow_provider_shortint.records import RepeatedDateGuard

    first = parse_items("HK.00700", [HK_ITEM])
    guard = RepeatedDateGuard("HK.00700")
    assert guard.filter(first) == first
    assert guard.filter(parse_items("HK.00700", [HK_ITEM])) == []  # the same values again: dropped
    changed = parse_items("HK.00700", [{**HK_ITEM, "aggregated_short": "1"}])
    with pytest.raises(
        ShortInterestResponseError, match=r"2026-05-15 came twice.*aggregated_short 54177721 vs 1"
    ):
        guard.filter(changed)
