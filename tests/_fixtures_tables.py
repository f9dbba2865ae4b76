"""Table formats (Delta, Iceberg) under test: sample rows, a table of each format, writer processes.

Writer processes come from a forkserver (``tests/_fixtures_pool.py``): a clean process that imports
pyarrow, the lake and pyiceberg once and forks the workers. Neither it nor the test process forks after
using delta-rs (a child forked after its runtime started deadlocks): each worker imports deltalake itself.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shortint.records import rows_to_table
from tests._fixtures_pool import BARRIER_TIMEOUT, racing_pool, start_together

D1, D2, D3 = dt.date(2025, 12, 31), dt.date(2026, 5, 14), dt.date(2026, 5, 15)  # two calendar years
T0 = dt.datetime(2026, 5, 16, 1, 0, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 5, 17, 1, 0, tzinfo=dt.UTC)
HK = ["HK.00700", "HK.00005", "HK.09988"]
US = ["US.AAPL", "US.BRK.B", "US.TSLA"]
FORMATS = ("delta", "iceberg")
#: Symbols the concurrent writers share: writer w writes symbols w..w+2 (mod 6) of each market.
HK_POOL = [f"HK.{n:05d}" for n in range(1, 7)]
US_POOL = ["US.AA", "US.AB", "US.AC", "US.AD", "US.AE", "US.AF"]
WRITERS = 4


def make_row(symbol: str, day: dt.date, version: int = 0) -> dict[str, Any]:
    """A deterministic row; HK rows fill the HK columns, US rows the US ones (the others stay null)."""
    seed = sum(map(ord, symbol)) + day.toordinal() % 97
    row: dict[str, Any] = {
        "symbol": symbol,
        "trade_date": day,
        "timestamp": int(dt.datetime(day.year, day.month, day.day).timestamp() * 1000),
        "close_price": seed / 10 + version,
        "last_close_price": seed / 10 - 0.5,
    }
    if symbol.startswith("HK."):
        row.update(avg_daily_short_volume=seed * 1000, aggregated_short=seed * 10, aggregated_short_ratio=0.5)
    else:
        row.update(
            avg_cost=seed / 7, shares_short=seed * 100 + version, short_percent=0.01, days_to_cover=1.5
        )
    return row


def make_table(symbols: list[str], days: list[dt.date], version: int = 0, at: dt.datetime = T0) -> Any:
    return rows_to_table([make_row(s, d, version) for d in days for s in symbols], ingested_at=at)


def keys_of(table: Any) -> list[tuple[str, dt.date]]:
    return list(zip(table.column("symbol").to_pylist(), table.column("trade_date").to_pylist(), strict=True))


def contents(table: Any) -> list[dict[str, Any]]:
    """The lake columns of ``table`` as sorted row dicts (NaN made comparable): order-free equality."""
    from airflow_provider_shortint.records import COLUMNS

    rows = []
    for row in table.select(list(COLUMNS)).to_pylist():
        rows.append({k: ("NaN" if isinstance(v, float) and v != v else v) for k, v in row.items()})
    return sorted(rows, key=lambda row: (row["symbol"], row["trade_date"]))


def writer_symbols(worker: int) -> list[str]:
    picks = [(worker + offset) % len(HK_POOL) for offset in range(3)]
    return [HK_POOL[i] for i in picks] + [US_POOL[i] for i in picks]


def writer_version(trial: int, worker: int) -> int:
    return trial * 10 + worker + 1


def writer_stamp(worker: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=worker)


# -- a table of each format ---------------------------------------------------------------------------


@dataclass
class TableTarget:
    """How to open one table: ``open_table(path, table_format, **options)``."""

    table_format: str
    path: str
    options: dict[str, Any]

    def open(self) -> Any:
        from airflow_provider_shortint.lake.formats import open_table

        return open_table(self.path, self.table_format, **self.options)


def local_target(table_format: str, root: Path) -> TableTarget:
    """A fresh local table: a Delta folder, or an Iceberg table in an embedded SQLite catalog."""
    if table_format == "delta":
        return TableTarget("delta", str(root / "delta"), {})
    return TableTarget("iceberg", "shortint.short_interest", {"warehouse": str(root / "iceberg")})


def iceberg_s3_connection(conn_id: str, catalog_db: Path, warehouse: str, aws_conn_id: str) -> str:
    """An ``iceberg_catalog`` connection (JSON for AIRFLOW_CONN_*): SQLite catalog, S3 warehouse."""
    import json

    return json.dumps(
        {
            "conn_type": "iceberg_catalog",
            "host": f"sqlite:///{catalog_db}",
            "extra": {"warehouse": warehouse, "aws_conn_id": aws_conn_id},
        }
    )


@pytest.fixture(params=FORMATS)
def table_format(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def target(table_format: str, tmp_path: Path) -> TableTarget:
    return local_target(table_format, tmp_path)


@pytest.fixture
def table(target: TableTarget) -> Any:
    return target.open()


# -- writer processes -----------------------------------------------------------------------------------


def overlapping_writer(target: TableTarget, worker: int, trial: int, env: dict[str, str]) -> dict[str, Any]:
    """Upsert this writer's overlapping rows once all writers are ready; what the upsert reported.

    ``env``: the connections the test defined (a forked worker has the forkserver's environment)."""
    import os

    os.environ.update(env)
    table = target.open()
    rows = make_table(
        writer_symbols(worker), [D1, D2, D3], writer_version(trial, worker), writer_stamp(worker)
    )
    start_together(WRITERS)
    result = table.upsert(rows)
    return {"worker": worker, "conflicts": result.conflicts, "written": result.rows_written}


@pytest.fixture(scope="session")
def writer_pool() -> Iterator[Any]:
    """``WRITERS`` processes from a forkserver, meeting at a barrier before each commit."""
    # pyiceberg (and SQLAlchemy) import once here; deltalake is not preloaded: its import starts a thread.
    preload = ["pyarrow", "pyarrow.compute", "airflow_provider_shortint.lake", "pyiceberg.catalog.sql"]
    with racing_pool([*preload, "pyiceberg.table", __name__], WRITERS) as pool:
        yield pool


def run_writers(
    pool: Any, target: TableTarget, trial: int, env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    jobs = [
        pool.apply_async(overlapping_writer, (target, worker, trial, env or {})) for worker in range(WRITERS)
    ]
    return [job.get(timeout=BARRIER_TIMEOUT * 2) for job in jobs]


def check_overlapping_result(table: Any, trial: int) -> None:
    """Every key of the union exactly once, each row one writer's version intact (its values and stamp)."""
    rows = table.read()
    keys = keys_of(rows)
    assert len(keys) == len(set(keys)), f"duplicate keys: {len(keys) - len(set(keys))}"
    expected = {(s, d) for w in range(WRITERS) for s in writer_symbols(w) for d in (D1, D2, D3)}
    assert set(keys) == expected, f"lost: {sorted(expected - set(keys))[:5]}"
    for row in rows.to_pylist():
        worker = int((row["ingested_at"] - T0).total_seconds())
        assert row["symbol"] in writer_symbols(worker)
        wanted = make_row(row["symbol"], row["trade_date"], writer_version(trial, worker))
        assert {k: row[k] for k in wanted} == wanted


def threads_racing(count: int, action: Callable[[int], Any]) -> list[Any]:
    """Run ``action(i)`` in ``count`` threads released together; their results in order."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait(BARRIER_TIMEOUT)
        results[index] = action(index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BARRIER_TIMEOUT)
    return results
