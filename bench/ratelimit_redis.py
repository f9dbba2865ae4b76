"""One budget across machines: three processes that share nothing but a Redis connection.

A real ``redis-server`` on a free loopback port holds the window; three worker processes (spawned, no
shared directory, each its own hook, whose connection extra ``rate_limit_redis_conn_id`` names it) fetch
the whole history of multi-page HK symbols from the sandbox, time-scaled to 30 requests per 3 s on the
server and on the connection. From the server's admitted-request timestamps: the most requests in any
3-s window (<= 30), HTTP 429 answers (0) and the steady-state use of the budget (period / mean time of 30
consecutive requests, >= 0.97). Then liveness: a process SIGKILLed while holding the only slot of a
1 / 3 s budget, and how long the next process waits for that slot, in Redis and in the file backend
(bound ``lease + period``; before the lease, a dead holder's slot was held ``max_hold`` = 300 s).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from typing import Any

from bench._util import Report, quiet_logs, register_connection
from bench.ratelimit_efficiency import MIN_RECORDS, PAGE_SIZE, max_in_window, pick_symbols

CALLS = 30
PERIOD = 3.0
WORKERS = 3
CTX = multiprocessing.get_context("spawn")


def _worker(conn_id: str, symbols: list[str], ready: Any, go: Any, out: Any) -> None:
    """One process: warm up (imports, the budget's first period), then fetch every symbol's history."""
    from airflow_provider_shortint.hooks.short_interest import ShortInterestHook

    quiet_logs()
    hook = ShortInterestHook(conn_id)  # extra rate_limit_redis_conn_id: the budget lives in Redis
    assert type(hook.rate_limiter).__name__ == "RedisRateLimiter"
    hook.get_history("HK.00700", page_size=PAGE_SIZE)  # warm-up, not measured
    warm_up = hook.requests_made
    ready.put(os.getpid())
    go.wait(300)
    rows = sum(hook.get_history(symbol, page_size=PAGE_SIZE).num_rows for symbol in symbols)
    out.put((hook.requests_made - warm_up, rows))


def _hold_only_slot(url: str, redis_conn: str | None, state_dir: str | None, out: Any) -> None:
    from airflow_provider_shortint.budget import shared_limiter

    out.put(shared_limiter(url, 1, PERIOD, state_dir, redis_conn).acquire())
    time.sleep(600)


def _recovery(url: str, redis_conn: str | None, state_dir: str | None) -> tuple[float, float]:
    """Seconds from SIGKILL of the holder of a 1 / PERIOD budget until the next acquire; and the lease."""
    from airflow_provider_shortint.budget import shared_limiter

    out = CTX.Queue()
    holder = CTX.Process(target=_hold_only_slot, args=(url, redis_conn, state_dir, out))
    holder.start()
    try:
        out.get(timeout=300)
        time.sleep(1.0)  # the holder's heartbeat runs meanwhile
        os.kill(holder.pid, signal.SIGKILL)  # type: ignore[arg-type]
        killed = time.perf_counter()
        limiter: Any = shared_limiter(url, 1, PERIOD, state_dir, redis_conn)
        limiter.release(limiter.acquire())
        return time.perf_counter() - killed, float(limiter.lease)
    finally:
        holder.kill()
        holder.join(30)


def run(quick: bool = False) -> Report:
    from airflow_provider_shortint.sandbox import SandboxConfig, SandboxServer
    from tests._fixtures_redis import RedisServer, free_port, redis_server_binary

    quiet_logs()
    report = Report(
        "ratelimit_redis", f"{WORKERS} processes, one {CALLS} calls / {PERIOD:g} s budget in Redis"
    )
    binary = redis_server_binary()
    if binary is None:
        report.add("redis-server", "not found", "", "", "installed", False)
        return report
    redis = RedisServer(binary, free_port())
    redis.start()
    redis_conn = "shortint_bench_redis"
    os.environ[f"AIRFLOW_CONN_{redis_conn.upper()}"] = redis.conn_json()
    state_dir = tempfile.mkdtemp(prefix="bench-rl-file-")
    try:
        with SandboxServer(SandboxConfig(rate_limit_calls=CALLS, rate_limit_period=PERIOD)) as server:
            conn_id = register_connection(
                "shortint_bench_rr",
                server.url,
                rate_limit_calls=CALLS,
                rate_limit_period=PERIOD,
                rate_limit_redis_conn_id=redis_conn,
            )
            chosen = pick_symbols(server, 12 if quick else 45, MIN_RECORDS)
            minimum = sum(math.ceil(size / PAGE_SIZE) for _, size in chosen)
            ready, go, out = CTX.Queue(), CTX.Event(), CTX.Queue()
            shares = [[symbol for symbol, _ in chosen[i::WORKERS]] for i in range(WORKERS)]
            procs = [CTX.Process(target=_worker, args=(conn_id, share, ready, go, out)) for share in shares]
            for proc in procs:
                proc.start()
            pids = [ready.get(timeout=300) for _ in procs]
            time.sleep(PERIOD * 1.2)  # let the warm-up's window drain
            server.reset_stats()
            started = time.perf_counter()
            go.set()
            results = [out.get(timeout=600) for _ in procs]
            wall = time.perf_counter() - started
            for proc in procs:
                proc.join(60)
            stats = server.stats()
            kill_redis, lease = _recovery(server.url + "/kill-redis", redis_conn, None)
            kill_file, _ = _recovery(server.url + "/kill-file", None, state_dir)
    finally:
        redis.stop()
        shutil.rmtree(redis.workdir, ignore_errors=True)
        shutil.rmtree(state_dir, ignore_errors=True)

    stamps = sorted(stats["timestamps"])
    n = len(stamps)
    gaps = [stamps[i] - stamps[i - CALLS] for i in range(CALLS, n)]
    mean_gap = sum(gaps) / len(gaps)
    steady = PERIOD / mean_gap
    peak = max_in_window(stamps, PERIOD)
    n429 = int(stats["by_status"].get("429", 0))
    client_requests = sum(r for r, _ in results)
    report.add(
        "workload",
        f"{len(chosen)} HK symbols over {WORKERS} processes (pids {', '.join(map(str, pids))}), {n} requests",
        f"min {minimum} requests",
        f"{n / minimum:.2f}",
    )
    report.add(
        "steady-state use of the budget",
        f"{CALLS / mean_gap * PERIOD:.2f} calls / {PERIOD:g} s",
        f"{CALLS} allowed",
        f"{steady:.3f}",
        ">= 0.97",
        steady >= 0.97,
    )
    report.add(
        "max admitted in any 3-s window", str(peak), f"{CALLS} allowed", "", f"<= {CALLS}", peak <= CALLS
    )
    report.add("HTTP 429 answers", str(n429), "", "", "0", n429 == 0)
    bound = lease + PERIOD
    for backend, seconds in (("Redis", kill_redis), ("file", kill_file)):
        report.add(
            f"SIGKILLed holder, 1 / {PERIOD:g} s: slot back ({backend})",
            f"{seconds:.2f} s",
            f"lease + period = {bound:.1f} s (was 300 s + period)",
            f"{seconds / PERIOD:.2f} periods",
            f"<= {bound:.1f} s",
            seconds <= bound + 0.25,
        )
    report.notes.append(
        f"wall {wall:.1f} s; client counted {client_requests} requests, server {n}; by_status "
        f"{stats['by_status']}; lease {lease:g} s renewed every {lease / 3:.2f} s"
    )
    return report


if __name__ == "__main__":
    print(run().render())
