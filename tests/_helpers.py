"""Helpers and sample data shared by several test modules (test modules never import each other)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def wait_until(condition: Callable[[], bool], guard: float = 30.0, step: float = 0.01) -> bool:
    """True once ``condition()`` holds; False if it still does not after ``guard`` seconds (a hang guard,
    never a speed assertion: tests assert the condition, not how fast it came)."""
    pause = threading.Event()
    waited = 0.0
    while not condition():
        if waited >= guard:
            return False
        pause.wait(step)
        waited += step
    return True


class FakeClock:
    """A monotonic clock that moves only when the code under test sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def starts_of_threads(slot_of: Callable[[int], Any], threads: int = 4, slots: int = 4) -> list[float]:
    """``threads`` threads each take ``slots`` slots, one at a time, thread i through ``slot_of(i)`` (a
    limiter's ``slot``); the monotonic time each slot began, once every thread is done."""
    import time

    starts: list[float] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        for _ in range(slots):
            with slot_of(index)(), lock:
                starts.append(time.monotonic())

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(60)
    return starts


def max_in_window(starts: list[float], period: float) -> int:
    """Largest number of starts inside any half-open window [t, t + period)."""
    starts = sorted(starts)
    best, lo = 0, 0
    for hi, t in enumerate(starts):
        while starts[lo] <= t - period:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# A HK item as the API returns it (DESIGN.md §2): strings for the big integers, the date twice.
HK_ITEM = {
    "aggregated_short": "54177721",
    "aggregated_short_ratio": 0.59,
    "avg_cost": 456.399,
    "avg_daily_short_volume": "3755740",
    "close_price": 456.4,
    "last_close_price": 454.9,
    "timestamp": 1778774400000,
    "timestamp_str": "2026-05-15",
}

# Symbols that must be refused as malformed (DESIGN.md §3), whatever their market.
MALFORMED: list[object] = [
    "",
    "   ",
    "AAPL",
    "HK.",
    ".00700",
    "HK.123456",
    "HK.7OO",
    "HK.-700",
    "HK.७००",  # non-ASCII digits
    "US.",
    "US.1AAPL",
    "US.ABCDEFGHIJK",
    "US.AA PL",
    "US.AAPL/../x",
    "US.A..B",
    "US.AAPL.",
    "US.AAPL?count=90",
    "HK.00700#",
    "X.1",
    "HK:00700",
    None,
    700,
    ["HK.00700"],
    b"HK.00700",
]

# A DAG file for `airflow dags test`: the operator in full and incremental mode, its summary written out.
DAG_SOURCE = """
from __future__ import annotations

import threading
from collections.abc import Callable

import json
from pathlib import Path

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator

for mode in ("full", "incremental"):
    with DAG(f"op_test_{mode}", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
        load = ShortInterestToParquetOperator(
            task_id="load",
            symbols="{{ dag_run.conf['symbols'] }}",
            lake_path="{{ dag_run.conf['lake'] }}",
            since="{{ dag_run.conf.get('since') or '' }}",
            mode=mode,
            batch_size=2,
        )

        @task(trigger_rule="all_done")
        def record(ti=None, dag_run=None) -> None:
            summary = ti.xcom_pull(task_ids="load")
            Path(dag_run.conf["out"]).write_text(json.dumps(summary))

        load >> record()
"""
