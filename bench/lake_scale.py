"""The lake at the size of a whole market (DESIGN.md §11): backfill, daily run, reads, memory, S3 requests.

Synthetic rows in ``lake_schema()`` (``bench.write_path.market_rows``): HK symbols with a record every
weekday and US symbols on the 15th and the month end, ten years back from 2026-05-15. The full size
(``--full``) is 2,600 HK and 6,000 US symbols, about 8.2 M rows; ``make bench`` runs ``FRACTION`` of the
symbols (65 HK, 150 US: the same ten years, the same 2,838 daily partitions), ``--quick`` fewer.

The lake API is driven the way the example DAGs drive it:

- backfill (``shortint_backfill``): chunks of 10 symbols; each chunk stages its rows
  (``ParquetLake.stage`` under the run), then one ``commit_staged`` writes every partition once;
- daily run (``shortint_daily``): ``latest_dates(universe)``, a new trading date for every symbol staged
  in batches of 50 symbols, one commit.

Baseline, in the same run: the daily layout (``market=XX/dt=YYYY-MM-DD/part-0.parquet``) written by the
same merge, Parquet and store code (``DailyLake`` below) the way the lake wrote it before staging: each
chunk upserted after its fetch, the daily run in 52 batches of 50 symbols. At ``--full`` that baseline
backfill would take hours: its first and last chunks are timed, and its bytes are estimated from the
lake's size after each chunk growing linearly (the estimate is printed beside the measured figure at
the default size, where the baseline runs whole).

Bytes written count every byte the lake hands to its store (data files and staged files). Reads:
DuckDB and polars on the documented glob ``{lake}/**/*.parquet`` with hive partitioning, a fresh
connection each time (cold metadata; the files are in the OS cache), median of ``READ_REPEAT``. S3:
the same backfill on the moto server of ``tests/_fixtures_s3.py``, requests counted from its log.

    python -m bench lake_scale [--quick | --full]
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench._util import Report, fmt_ms, fmt_s, measure_peak, mib, peak_memory, quiet_logs

if TYPE_CHECKING:
    import pyarrow as pa

FULL_HK, FULL_US = 2600, 6000
FRACTION = 1 / 40  # make bench: 65 HK and 150 US symbols, ten years (a few minutes on 2 cores)
QUICK_FRACTION = 1 / 200  # --quick: 13 HK, 30 US
CHUNK = 10  # symbols per mapped task of shortint_backfill
DAILY_BATCH = 50  # symbols per staged batch of a daily run (the operator's batch_size)
FIRST_DAY, LAST_DAY = dt.date(2016, 5, 16), dt.date(2026, 5, 15)
NEW_DAY = dt.date(2026, 5, 29)  # a Friday and a US month end: one new date for both markets
RUN = "manual__2026-05-16T01:00:00+00:00"
READ_REPEAT = 5  # the yearly lake's reads
BASELINE_READ_REPEAT = 3  # the daily layout's reads (2,838 files: each takes up to a second)
OP_REPEAT = 5


def hk_days() -> list[dt.date]:
    days, day = [], FIRST_DAY
    while day <= LAST_DAY:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def us_days() -> list[dt.date]:
    days = []
    for year in range(FIRST_DAY.year, LAST_DAY.year + 1):
        for month in range(1, 13):
            end = (dt.date(year + month // 12, month % 12 + 1, 1)) - dt.timedelta(days=1)
            for day in (dt.date(year, month, 15), end):
                while day.weekday() >= 5:
                    day -= dt.timedelta(days=1)
                if FIRST_DAY <= day <= LAST_DAY:
                    days.append(day)
    return days


@dataclass
class Universe:
    """The synthetic rows of both markets, and their chunks as the backfill cuts them."""

    hk: pa.Table
    us: pa.Table
    n_hk: int
    n_us: int

    @property
    def rows(self) -> int:
        return int(self.hk.num_rows + self.us.num_rows)

    def chunks(self) -> Iterator[tuple[str, pa.Table]]:
        """(market, rows of CHUNK symbols), HK chunks first, as the backfill's mapped tasks fetch them."""
        for market, table, symbols in (("HK", self.hk, self.n_hk), ("US", self.us, self.n_us)):
            per_symbol = table.num_rows // symbols
            for start in range(0, symbols, CHUNK):
                count = min(CHUNK, symbols - start)
                yield market, table.slice(start * per_symbol, count * per_symbol)

    def new_day(self) -> tuple[pa.Table, pa.Table]:
        from bench.write_path import market_rows

        return market_rows("HK", self.n_hk, [NEW_DAY], 3), market_rows("US", self.n_us, [NEW_DAY], 4)


