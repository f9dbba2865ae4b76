"""Rate-limit efficiency: how much of the allowed request budget a multi-page backfill actually uses.

A backfill of multi-page HK symbols runs through the operator's work path against the sandbox with a
time-scaled limit (30 calls / 1.5 s on the server, the same budget on the connection). From the
server's admitted-request timestamps:

* steady-state use = period / mean(t[i] - t[i - calls]) for i >= calls: the average time ``calls``
  consecutive requests took, against the ``period`` the limit allows (1.00 = every slot used);
* the most requests admitted in any window of ``period`` seconds (must be <= calls);
* HTTP 429 answers (goal 0: the client never exceeds the budget).
"""

from __future__ import annotations

import math
import tempfile
import time

from bench._util import Report, quiet_logs, register_connection, run_operator

CALLS = 30
PERIOD = 1.5
PAGE_SIZE = 90
N_SYMBOLS = 50
MIN_RECORDS = 181  # > 2 pages of 90: every symbol needs at least three requests


def pick_symbols(server: object, n: int, min_records: int) -> list[tuple[str, int]]:
    """The first ``n`` HK symbols (HK.00001, HK.00002, ...) whose history exceeds ``min_records``."""
    found: list[tuple[str, int]] = []
    code = 0
    while len(found) < n:
        code += 1
        try:
            size = len(server.history(f"HK.{code:05d}"))  # type: ignore[attr-defined]
        except ValueError:  # special error symbols
            continue
        if size >= min_records:
            found.append((f"HK.{code:05d}", size))
    return found


def max_in_window(stamps: list[float], period: float) -> int:
    """Most timestamps in any half-open window [t, t + period)."""
    best = lo = 0
    for hi, t in enumerate(stamps):
        while stamps[lo] <= t - period:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def run(quick: bool = False) -> Report:
    from airflow_provider_shortint.sandbox import SandboxConfig, SandboxServer

    quiet_logs()
    report = Report("ratelimit_efficiency", f"backfill through a {CALLS} calls / {PERIOD} s limit")
    n_symbols = 12 if quick else N_SYMBOLS
    with (
        SandboxServer(SandboxConfig(rate_limit_calls=CALLS, rate_limit_period=PERIOD)) as server,
        tempfile.TemporaryDirectory(prefix="bench-rl-") as lake,
    ):
        chosen = pick_symbols(server, n_symbols, MIN_RECORDS)
        symbols = [symbol for symbol, _ in chosen]
        minimum = sum(math.ceil(size / PAGE_SIZE) for _, size in chosen)
        conn_id = register_connection(
            "shortint_bench_rl", server.url, rate_limit_calls=CALLS, rate_limit_period=PERIOD
        )
        # Warm-up (not measured): the first symbol of a process pays one-off imports (pyarrow ~1-3 s
        # here), which would otherwise stretch the first window. Then let the window drain.
        run_operator(conn_id, f"{lake}/warmup", ["HK.00700"], "full", PAGE_SIZE)
        time.sleep(PERIOD * 1.2)
        server.reset_stats()
        started = time.perf_counter()
        summary = run_operator(conn_id, lake, symbols, "full", PAGE_SIZE)
        wall = time.perf_counter() - started
        stats = server.stats()

    stamps = sorted(stats["timestamps"])
    n = len(stamps)
    gaps = [stamps[i] - stamps[i - CALLS] for i in range(CALLS, n)]
    mean_gap = sum(gaps) / len(gaps)
    steady = PERIOD / mean_gap
    span = stamps[-1] - stamps[0]
    ideal_span = (math.ceil(n / CALLS) - 1) * PERIOD
    peak = max_in_window(stamps, PERIOD)
    n429 = int(stats["by_status"].get("429", 0))

    report.add(
        "workload",
        f"{len(symbols)} HK symbols, {summary['rows_written']:,} rows, {n} requests",
        f"min {minimum} requests",
        f"{n / minimum:.2f}",
    )
    report.add(
        "steady-state use of the budget",
        f"{CALLS / mean_gap * PERIOD:.2f} calls / {PERIOD} s",
        f"{CALLS} allowed",
        f"{steady:.3f}",
        ">= 0.97",
        steady >= 0.97,
    )
    report.add(
        "  time per window of 30 requests",
        f"{mean_gap * 1000:,.0f} ms (median {sorted(gaps)[len(gaps) // 2] * 1000:,.0f})",
        f"{PERIOD * 1000:,.0f} ms",
    )
    report.add(
        "whole run: first to last request",
        f"{span:.2f} s",
        f"{ideal_span:.2f} s ideal",
        f"{ideal_span / span:.3f}",
        "(info)",
    )
    report.add("max admitted in any window", str(peak), f"{CALLS} allowed", "", f"<= {CALLS}", peak <= CALLS)
    report.add("HTTP 429 answers", str(n429), "", "", "0", n429 == 0)
    report.notes.append(
        f"wall {wall:.1f} s incl. lake upsert; client counted {summary['hook_requests']} requests, "
        f"server {n}; by_status {stats['by_status']}"
    )
    return report


if __name__ == "__main__":
    print(run().render())
