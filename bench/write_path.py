"""Write path: ``ParquetLake.upsert`` against a naive ``pyarrow.dataset.write_dataset`` of the same rows.

Synthetic rows in ``lake_schema()``, built with pyarrow/numpy directly: 1,000 HK symbols x 400 weekly
dates and 1,000 US symbols x 120 twice-monthly dates = 520,000 rows in 14 (market, year) partitions.

1. Full write into an empty directory: upsert vs sorting the rows by (symbol, trade_date) and one
   ``write_dataset(..., partitioning=hive on market/year)``: the same layout (same zstd codec; the naive
   write is neither idempotent nor atomic, and does not fsync). Goal <= 1.5.
2. Incremental upsert of one new trading date (2,000 rows into each market's 2026 file) into a lake
   holding a tenth (1x: 52,000 rows) and all (10x: 520,000 rows) of that history: the cost follows the
   year the date falls in, not the history. Goal 10x / 1x <= 1.2.
   Also ``latest_dates`` of all 2,000 symbols (what an incremental run asks first) on both lakes.
3. Peak memory of each, in a fresh subprocess (see bench/_util.py: tracemalloc, Arrow pool, maxrss).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench._util import Report, interleaved, measure_peak, median, mib, peak_memory, quiet_logs

if TYPE_CHECKING:
    import pyarrow as pa

N_HK, N_US = 1000, 1000
HK_DATES, US_DATES = 400, 120
LAST_DATE = dt.date(2026, 5, 15)
NEW_DATE = dt.date(2026, 5, 29)  # a Friday and a US month end: one new date for both markets
STAMP = dt.datetime(2026, 5, 16, tzinfo=dt.UTC)


def hk_dates(n: int) -> list[dt.date]:
    return [LAST_DATE - dt.timedelta(weeks=i) for i in range(n)]


def us_dates(n: int) -> list[dt.date]:
    out: list[dt.date] = []
    year, month = LAST_DATE.year, LAST_DATE.month
    while len(out) < n:
        first_next = dt.date(year + (month == 12), month % 12 + 1, 1)
        for day in (first_next - dt.timedelta(days=1), dt.date(year, month, 15)):
            if day <= LAST_DATE and len(out) < n:
                out.append(day)
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out


def market_rows(market: str, n_symbols: int, dates: list[dt.date], seed: int) -> pa.Table:
    """symbols x dates rows of one market in lake_schema(), values random but plausible."""
    import numpy as np
    import pyarrow as pa

    from airflow_provider_shortint.records import lake_schema

    rng = np.random.default_rng(seed)
    n = n_symbols * len(dates)
    prefix = "HK." if market == "HK" else "US.S"
    symbols = [f"{prefix}{i:05d}" if market == "HK" else f"{prefix}{i:04d}" for i in range(n_symbols)]
    days = np.array(dates, dtype="datetime64[D]")
    columns: dict[str, Any] = {
        "symbol": pa.array(np.repeat(np.array(symbols, dtype=object), len(dates)), pa.string()),
        "trade_date": pa.array(np.tile(days, n_symbols), pa.date32()),
        "timestamp": pa.array(np.tile(days.astype("datetime64[ms]").astype("int64"), n_symbols)),
        "close_price": rng.uniform(1, 500, n).round(3),
        "last_close_price": rng.uniform(1, 500, n).round(3),
        "avg_daily_short_volume": rng.integers(0, 10**8, n),
    }
    if market == "HK":
        columns |= {
            "aggregated_short": rng.integers(0, 10**9, n),
            "aggregated_short_ratio": rng.uniform(0, 1, n).round(4),
            "avg_cost": rng.uniform(1, 500, n).round(3),
        }
    else:
        columns |= {
            "shares_short": rng.integers(0, 10**9, n),
            "short_percent": rng.uniform(0, 0.3, n).round(4),
            "avg_daily_share_volume": rng.integers(0, 10**8, n),
            "days_to_cover": rng.uniform(0, 20, n).round(2),
        }
    schema = lake_schema()
    arrays = []
    for field in schema:
        if field.name == "ingested_at":
            arrays.append(pa.array(np.full(n, int(STAMP.timestamp() * 1e6)), field.type))
        elif field.name in columns:
            arrays.append(pa.array(columns[field.name], field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def history(tenths: int) -> pa.Table:
    import pyarrow as pa

    return pa.concat_tables(
        [
            market_rows("HK", N_HK, hk_dates(HK_DATES * tenths // 10), 1),
            market_rows("US", N_US, us_dates(US_DATES * tenths // 10), 2),
        ]
    )


def new_date_rows() -> pa.Table:
    import pyarrow as pa

    return pa.concat_tables([market_rows("HK", N_HK, [NEW_DATE], 3), market_rows("US", N_US, [NEW_DATE], 4)])


def symbols_of(table: pa.Table) -> list[str]:
    return sorted(set(table.column("symbol").unique().to_pylist()))


# -- the operations measured -------------------------------------------------------------------------------


def upsert(table: pa.Table, lake_dir: str) -> Any:
    from airflow_provider_shortint.lake import open_lake

    return open_lake(lake_dir).upsert(table)


def latest(lake_dir: str, symbols: list[str]) -> Any:
    from airflow_provider_shortint.lake import open_lake

    return open_lake(lake_dir).latest_dates(symbols)


def naive_write(table: pa.Table, out_dir: str) -> None:
    """What one would write without the lake: the same layout (hive partitions market/year, rows sorted
    by symbol and trade date, which readers' row-group pruning relies on) in one call, no merge."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = table.sort_by([("symbol", "ascending"), ("trade_date", "ascending")])
    market = pc.utf8_slice_codeunits(table.column("symbol"), 0, 2)
    year = pc.year(table.column("trade_date")).cast(pa.int32())
    with_keys = table.append_column("market", market).append_column("year", year)
    ds.write_dataset(
        with_keys,
        out_dir,
        format="parquet",
        partitioning=ds.partitioning(
            pa.schema([("market", pa.string()), ("year", pa.int32())]), flavor="hive"
        ),
        file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
        basename_template="part-{i}.parquet",
        existing_data_behavior="overwrite_or_ignore",
        max_partitions=4096,
    )


def upsert_without_fsync(table: pa.Table, lake_dir: str) -> Any:
    """upsert() with the lake's fsync switched off, to show what durability costs (bench only)."""
    from unittest import mock

    with mock.patch("os.fsync", lambda fd: None):
        return upsert(table, lake_dir)


def new_date_files(lake_dir: str) -> dict[Path, bytes]:
    """The files the new date goes into (each market's file of its year), to put back after a run."""
    files = (
        Path(lake_dir, f"market={market}", f"year={NEW_DATE.year}", "part-0.parquet")
        for market in ("HK", "US")
    )
    return {path: path.read_bytes() for path in files}


def put_back(saved: dict[Path, bytes]) -> None:
    for path, data in saved.items():
        path.write_bytes(data)


def save(table: pa.Table, path: str) -> None:
    import pyarrow as pa

    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def load(path: str) -> pa.Table:
    import pyarrow as pa

    with pa.OSFile(path, "rb") as source:
        return pa.ipc.open_file(source).read_all()


def memory_child(variant: str, input_path: str, target: str) -> None:
    """Subprocess entry: load the input (not measured), run one operation under measure_peak."""
    quiet_logs()
    table = load(input_path)
    operation = naive_write if variant == "naive" else upsert
    with tempfile.TemporaryDirectory() as warm:
        operation(table.slice(0, 1), warm)  # one-off imports of the write path, not measured
    with measure_peak() as peak:
        operation(table, target)
    print(json.dumps(peak))


# -- the benchmark -------------------------------------------------------------------------------------------


def run(quick: bool = False) -> Report:
    import pyarrow.dataset as ds

    from airflow_provider_shortint.lake import open_lake

    quiet_logs()
    repeat_full, repeat_incr = (1, 3) if quick else (3, 7)
    report = Report("write_path", "lake upsert vs naive write_dataset")
    full = history(10)
    tenth = history(1)
    new = new_date_rows()
    with tempfile.TemporaryDirectory(prefix="bench-write-") as tmp:
        upsert(new.slice(0, 1), f"{tmp}/warm")  # one-off imports of the write path
        naive_write(new.slice(0, 1), f"{tmp}/warm-naive")

        # 1. full write, interleaved, each into an empty directory
        outputs: dict[str, str] = {}

        def fresh(name: str, i: int) -> None:
            outputs[name] = f"{tmp}/{name}-{i}"

        times = interleaved(
            {
                "upsert": lambda: upsert(full, outputs["upsert"]),
                "naive": lambda: naive_write(full, outputs["naive"]),
                "nofsync": lambda: upsert_without_fsync(full, outputs["nofsync"]),
            },
            repeat_full,
            setup=fresh,
        )
        lake10 = f"{tmp}/upsert-0"
        files = len(list(Path(lake10).glob("market=*/year=*/part-0.parquet")))
        naive_rows = ds.dataset(f"{tmp}/naive-0", format="parquet", partitioning="hive").count_rows()
        lake_rows = open_lake(lake10).read(columns=["symbol"]).num_rows
        assert lake_rows == naive_rows == full.num_rows, (lake_rows, naive_rows)
        t_up, t_naive = median(times["upsert"]), median(times["naive"])
        ratio = t_up / t_naive
        report.add(
            f"full write {full.num_rows:,} rows / {files} partitions",
            f"{t_up:.2f} s upsert",
            f"{t_naive:.2f} s naive",
            f"{ratio:.2f}",
            "<= 1.5",
            ratio <= 1.5,
        )
        report.add(
            "  throughput",
            f"{full.num_rows / t_up:,.0f} rows/s",
            f"{full.num_rows / t_naive:,.0f} rows/s",
        )
        t_variant = median(times["nofsync"])
        report.add(
            "  same upsert, fsync patched out",
            f"{t_variant:.2f} s",
            f"{t_naive:.2f} s naive",
            f"{t_variant / t_naive:.2f}",
            "(info)",
        )

        # 2. incremental: one new date into 1x and 10x history
        lake1 = f"{tmp}/lake1"
        upsert(tenth, lake1)
        lakes = {"1x": lake1, "10x": lake10}
        before = {name: new_date_files(path) for name, path in lakes.items()}
        times = interleaved(
            {name: functools.partial(upsert, new, path) for name, path in lakes.items()},
            repeat_incr,
            setup=lambda name, i: put_back(before[name]),
        )
        t1, t10 = median(times["1x"]), median(times["10x"])
        ratio = t10 / t1
        report.add(
            f"incremental {new.num_rows:,} rows, 1 new date (its year's file rewritten)",
            f"{t10 * 1000:,.0f} ms into 10x",
            f"{t1 * 1000:,.0f} ms into 1x",
            f"{ratio:.2f}",
            "<= 1.2",
            ratio <= 1.2,
        )
        symbols = symbols_of(full)
        times = interleaved(
            {name: functools.partial(latest, path, symbols) for name, path in lakes.items()},
            repeat_incr,
        )
        t1, t10 = median(times["1x"]), median(times["10x"])
        report.add(
            f"  latest_dates({len(symbols):,} symbols)",
            f"{t10 * 1000:,.0f} ms on 10x",
            f"{t1 * 1000:,.0f} ms on 1x",
            f"{t10 / t1:.2f}",
            "(info)",
        )

        # 3. peak memory, each in a fresh process
        save(full, f"{tmp}/full.arrow")
        save(new, f"{tmp}/new.arrow")
        put_back(before["1x"])
        put_back(before["10x"])
        mem = {
            "upsert": peak_memory(__name__, "upsert", f"{tmp}/full.arrow", f"{tmp}/mem-upsert"),
            "naive": peak_memory(__name__, "naive", f"{tmp}/full.arrow", f"{tmp}/mem-naive"),
            "incr1": peak_memory(__name__, "upsert", f"{tmp}/new.arrow", lake1),
            "incr10": peak_memory(__name__, "upsert", f"{tmp}/new.arrow", lake10),
        }
    input_size = full.nbytes
    for label, a, b in (("full write", "upsert", "naive"), ("incremental", "incr10", "incr1")):
        names = ("10x", "1x") if label == "incremental" else ("upsert", "naive")
        for key, what in (
            ("arrow_peak", "Arrow pool"),
            ("python_peak", "Python heap"),
            ("rss_growth", "RSS"),
        ):
            report.add(
                f"  peak {what}, {label}",
                f"{mib(mem[a][key])} {names[0]}",
                f"{mib(mem[b][key])} {names[1]}",
                f"{mem[a][key] / max(mem[b][key], 1):.2f}" if mem[b][key] > 2**20 else "",
                "(info)",
            )
    report.notes.append(
        f"input table {mib(input_size)} in Arrow; medians of {repeat_full} (full) / {repeat_incr} "
        "(incremental) interleaved runs; the upsert fsyncs every file and folder, the naive write none"
    )
    return report


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--memory":
        memory_child(*sys.argv[2:5])
    else:
        print(run().render())