def universe(fraction: float) -> Universe:
    from bench.write_path import market_rows

    n_hk, n_us = max(CHUNK, round(FULL_HK * fraction)), max(CHUNK, round(FULL_US * fraction))
    return Universe(market_rows("HK", n_hk, hk_days(), 1), market_rows("US", n_us, us_days(), 2), n_hk, n_us)


# -- counting what the stores write ------------------------------------------------------------------------


@dataclass
class Counter:
    """Bytes and files handed to a store, by kind (data files, staged files)."""

    data: int = 0
    staged: int = 0
    files: int = 0

    @property
    def total(self) -> int:
        return self.data + self.staged


def counted(store: Any, counter: Counter) -> Any:
    """``store`` with its writes counted (the same store, its methods wrapped). A staged file is counted
    where it is put (a local store's ``put`` goes through its ``write``)."""
    write, put = store.write, store.put

    def counted_write(rel: str, data: bytes, expected: Any) -> None:
        write(rel, data, expected)
        if not rel.startswith("_staging/"):
            counter.data += len(data)
            counter.files += 1

    def counted_put(rel: str, data: bytes) -> None:
        put(rel, data)
        counter.staged += len(data)

    store.write, store.put = counted_write, counted_put
    return store


def lake_bytes(root: str) -> int:
    return sum(p.stat().st_size for p in Path(root).rglob("*.parquet"))


# -- the baseline: the daily layout, written by the same merge, Parquet and store code ------------------


class DailyLake:
    """The daily layout of earlier versions (``market=XX/dt=YYYY-MM-DD/part-0.parquet``), upserted with
    the lake's own merge, Parquet writer and store (lock, temp file, fsync, rename / conditional PUT)."""

    def __init__(self, path: str, counter: Counter | None = None) -> None:
        from airflow_provider_shortint.lake import open_lake

        self.lake = open_lake(path)
        self.store = self.lake._store
        if counter is not None:
            counted(self.store, counter)

    def upsert(self, table: pa.Table) -> int:
        """Merge ``table`` partition by partition (market, trade date); returns partitions written."""
        import pyarrow as pa

        from airflow_provider_shortint.lake import arrow
        from airflow_provider_shortint.lake.stores.base import WriteGuard

        rows = arrow.deduplicated(arrow.conform(table, "input"))
        keys = pa.table(
            {
                "market": arrow.market_column(rows.column("symbol")),
                "day": rows.column("trade_date"),
                "pos": pa.array(range(rows.num_rows), pa.int64()),
            }
        )
        groups = keys.group_by(["market", "day"], use_threads=False).aggregate([("pos", "list")])
        written = 0
        for market, day, positions in zip(
            groups.column("market").to_pylist(),
            groups.column("day").to_pylist(),
            groups.column("pos_list"),
            strict=True,
        ):
            name = f"market={market}/dt={day.isoformat()}"
            incoming = rows.take(positions.values)
            if self.store.guard is WriteGuard.LOCK:
                with self.store.lock(name):
                    written += self._merge(name, incoming)
            else:
                written += self._merge(name, incoming)
        return written

    def _merge(self, name: str, incoming: pa.Table) -> int:
        from airflow_provider_shortint.lake import arrow

        rel = f"{name}/part-0.parquet"
        stored = self.store.read(rel)
        current = None if stored.data is None else arrow.from_parquet(stored.data, rel)
        merged, _, _ = arrow.merge(current, incoming)
        if merged is None:
            return 0
        self.store.write(rel, arrow.to_parquet(merged), stored)
        return 1


# -- the measured steps -------------------------------------------------------------------------------------


