"""Delta and Iceberg tables beside the Parquet lake at a whole market's size (DESIGN.md §11, §12).

The rows and sizes of ``bench.lake_scale`` (HK symbols every weekday, US symbols twice a month, ten years
back from 2026-05-15): ``make bench`` runs ``lake_scale.FRACTION`` of the symbols, ``--quick`` fewer,
``--full`` all 2,600 HK and 6,000 US (about 8.2 M rows). Each store is driven the way the example DAGs
drive the lake:

- backfill (``shortint_backfill``): chunks of 10 symbols. The Parquet lake (baseline) stages each chunk
  and commits once (``lake_scale.backfill_staged``); a table upserts each chunk as it comes (a MERGE
  of new keys adds files and rewrites none);
- daily run (``shortint_daily``): ``latest_dates(universe)``, then one new trading date for every
  symbol, one upsert per market;
- maintenance (``maintain()``, the weekly task): compaction of the small files the runs left;
- the three reads, each cold (a fresh table object / scan), median of ``READ_REPEAT``: one symbol's
  history, one date's cross-section, the latest date per symbol. Parquet: DuckDB and polars on the
  documented glob; Delta: polars ``scan_delta`` and delta-rs' own SQL engine; Iceberg: polars
  ``scan_iceberg`` and a pyiceberg scan with a row filter.

Bytes written: the bytes of every file a step created (a table keeps every file until maintenance
removes it; Iceberg also drops metadata files past ``write.metadata.previous-versions-max``), against
the bytes of the data files the table's current version holds.

    python -m bench tables [--quick | --full]
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._util import Report, fmt_ms, fmt_s, mib, quiet_logs

READ_REPEAT = 5
FORMATS = ("delta", "iceberg")


def kib(n: int) -> str:
    return f"{n / 1024:,.0f} KiB"


def files(root: str) -> dict[str, int]:
    """Every file under ``root`` and its size."""
    return {str(p): p.stat().st_size for p in Path(root).rglob("*") if p.is_file()}


def created_bytes(before: dict[str, int], after: dict[str, int]) -> int:
    """Bytes of the files in ``after`` that were not in ``before`` (or changed size)."""
    return sum(size for name, size in after.items() if before.get(name) != size)


def open_format(table_format: str, root: str) -> Any:
    from airflow_provider_shortint.lake.formats import open_table

    if table_format == "delta":
        return open_table(f"{root}/delta", "delta")
    return open_table("shortint.short_interest", "iceberg", warehouse=f"{root}/iceberg")


def table_root(table_format: str, root: str) -> str:
    return f"{root}/{table_format}"


def live_bytes(table: Any) -> tuple[int, int]:
    """(bytes, files) of the data files the table's current version holds."""
    if table.table_format == "delta":
        from deltalake import DeltaTable

        actions = DeltaTable(table.uri).get_add_actions(flatten=True)
        import pyarrow as pa

        sizes = pa.table(actions).column("size_bytes").to_pylist()
        return sum(sizes), len(sizes)
    state = table._snapshot(create=False)
    frame = state.table.inspect.data_files()
    sizes = frame.column("file_size_in_bytes").to_pylist()
    return sum(sizes), len(sizes)


def median_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        begin = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - begin)
    return float(statistics.median(times)), result


def table_queries(table: Any, symbol: str, day: dt.date) -> dict[tuple[str, str], Callable[[], int]]:
    """(question, engine) -> a cold read returning its row count."""
    import polars as pl

    questions: dict[str, Callable[[Any], Any]] = {
        "one symbol's history": lambda scan: (
            scan.filter(pl.col("symbol") == symbol).select("trade_date", "close_price").sort("trade_date")
        ),
        "one date's cross-section": lambda scan: scan.filter(pl.col("trade_date") == day).select(
            "symbol", "close_price"
        ),
        "latest date per symbol": lambda scan: scan.group_by("symbol").agg(pl.col("trade_date").max()),
    }
    out: dict[tuple[str, str], Callable[[], int]] = {}
    if table.table_format == "delta":
        import pyarrow as pa
        from deltalake import DeltaTable, QueryBuilder

        sql = {
            "one symbol's history": f"SELECT trade_date, close_price FROM t WHERE symbol = '{symbol}' "
            "ORDER BY trade_date",
            "one date's cross-section": f"SELECT symbol, close_price FROM t WHERE trade_date = "
            f"DATE '{day.isoformat()}'",
            "latest date per symbol": "SELECT symbol, max(trade_date) FROM t GROUP BY symbol",
        }
        for name, plan in questions.items():
            out[(name, "polars")] = lambda plan=plan: plan(pl.scan_delta(table.uri)).collect().height
            out[(name, "delta-rs SQL")] = lambda q=sql[name]: (
                pa.table(QueryBuilder().register("t", DeltaTable(table.uri)).execute(q)).num_rows
            )
        return out
    from pyiceberg.expressions import EqualTo

    catalog = table.config.load()
    filters = {
        "one symbol's history": (EqualTo("symbol", symbol), ("trade_date", "close_price")),
        "one date's cross-section": (EqualTo("trade_date", day), ("symbol", "close_price")),
        "latest date per symbol": (None, ("symbol", "trade_date")),
    }
    for name, plan in questions.items():
        out[(name, "polars")] = lambda plan=plan: (
            plan(pl.scan_iceberg(catalog.load_table(table.identifier))).collect().height
        )
        row_filter, fields = filters[name]

        def scan(row_filter: Any = row_filter, fields: tuple[str, ...] = fields, name: str = name) -> int:
            loaded = catalog.load_table(table.identifier)
            rows = (
                loaded.scan(selected_fields=fields)
                if row_filter is None
                else loaded.scan(row_filter=row_filter, selected_fields=fields)
            ).to_arrow()
            if name == "latest date per symbol":
                rows = rows.group_by("symbol").aggregate([("trade_date", "max")])
            return int(rows.num_rows)

        out[(name, "pyiceberg")] = scan
    return out


