"""pandas DataFrames shaped like the vendor SDK's ``get_short_interest`` output (DESIGN.md §5)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_shortint.markets import MARKETS
from airflow_provider_shortint.records import INT_FIELDS, ShortInterestPage

if TYPE_CHECKING:
    import pandas as pd

# Frame columns per market: the SDK's first, then the REST fields the SDK's frame leaves out.
FRAME_COLUMNS = {code: market.rest_frame_columns for code, market in MARKETS.items()}


def sdk_frames(page: ShortInterestPage) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(us_df, hk_df)``: the page's market frame filled, the other empty; next_key "-1" at the end.

    ``timestamp`` is in seconds, as the SDK prints it (the REST endpoint sends milliseconds).
    """
    import pandas as pd

    frames: dict[str, pd.DataFrame] = {}
    for market, columns in FRAME_COLUMNS.items():
        rows = page.items if market == page.market else []
        frame = pd.DataFrame({column: _sdk_column(rows, column) for column in columns})
        frame.attrs["next_key"] = (page.next_key or "-1") if market == page.market else "-1"
        frames[market] = frame
    return frames["US"], frames["HK"]


def _sdk_column(rows: list[dict[str, Any]], column: str) -> Any:
    import pandas as pd

    if column == "timestamp_str":
        return pd.Series([row["trade_date"].isoformat() for row in rows], dtype=object)
    values = [row.get(column) for row in rows]
    if column == "timestamp":
        values = [None if v is None else v // 1000 for v in values]
    if column == "timestamp" or column in INT_FIELDS:
        return pd.Series(values, dtype="int64" if None not in values else "Int64")
    return pd.Series(values, dtype="float64")