@dataclass
class Backfill:
    seconds: float
    chunk_seconds: list[float]
    written: Counter
    lake: int
    commit_seconds: float = 0.0
    estimated: int | None = None  # bytes, when the run was sampled instead of whole
    check: int | None = None  # the estimate of a whole run, to compare with what it measured

    @property
    def ratio(self) -> float:
        return (self.estimated or self.written.total) / max(self.lake, 1)


def backfill_staged(data: Universe, path: str, keep: str | None = None) -> Backfill:
    """shortint_backfill: every chunk stages its rows, then one commit writes each partition once.

    ``keep``: a folder that gets a copy of the staged files before the commit (the memory test
    commits them again in a process of its own)."""
    from airflow_provider_shortint.lake import open_lake

    counter = Counter()
    started = time.perf_counter()
    times = []
    for index, (_, rows) in enumerate(data.chunks()):
        lake = open_lake(path)  # a fresh lake per mapped task, as each task process opens it
        counted(lake._store, counter)
        begin = time.perf_counter()
        lake.stage(rows, RUN, f"load_full_history.{index:05d}.00000")
        times.append(time.perf_counter() - begin)
    if keep is not None:
        shutil.copytree(f"{path}/_staging", f"{keep}/_staging")
    lake = open_lake(path)
    counted(lake._store, counter)
    begin = time.perf_counter()
    lake.commit_staged(RUN)
    commit = time.perf_counter() - begin
    return Backfill(time.perf_counter() - started, times, counter, lake_bytes(path), commit)


def market_bytes(root: str, market: str) -> int:
    return sum(p.stat().st_size for p in Path(root, f"market={market}").rglob("*.parquet"))


def chunk_counts(data: Universe) -> dict[str, int]:
    counts: dict[str, int] = {}
    for market, _ in data.chunks():
        counts[market] = counts.get(market, 0) + 1
    return counts


def estimate_daily_bytes(chunks: int, first: int, last: int) -> int:
    """Bytes the chunk-by-chunk baseline writes for one market: every chunk rewrites the market's whole
    daily lake, which grows linearly from ``first`` bytes (after chunk 1) to ``last`` (after chunk K)."""
    return round(chunks * (first + last) / 2)


def backfill_daily_whole(data: Universe, path: str) -> Backfill:
    """The baseline: each chunk upserted into the daily layout after its fetch, every chunk."""
    counter = Counter()
    lake = DailyLake(path, counter)
    times = []
    first: dict[str, int] = {}
    started = time.perf_counter()
    for market, rows in data.chunks():
        begin = time.perf_counter()
        lake.upsert(rows)
        times.append(time.perf_counter() - begin)
        first.setdefault(market, market_bytes(path, market))
    result = Backfill(time.perf_counter() - started, times, counter, lake_bytes(path))
    counts = chunk_counts(data)
    result.check = sum(estimate_daily_bytes(counts[m], first[m], market_bytes(path, m)) for m in counts)
    return result


def backfill_daily_sampled(data: Universe, path: str) -> Backfill:
    """The baseline at the full size, sampled: per market its first chunk (timed, then the lake's size),
    all but its last chunk in one upsert (not timed), its last chunk (timed); the bytes every chunk
    would have written are estimated from the sizes after the first and the last chunk."""
    import pyarrow as pa

    lake = DailyLake(path, Counter())
    times: list[float] = []
    estimated = 0
    for market, count in chunk_counts(data).items():
        chunks = [rows for m, rows in data.chunks() if m == market]
        begin = time.perf_counter()
        lake.upsert(chunks[0])
        times.append(time.perf_counter() - begin)
        first = market_bytes(path, market)
        if len(chunks) > 2:
            lake.upsert(pa.concat_tables(chunks[1:-1]))
        if len(chunks) > 1:
            begin = time.perf_counter()
            lake.upsert(chunks[-1])
            times.append(time.perf_counter() - begin)
        estimated += estimate_daily_bytes(count, first, market_bytes(path, market))
    result = Backfill(0.0, times[:2], Counter(), lake_bytes(path))  # HK's first and last chunk
    result.estimated = estimated
    return result


@dataclass
class DailyRun:
    seconds: float
    written: Counter
    commits: int


