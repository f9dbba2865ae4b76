"""Parse path: JSON pages as the API sends them -> a typed table, rows per second.

Pages: the sandbox's histories of 100 HK and 100 US symbols cut into pages of 90 items and wrapped
in the API envelope, serialised to bytes once (about 40,000 rows, 500 pages).

* measured (the provider): what ``get_history`` does with each symbol's pages: ``json.loads`` +
  ``records.parse_items`` (the one row parser: every value checked), then ``records.rows_to_table``;
* baseline: the most the API can deliver, 30 requests of 90 rows per 30 s = 90 rows/s;
* also shown: pandas, per symbol ``json.loads`` + ``pd.DataFrame(items)`` + dtype conversions to the same
  typed result (int64 from the strings, float64, datetime64 trade_date, symbol, tz-aware ingested_at,
  lake column order), then ``pd.concat``; and pandas with one frame per market.

Goal: the parser keeps up with the API at least 100x over (parsing never bounds a load). Median of
interleaved repeats.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from bench._util import Report, interleaved, median

PAGE = 90
#: The most rows the API can deliver: 30 requests of 90 items per 30 s.
API_ROWS_PER_SECOND = 90
N_HK = N_US = 100


def build_pages(quick: bool) -> dict[str, list[bytes]]:
    """symbol -> its pages as response bodies, newest first, with opaque next_keys."""
    from airflow_provider_shortint.sandbox import SandboxServer

    n = 20 if quick else N_HK
    symbols = [f"HK.{i:05d}" for i in range(1, n + 1)] + [f"US.A{i:03d}" for i in range(1, n + 1)]
    pages: dict[str, list[bytes]] = {}
    server = SandboxServer()  # never started: history() needs no socket
    for symbol in symbols:
        try:
            items = server.history(symbol)
        except ValueError:
            continue
        chunks = [items[i : i + PAGE] for i in range(0, len(items), PAGE)]
        pages[symbol] = [
            json.dumps(
                {
                    "ret_code": 0,
                    "ret_msg": "success",
                    "data": {"items": chunk, "next_key": f"key{i + 1}" if i + 1 < len(chunks) else "-1"},
                }
            ).encode()
            for i, chunk in enumerate(chunks)
        ]
    return pages


def provider_path(pages: dict[str, list[bytes]]) -> Any:
    from airflow_provider_shortint.records import concat_tables, parse_items, rows_to_table

    stamp = dt.datetime.now(dt.UTC)
    tables = []
    for symbol, bodies in pages.items():
        rows = []
        for body in bodies:
            rows.extend(parse_items(symbol, json.loads(body)["data"]["items"]))
        tables.append(rows_to_table(rows, stamp))
    return concat_tables(tables)


def pandas_path(pages: dict[str, list[bytes]]) -> Any:
    import pandas as pd

    from airflow_provider_shortint.records import COLUMNS, FLOAT_FIELDS, INT_FIELDS

    stamp = pd.Timestamp(dt.datetime.now(dt.UTC))
    frames = []
    for symbol, bodies in pages.items():
        items = [item for body in bodies for item in json.loads(body)["data"]["items"]]
        frame = pd.DataFrame(items)
        frame["symbol"] = symbol
        frame["trade_date"] = pd.to_datetime(frame.pop("timestamp_str"), format="%Y-%m-%d")
        frame["ingested_at"] = stamp
        frame = frame.astype(
            {
                "timestamp": "int64",
                **{name: "int64" for name in INT_FIELDS if name in frame},
                **{name: "float64" for name in FLOAT_FIELDS if name in frame},
            }
        )
        frames.append(frame)
    result = pd.concat(frames, ignore_index=True).reindex(columns=list(COLUMNS))
    return result.astype({name: "Int64" for name in INT_FIELDS})


def pandas_bulk(pages: dict[str, list[bytes]]) -> Any:
    """pandas at its best: one DataFrame per market over all symbols (fewer, larger conversions)."""
    import pandas as pd

    from airflow_provider_shortint.records import COLUMNS, FLOAT_FIELDS, INT_FIELDS

    stamp = pd.Timestamp(dt.datetime.now(dt.UTC))
    frames = []
    for market in ("HK", "US"):
        items: list[dict[str, Any]] = []
        symbols: list[str] = []
        for symbol, bodies in pages.items():
            if symbol.startswith(market):
                for body in bodies:
                    page = json.loads(body)["data"]["items"]
                    items.extend(page)
                    symbols.extend([symbol] * len(page))
        frame = pd.DataFrame(items)
        frame["symbol"] = symbols
        frame["trade_date"] = pd.to_datetime(frame.pop("timestamp_str"), format="%Y-%m-%d")
        frame["ingested_at"] = stamp
        present = [name for name in INT_FIELDS if name in frame]
        frame = frame.astype(
            {"timestamp": "int64", **dict.fromkeys(present, "int64")}
            | {name: "float64" for name in FLOAT_FIELDS if name in frame}
        )
        frames.append(frame)
    result = pd.concat(frames, ignore_index=True).reindex(columns=list(COLUMNS))
    return result.astype(dict.fromkeys(INT_FIELDS, "Int64"))


def run(quick: bool = False) -> Report:
    import pandas as pd
    import pyarrow as pa

    from airflow_provider_shortint.records import lake_schema

    report = Report("parse_path", "JSON pages -> typed table: the row parser vs the API's delivery rate")
    pages = build_pages(quick)
    n_pages = sum(len(bodies) for bodies in pages.values())
    n_bytes = sum(len(body) for bodies in pages.values() for body in bodies)
    table = provider_path(pages)
    frame = pandas_path(pages)
    # Same result, whichever way: the pandas frame converted back equals the provider's table.
    assert table.schema.equals(lake_schema()), table.schema
    assert len(frame) == table.num_rows
    assert frame["aggregated_short"].sum() == pa.compute.sum(table.column("aggregated_short")).as_py()
    assert (
        pd.Series(table.column("trade_date").to_pylist(), dtype="datetime64[s]") == frame["trade_date"]
    ).all()
    rows = table.num_rows

    assert len(pandas_bulk(pages)) == rows
    variants = {
        "provider": lambda: provider_path(pages),
        "pandas": lambda: pandas_path(pages),
        "pandas_bulk": lambda: pandas_bulk(pages),
    }
    times = interleaved(variants, 3 if quick else 7)
    t_provider, t_pandas, t_bulk = (median(times[name]) for name in ("provider", "pandas", "pandas_bulk"))
    speed = rows / t_provider
    report.add(
        f"{rows:,} rows, {n_pages} pages, {n_bytes / 2**20:.1f} MiB JSON",
        f"{speed:,.0f} rows/s",
        f"{API_ROWS_PER_SECOND} rows/s the API's most",
        f"{speed / API_ROWS_PER_SECOND:,.0f}x",
        ">= 100x",
        speed >= 100 * API_ROWS_PER_SECOND,
    )
    report.add(
        "  time per 90-item page",
        f"{t_provider / n_pages * 1000:.2f} ms",
        f"{t_pandas / n_pages * 1000:.2f} ms pandas",
    )
    report.add(
        "  vs pandas per symbol / one frame per market",
        f"{speed:,.0f} rows/s",
        f"{rows / t_pandas:,.0f} / {rows / t_bulk:,.0f} rows/s",
        f"{t_pandas / t_provider:.2f}x / {t_bulk / t_provider:.2f}x",
        "(info)",
    )
    return report


if __name__ == "__main__":
    print(run().render())