def run(quick: bool = False, full: bool = False) -> Report:
    import os

    from bench import lake_scale

    os.environ.setdefault("POLARS_ICEBERG_PLANNER", "pyiceberg")  # no polars_iceberg plugin here
    quiet_logs()
    fraction = 1.0 if full else lake_scale.QUICK_FRACTION if quick else lake_scale.FRACTION
    data = lake_scale.universe(fraction)
    size = "full size" if full else f"{fraction:.3g} of the symbols"
    report = Report(
        "tables",
        f"Delta and Iceberg beside the Parquet lake ({size}: {data.n_hk} HK + {data.n_us} US symbols, "
        f"{data.rows:,} rows, ten years)",
    )
    chunks = list(data.chunks())
    hk_new, us_new = data.new_day()
    universe_symbols = hk_new.column("symbol").to_pylist() + us_new.column("symbol").to_pylist()
    symbol, day = hk_new.column("symbol")[len(hk_new) // 2].as_py(), dt.date(2025, 3, 14)
    with tempfile.TemporaryDirectory(prefix="bench-tables-") as tmp:
        # The baseline: the Parquet lake, staged backfill and a daily run committed once per market.
        from airflow_provider_shortint.lake import open_lake

        parquet_path = f"{tmp}/parquet"
        base = lake_scale.backfill_staged(data, parquet_path)
        parquet = open_lake(parquet_path)
        before = files(parquet_path)
        begin = time.perf_counter()
        parquet.latest_dates(universe_symbols)
        for market, rows in (("HK", hk_new), ("US", us_new)):
            parquet.stage(rows, f"daily-{market}", "batch.00000")
            parquet.commit_staged(f"daily-{market}")
        base_daily = time.perf_counter() - begin
        base_daily_bytes = created_bytes(before, files(parquet_path))
        base_reads = lake_scale.read_times(parquet_path, symbol, day, READ_REPEAT)
        parquet_rows = parquet.read(["symbol"]).num_rows

        for table_format in FORMATS:
            root = table_root(table_format, tmp)
            table = open_format(table_format, tmp)
            # 1. Backfill, chunk by chunk.
            times = []
            began = time.perf_counter()
            for _, rows in chunks:
                begin = time.perf_counter()
                table.upsert(rows)
                times.append(time.perf_counter() - begin)
            seconds = time.perf_counter() - began
            written = sum(files(root).values())
            live, live_files = live_bytes(table)
            report.add(
                f"{table_format} backfill, {len(chunks)} chunks of {lake_scale.CHUNK}: written / table bytes",
                f"{written / live:.2f} ({mib(written)} / {mib(live)}, {live_files} files)",
                f"{base.ratio:.2f} parquet ({mib(base.written.total)} / {mib(base.lake)})",
                f"{(written / live) / base.ratio:.2f}",
                "<= 2",
                written / live <= 2.0,
            )
            report.add(
                "  lake time: whole / per chunk, first / last",
                f"{fmt_s(seconds)} / {fmt_ms(times[0])}, {fmt_ms(times[-1])}",
                f"{fmt_s(base.seconds)} parquet (staged + commit)",
                f"{seconds / base.seconds:.2f}",
                "(info)",
            )
            # 2. The daily run: latest_dates(universe), then one new date per symbol, one upsert a market.
            before = files(root)
            begin = time.perf_counter()
            table.latest_dates(universe_symbols)
            for rows in (hk_new, us_new):
                table.upsert(rows)
            daily = time.perf_counter() - begin
            daily_bytes = created_bytes(before, files(root))
            report.add(
                f"{table_format} daily run (1 date x all symbols): bytes written, lake time",
                f"{kib(daily_bytes)}, {fmt_ms(daily)}",
                f"{kib(base_daily_bytes)}, {fmt_ms(base_daily)} parquet",
                f"{daily_bytes / max(base_daily_bytes, 1):.3f}",
                "(info)",
            )
            sensor, _ = median_time(lambda table=table: table.latest_dates([symbol]), READ_REPEAT)
            report.add(
                "  sensor's reference date (one symbol)",
                fmt_ms(sensor),
                "",
                "",
                "(info)",
            )
            # 3. Maintenance: compaction of what the runs left.
            files_before = live_bytes(table)[1]
            begin = time.perf_counter()
            result = table.maintain()
            maintained = time.perf_counter() - begin
            report.add(
                "  maintain(): data files before / after, time",
                f"{files_before} / {live_bytes(table)[1]}, {fmt_s(maintained)}",
                f"{result.files_compacted} compacted into {result.files_written}",
                "",
                "(info)",
            )
            assert table.read(["symbol"]).num_rows == parquet_rows, table_format
            # 4. The three reads, cold.
            for (name, engine), query in table_queries(table, symbol, day).items():
                seconds, rows = median_time(query, READ_REPEAT)
                other, other_rows = base_reads[(name, "DuckDB")]
                assert rows == other_rows, (table_format, name, engine, rows, other_rows)
                report.add(
                    f"  {name}, {engine} ({rows:,} rows)",
                    fmt_ms(seconds),
                    f"{fmt_ms(other)} parquet, DuckDB",
                    f"{seconds / other:.2f}",
                    "(info)",
                )
    report.notes.append(
        f"reads: median of {READ_REPEAT} cold runs; parquet polars figures: "
        + ", ".join(
            f"{name} {fmt_ms(s)}" for (name, engine), (s, _) in base_reads.items() if engine == "polars"
        )
    )
    return report


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv, full="--full" in sys.argv).render())