def daily_run_yearly(data: Universe, path: str, hk: pa.Table, us: pa.Table) -> DailyRun:
    """shortint_daily on the yearly lake: latest_dates(universe), batches of 50 staged, one commit."""
    from airflow_provider_shortint.lake import open_lake

    counter = Counter()
    lake = open_lake(path)
    counted(lake._store, counter)
    begin = time.perf_counter()
    for market, table in (("HK", hk), ("US", us)):
        symbols = table.column("symbol").to_pylist()
        lake.latest_dates(symbols)
        per_batch = DAILY_BATCH
        for batch, start in enumerate(range(0, table.num_rows, per_batch)):
            lake.stage(table.slice(start, per_batch), f"daily-{market}", f"batch.{batch:05d}")
        lake.commit_staged(f"daily-{market}")
    return DailyRun(time.perf_counter() - begin, counter, 2)


def daily_run_daily(path: str, hk: pa.Table, us: pa.Table) -> DailyRun:
    """The baseline: the daily layout, each batch of 50 symbols upserted after its fetch."""
    counter = Counter()
    lake = DailyLake(path, counter)
    commits = 0
    begin = time.perf_counter()
    for table in (hk, us):
        lake.lake.latest_dates(table.column("symbol").to_pylist())
        for start in range(0, table.num_rows, DAILY_BATCH):
            commits += lake.upsert(table.slice(start, DAILY_BATCH))
    return DailyRun(time.perf_counter() - begin, counter, commits)


def median_of(fn: Callable[[], Any], repeat: int, setup: Callable[[], Any] | None = None) -> float:
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return float(statistics.median(times))


def snapshot(root: str, rels: list[str]) -> dict[str, bytes | None]:
    return {rel: (Path(root, rel).read_bytes() if Path(root, rel).exists() else None) for rel in rels}


def restore(root: str, saved: dict[str, bytes | None]) -> None:
    for rel, data in saved.items():
        target = Path(root, rel)
        if data is None:
            shutil.rmtree(target.parent, ignore_errors=True)
        else:
            target.write_bytes(data)


# -- reads ------------------------------------------------------------------------------------------


def queries(symbol: str, day: dt.date) -> dict[str, tuple[str, Callable[[Any], Any]]]:
    """The three questions, as SQL for DuckDB and as a polars plan, on the documented glob."""
    import polars as pl

    return {
        "one symbol's history": (
            f"select trade_date, close_price from read_parquet('{{glob}}', hive_partitioning = true) "
            f"where symbol = '{symbol}' order by trade_date",
            lambda scan: (
                scan.filter(pl.col("symbol") == symbol).select("trade_date", "close_price").sort("trade_date")
            ),
        ),
        "one date's cross-section": (
            f"select symbol, close_price from read_parquet('{{glob}}', hive_partitioning = true) "
            f"where trade_date = DATE '{day.isoformat()}'",
            lambda scan: scan.filter(pl.col("trade_date") == day).select("symbol", "close_price"),
        ),
        "latest date per symbol": (
            "select symbol, max(trade_date) from read_parquet('{glob}', hive_partitioning = true) "
            "group by symbol",
            lambda scan: scan.group_by("symbol").agg(pl.col("trade_date").max()),
        ),
    }


def read_times(root: str, symbol: str, day: dt.date, repeat: int) -> dict[tuple[str, str], tuple[float, int]]:
    """(question, engine) -> (median seconds, rows), each run cold (a fresh connection / scan)."""
    import duckdb
    import polars as pl

    glob = f"{root}/**/*.parquet"
    out: dict[tuple[str, str], tuple[float, int]] = {}
    for name, (sql, plan) in queries(symbol, day).items():
        times, rows = [], 0
        for _ in range(repeat):
            begin = time.perf_counter()
            rows = len(duckdb.connect().execute(sql.format(glob=glob)).fetchall())
            times.append(time.perf_counter() - begin)
        out[(name, "DuckDB")] = (float(statistics.median(times)), rows)
        times = []
        for _ in range(repeat):
            begin = time.perf_counter()
            rows = plan(pl.scan_parquet(glob, hive_partitioning=True)).collect().height
            times.append(time.perf_counter() - begin)
        out[(name, "polars")] = (float(statistics.median(times)), rows)
    return out


# -- memory, in fresh processes ------------------------------------------------------------------------------


