"""Object-storage writes: upsert throughput on a local S3 server (moto) with 1 and 4 writers.

1. One writer, compare-and-swap (``If-Match``/``If-None-Match`` PUTs) against the same lake code with
   plain unconditional PUTs (no precondition, last writer wins): interleaved runs on fresh
   prefixes; goal: CAS at most 10 % slower.
2. Four writer processes upserting overlapping partitions at once: upserts per second against one
   writer, and the conflict retry rate (conditional PUTs another writer beat, per partition written).

Each upsert writes 20 symbols x 3 dates of both markets (6 partitions, 120 rows), every row changed, as
a daily load of a chunk of symbols does. The server is tests/_fixtures_s3.py's moto (writes serialised
like S3's atomic conditional PUT), on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import time
from typing import Any

from bench._util import Report, interleaved, median, quiet_logs

DAYS = (dt.date(2024, 5, 13), dt.date(2025, 5, 14), dt.date(2026, 5, 15))  # x 2 markets = 6 partitions
SYMBOLS = [f"HK.{i:05d}" for i in range(10)] + [f"US.T{i}" for i in range(10)]


def batch(version: int, writer: int = 0) -> Any:
    """120 rows: 20 symbols (10 shared by every writer, 10 of this writer) x 3 dates, all new values."""
    from airflow_provider_shortint.records import rows_to_table

    symbols = SYMBOLS[:5] + SYMBOLS[10:15]
    symbols += [f"HK.{writer + 1}{i:04d}" for i in range(5)] + [f"US.W{writer}X{i}" for i in range(5)]
    return rows_to_table(
        [
            {
                "symbol": s,
                "trade_date": d,
                "timestamp": 1,
                "close_price": float(version),
                "shares_short": version,
            }
            for s in symbols
            for d in DAYS
        ]
    )


def plain_put_lake(url: str) -> Any:
    """The lake with unconditional PUTs (no If-Match): the baseline a single writer is compared with."""
    from airflow_provider_shortint.lake import open_lake

    lake = open_lake(url)
    store = lake._store
    store.write = lambda rel, data, expected: store.client.put_object(
        Bucket=store.bucket, Key=store.key(rel), Body=data
    )
    return lake


def upserts(lake: Any, count: int, writer: int = 0) -> tuple[int, int]:
    """``count`` upserts into ``lake``; returns (partitions written, conflicts retried)."""
    written = conflicts = 0
    for version in range(1, count + 1):
        result = lake.upsert(batch(version + writer * 1000, writer))
        written += len(result.partitions_written)
        conflicts += result.conflicts
    return written, conflicts


def _writer(
    env: dict[str, str], url: str, writer: int, count: int, start_at: float
) -> tuple[int, int, float]:
    os.environ.update(env)
    quiet_logs()
    from airflow_provider_shortint.lake import open_lake

    lake = open_lake(url)
    lake.latest_dates()  # connect before the clock starts
    while time.time() < start_at:
        time.sleep(0.002)
    began = time.perf_counter()
    written, conflicts = upserts(lake, count, writer)
    return written, conflicts, time.perf_counter() - began


def concurrent(pool: Any, env: dict[str, str], url: str, writers: int, count: int) -> tuple[float, int, int]:
    """``writers`` processes x ``count`` upserts at once; (wall seconds, partitions written, conflicts)."""
    start_at = time.time() + 1.0
    jobs = [pool.apply_async(_writer, (env, url, w, count, start_at)) for w in range(writers)]
    results = [job.get(timeout=600) for job in jobs]
    return max(r[2] for r in results), sum(r[0] for r in results), sum(r[1] for r in results)


def run(quick: bool = False) -> Report:
    from airflow_provider_shortint.lake import open_lake
    from tests._fixtures_s3 import BUCKET, connection_env, s3_client, start_moto_server

    quiet_logs()
    count, repeat = (8, 5) if quick else (20, 9)
    report = Report("lake_s3", "object-storage upserts: compare-and-swap, 1 and 4 writers (moto)")
    server, endpoint = start_moto_server()
    try:
        env = connection_env(endpoint)
        os.environ.update(env)
        s3_client(endpoint).create_bucket(Bucket=BUCKET)
        url = f"s3://aws_test@{BUCKET}"
        upserts(open_lake(f"{url}/warm"), 1)  # imports, connection, first PUT

        # 1. one writer: CAS vs plain PUT, each run on a fresh prefix (first upsert creates, rest replace)
        lakes: dict[str, Any] = {}

        def fresh(name: str, i: int) -> None:
            path = f"{url}/single/{name}-{i}"
            lakes[name] = open_lake(path) if name == "cas" else plain_put_lake(path)

        times = interleaved(
            {"cas": lambda: upserts(lakes["cas"], count), "plain": lambda: upserts(lakes["plain"], count)},
            repeat,
            setup=fresh,
        )
        t_cas, t_plain = median(times["cas"]) / count, median(times["plain"]) / count
        ratio = t_cas / t_plain
        report.add(
            "1 writer, time per upsert (6 partitions)",
            f"{t_cas * 1000:.1f} ms CAS",
            f"{t_plain * 1000:.1f} ms plain PUT",
            f"{ratio:.2f}",
            "<= 1.10",
            ok=ratio <= 1.10,
        )

        # 2. 1 and 4 writer processes on one lake (overlapping partitions)
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(
            [
                "pyarrow",
                "pyarrow.parquet",
                "airflow.providers.amazon.aws.hooks.s3",
                "airflow_provider_shortint.lake",
            ]
        )
        with ctx.Pool(4) as pool:
            pool.map(time.sleep, [0.0] * 4)
            one_s, _, _ = concurrent(pool, env, f"{url}/one", 1, count * 2)
            four_s, four_written, conflicts = concurrent(pool, env, f"{url}/four", 4, count * 2)
        one_rate, four_rate = count * 2 / one_s, 4 * count * 2 / four_s
        report.add("1 writer process, upserts/s", f"{one_rate:.1f} /s", ok=None)
        report.add(
            "4 writer processes at once, upserts/s",
            f"{four_rate:.1f} /s",
            f"{one_rate:.1f} /s (1)",
            f"{four_rate / one_rate:.2f}",
            "(info)",
        )
        rate = conflicts / max(four_written, 1)
        report.add(
            "4 writers: conflicts retried per partition written",
            f"{conflicts} / {four_written}",
            "",
            f"{rate:.2f}",
            "(info)",
        )
        rows = open_lake(f"{url}/four").read(["symbol"]).num_rows
        expected = (10 + 4 * 10) * len(DAYS)
        report.add(
            "4 writers: rows in the lake after",
            f"{rows}",
            f"{expected} written",
            "",
            "== all",
            ok=rows == expected,
        )
        report.notes.append(
            f"medians of {repeat} interleaved runs of {count} upserts (1 writer); {count * 2} upserts per "
            "process (concurrent); 2 CPUs shared with the moto server"
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    return report