def memory_child(variant: str, lake_path: str, data_path: str) -> None:
    """Subprocess entry: peak memory of one commit of a staged backfill, or of one upsert per market."""
    import pyarrow as pa

    from airflow_provider_shortint.lake import open_lake

    quiet_logs()
    lake = open_lake(lake_path)
    if variant == "commit":
        with measure_peak() as peak:
            lake.commit_staged(RUN)
    else:
        with pa.OSFile(data_path, "rb") as source:
            table = pa.ipc.open_file(source).read_all()
        with measure_peak() as peak:
            for market in ("HK.", "US."):
                import pyarrow.compute as pc

                lake.upsert(table.filter(pc.starts_with(table.column("symbol"), market)))
    print(json.dumps(peak))


# -- S3 ---------------------------------------------------------------------------------------------


@dataclass
class S3Counts:
    requests: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def s3_backfills(data: Universe) -> tuple[S3Counts, S3Counts, int, int]:
    """The staged backfill on moto (whole), and the chunk-by-chunk daily baseline sampled on its first
    US chunk (every partition of a chunk costs it a GET and a PUT), scaled to all chunks; returns
    (staged, baseline, partitions of the yearly lake, PUTs of its files)."""
    from airflow_provider_shortint.lake import open_lake
    from tests._fixtures_s3 import BUCKET, connection_env, count_requests, s3_client, start_moto_server

    with tempfile.TemporaryDirectory(prefix="bench-moto-") as tmp:
        log = f"{tmp}/requests.log"
        server, endpoint = start_moto_server(log=log)
        try:
            os.environ.update(connection_env(endpoint))
            s3_client(endpoint).create_bucket(Bucket=BUCKET)
            url = f"s3://aws_test@{BUCKET}"
            staged = S3Counts()
            begin = time.perf_counter()
            for index, (_, rows) in enumerate(data.chunks()):
                open_lake(f"{url}/yearly").stage(rows, RUN, f"load_full_history.{index:05d}.00000")
            open_lake(f"{url}/yearly").commit_staged(RUN)
            staged.seconds = time.perf_counter() - begin
            staged.requests = dict(count_requests(log, BUCKET, "yearly/"))
            lake_puts = count_requests(log, BUCKET, "yearly/market=").get("PUT", 0)
            partitions = len(open_lake(f"{url}/yearly")._contents().partitions)
            begin = time.perf_counter()
            us_chunk = next(rows for market, rows in data.chunks() if market == "US")
            written = DailyLake(f"{url}/daily").upsert(us_chunk)
            seconds = time.perf_counter() - begin
            per_write = sum(count_requests(log, BUCKET, "daily/").values()) / written
        finally:
            server.terminate()
            server.wait(timeout=30)
    writes = 0  # partition writes of the chunk-by-chunk baseline: every chunk, every date of its market
    import pyarrow.compute as pc

    for market, table in (("HK", data.hk), ("US", data.us)):
        days = len(pc.unique(table.column("trade_date")))
        writes += days * sum(1 for m, _ in data.chunks() if m == market)
    baseline = S3Counts({"total": round(per_write * writes), "per_write": round(per_write, 2)}, seconds)
    return staged, baseline, partitions, lake_puts


# -- the benchmark ----------------------------------------------------------------------------------


def run(quick: bool = False, full: bool = False) -> Report:
    import pyarrow as pa

    quiet_logs()
    fraction = 1.0 if full else QUICK_FRACTION if quick else FRACTION
    data = universe(fraction)
    size = "full size" if full else f"{fraction:.3g} of the symbols"
    report = Report(
        "lake_scale",
        f"the lake at a whole market's size ({size}: {data.n_hk} HK + {data.n_us} US symbols, "
        f"{data.rows:,} rows, ten years)",
    )
    chunks = sum(1 for _ in data.chunks())
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        yearly, daily = f"{tmp}/yearly", f"{tmp}/daily"
        # 1. Backfill.
        new = backfill_staged(data, yearly, keep=f"{tmp}/mem-commit")
        old = backfill_daily_sampled(data, daily) if full else backfill_daily_whole(data, daily)
        report.add(
            f"backfill, {chunks} chunks of {CHUNK}: bytes written / lake bytes",
            f"{new.ratio:.2f} ({mib(new.written.total)} / {mib(new.lake)})",
            f"{old.ratio:.1f} daily layout, chunk by chunk" + (" (estimated)" if old.estimated else ""),
            f"{new.ratio / old.ratio:.3f}",
            "<= 2",
            new.ratio <= 2.0,
        )
        report.add(
            "  of which staged / committed",
            f"{mib(new.written.staged)} / {mib(new.written.data)}",
            f"{new.written.files} partition files written, "
            f"{len(list(Path(yearly).rglob('*.parquet')))} in the lake",
        )
        if old.check is not None:
            report.add(
                "  baseline bytes: measured vs the linear estimate (--full uses it)",
                mib(old.written.total),
                mib(old.check),
                f"{old.check / max(old.written.total, 1):.2f}",
                "(info)",
            )
        report.add(
            "  lake time per chunk, first / last",
            f"{fmt_ms(new.chunk_seconds[0])} / {fmt_ms(new.chunk_seconds[-1])} staged",
            f"{fmt_ms(old.chunk_seconds[0])} / {fmt_ms(old.chunk_seconds[-1])} daily layout",
            f"{(new.chunk_seconds[-1] / max(new.chunk_seconds[0], 1e-9)):.1f} / "
            f"{(old.chunk_seconds[-1] / max(old.chunk_seconds[0], 1e-9)):.1f}",
            "(info)",
        )
        report.add(
            "  whole backfill, lake time",
            f"{fmt_s(new.seconds)} (commit {fmt_s(new.commit_seconds)})",
            "sampled" if full else f"{fmt_s(old.seconds)} daily layout",
            "" if full else f"{new.seconds / old.seconds:.3f}",
            "(info)",
        )

        # 2. Daily run: one new trading date for every symbol.
        hk_new, us_new = data.new_day()
        year_files = [f"market={m}/year={NEW_DAY.year}/part-0.parquet" for m in ("HK", "US")]
        day_files = [f"market={m}/dt={NEW_DAY.isoformat()}/part-0.parquet" for m in ("HK", "US")]
        saved_yearly, saved_daily = snapshot(yearly, year_files), snapshot(daily, day_files)
        run_new = daily_run_yearly(data, yearly, hk_new, us_new)
        run_old = daily_run_daily(daily, hk_new, us_new)
        new_data = sum(len(Path(daily, rel).read_bytes()) for rel in day_files)
        report.add(
            "daily run (1 date x all symbols): bytes written / new day's bytes",
            f"{run_new.written.total / new_data:.1f} ({mib(run_new.written.total)}, 1 commit per market)",
            f"{run_old.written.total / new_data:.1f} daily layout ({run_old.commits} commits)",
            f"{run_new.written.total / max(run_old.written.total, 1):.2f}",
            "(info)",
        )
        report.add(
            "  bytes written / lake bytes",
            f"{run_new.written.total / lake_bytes(yearly):.3f}",
            f"{run_old.written.total / lake_bytes(daily):.4f} daily layout",
            "",
            "(info)",
        )
        report.add(
            "  lake time of the run",
            fmt_s(run_new.seconds),
            f"{fmt_s(run_old.seconds)} daily layout",
            "",
            "(info)",
        )

        # 3. The daily upsert of one date, the sensor's reference date, latest_dates(universe).
        from airflow_provider_shortint.lake import open_lake

        restore(yearly, saved_yearly)
        restore(daily, saved_daily)
        hk_symbols = hk_new.column("symbol").to_pylist()
        ops = {
            "daily upsert of one date (HK)": (
                lambda: open_lake(yearly).upsert(hk_new),
                lambda: DailyLake(daily).upsert(hk_new),
                lambda: (restore(yearly, saved_yearly), restore(daily, saved_daily)),
            ),
            "sensor's reference date (one symbol)": (
                lambda: open_lake(yearly).latest_dates([hk_symbols[0]]),
                lambda: open_lake(daily).latest_dates([hk_symbols[0]]),
                None,
            ),
            f"latest_dates({len(hk_symbols)} HK symbols)": (
                lambda: open_lake(yearly).latest_dates(hk_symbols),
                lambda: open_lake(daily).latest_dates(hk_symbols),
                None,
            ),
        }
        for name, (ours, theirs, setup) in ops.items():
            t_new = median_of(ours, OP_REPEAT, setup)
            t_old = median_of(theirs, OP_REPEAT, setup)
            report.add(
                f"  {name}", fmt_ms(t_new), f"{fmt_ms(t_old)} daily layout", f"{t_new / t_old:.1f}", "(info)"
            )
        restore(yearly, saved_yearly)
        restore(daily, saved_daily)

        # 4. The three reads, DuckDB and polars, on the documented glob.
        symbol, day = hk_symbols[len(hk_symbols) // 2], dt.date(2025, 3, 14)
        ours_reads = read_times(yearly, symbol, day, READ_REPEAT)
        theirs_reads = read_times(daily, symbol, day, BASELINE_READ_REPEAT)
        for (name, engine), (seconds, rows) in ours_reads.items():
            other, other_rows = theirs_reads[(name, engine)]
            assert rows == other_rows, (name, engine, rows, other_rows)
            goal = engine == "DuckDB"
            report.add(
                f"{name}, {engine} ({rows:,} rows)",
                fmt_ms(seconds),
                f"{fmt_ms(other)} daily layout",
                f"{seconds / other:.2f}",
                "<= 100 ms" if goal else "(info)",
                seconds <= 0.1 if goal else None,
            )

        # 5. Peak memory: the commit of the staged backfill vs one upsert per market, fresh processes.
        with pa.OSFile(f"{tmp}/all.arrow", "wb") as sink, pa.ipc.new_file(sink, data.hk.schema) as writer:
            writer.write_table(pa.concat_tables([data.hk, data.us]))
        mem_commit = peak_memory(__name__, "commit", f"{tmp}/mem-commit", "-", timeout=3600)
        mem_whole = peak_memory(__name__, "whole", f"{tmp}/mem-whole", f"{tmp}/all.arrow", timeout=3600)
        largest = max(p.stat().st_size for p in Path(f"{tmp}/mem-commit").rglob("*.parquet"))
        report.add(
            "peak RSS growth: commit of the staged backfill",
            mib(mem_commit["rss_growth"]),
            f"{mib(mem_whole['rss_growth'])} one upsert per market",
            f"{mem_commit['rss_growth'] / max(mem_whole['rss_growth'], 1):.2f}",
            "(info)",
        )
        report.add(
            "  peak Arrow pool, commit / one upsert per market",
            f"{mib(mem_commit['arrow_peak'])}",
            f"{mib(mem_whole['arrow_peak'])}",
            "",
            "(info)",
        )
        report.notes.append(
            f"largest yearly file {mib(largest)}; input {mib(data.hk.nbytes + data.us.nbytes)} in Arrow"
        )

    # 6. S3 requests on the moto server.
    staged, sample, partitions, lake_puts = s3_backfills(data)
    put_get = staged.requests.get("PUT", 0) + staged.requests.get("GET", 0)
    report.add(
        "S3 backfill: PUT + GET requests",
        f"{put_get:,} ({staged.requests.get('PUT', 0):,} PUT, {staged.requests.get('GET', 0):,} GET)",
        f"~{sample.requests['total']:,} daily layout, chunk by chunk "
        f"({sample.requests['per_write']} per partition write)",
        f"{put_get / max(sample.requests['total'], 1):.4f}",
        "(info)",
    )
    report.add(
        "  PUTs of lake files / partitions",
        f"{lake_puts} / {partitions}",
        f"{chunks} chunks x their market's dates, daily layout",
        "",
        "(info)",
    )
    report.add(
        "  all requests of the staged backfill",
        json.dumps(staged.requests, sort_keys=True),
        f"{fmt_s(staged.seconds)} on moto",
    )
    report.notes.append(
        f"reads: median of {READ_REPEAT} cold runs (fresh DuckDB connection / polars scan); operations: "
        f"median of {OP_REPEAT}; S3 baseline: the requests of one partition write (measured on the first US "
        "chunk) times the partition writes of every chunk"
    )
    return report


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--memory":
        memory_child(*sys.argv[2:5])
    else:
        print(run(quick="--quick" in sys.argv, full="--full" in sys.argv).render())
