"""One budget across machines: three processes that share nothing but a Redis connection.

A real ``redis-server`` on a free loopback port holds the window; three worker processes (spawned, no
shared directory, each its own hook, whose connection extra ``rate_limit_redis_conn_id`` names it) fetch
the whole history of multi-page HK symbols from the sandbox, time-scaled to 30 requests per 3 s on the
server and on the connection. From the server's admitted-request timestamps: the most requests in any
3-s window (<= 30), HTTP 429 answers (0) and the steady-state use of the budget (period / mean time of 30
consecutive requests, >= 0.97).

The same three processes then fetch again while Redis sits at ``maxmemory`` with ``allkeys-random`` and
another client keeps filling it, so that the budget's key is evicted every few seconds: the limit must
hold (each eviction costs a period's wait, never a burst). Then the cost of one slot in Redis (the take
and the release scripts) against two PING round trips, and liveness: a process SIGKILLed while holding
the only slot of a 1 / 3 s budget, and how long the next process waits for that slot, in Redis and in
the file backend (bound ``lease + period``).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from typing import Any

from bench._util import Report, quiet_logs, register_connection
from bench.ratelimit_efficiency import MIN_RECORDS, PAGE_SIZE, max_in_window, pick_symbols

CALLS = 30
PERIOD = 3.0
WORKERS = 3
EVICT_EVERY = 2 * PERIOD  # the pause between two evictions of the budget's key in the eviction phase
CTX = multiprocessing.get_context("spawn")


def _worker(conn_id: str, phases: list[list[str]], ready: Any, go: Any, out: Any) -> None:
    """One process: warm up (imports, the budget's first period), then fetch each phase's symbols when
    told to."""
    from airflow_provider_shortint.hooks.short_interest import ShortInterestHook

    quiet_logs()
    hook = ShortInterestHook(conn_id)  # extra rate_limit_redis_conn_id: the budget lives in Redis
    limiter: Any = hook.rate_limiter
    assert type(limiter).__name__ == "RedisRateLimiter"
    hook.get_history("HK.00700", page_size=PAGE_SIZE)  # warm-up, not measured
    ready.put((os.getpid(), limiter.key))
    for phase, symbols in enumerate(phases):
        go[phase].wait(600)
        before = hook.requests_made
        rows = sum(hook.get_history(symbol, page_size=PAGE_SIZE).num_rows for symbol in symbols)
        out.put((hook.requests_made - before, rows))


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


def _slot_cost(redis_conn: str, client: Any, n: int) -> tuple[float, float]:
    """Median seconds of one take + release in Redis (a budget that never fills), and of two PINGs."""
    from airflow_provider_shortint.budget.redis_window import RedisRateLimiter

    limiter = RedisRateLimiter(redis_conn, "bench-cost", 10**9, 1.0)
    seconds, _ = client.time()
    client.hset(limiter.key, mapping={"born": seconds - 10, "run": client.info("server")["run_id"]})
    limiter.release(limiter.acquire())  # connects and loads the script
    slots, pings = [], []
    for _ in range(n):
        start = time.perf_counter()
        slot = limiter._try_take()
        assert isinstance(slot, str)
        limiter._call("release", slot)  # the release script alone (no heartbeat bookkeeping)
        slots.append(time.perf_counter() - start)
        start = time.perf_counter()
        client.ping()
        client.ping()
        pings.append(time.perf_counter() - start)
    return sorted(slots)[n // 2], sorted(pings)[n // 2]


class _Evictor:
    """Fills Redis (at ``maxmemory``, ``allkeys-random``) until the budget's key is evicted, waits
    ``EVICT_EVERY``, and again, until stopped; counts the evictions of that key."""

    def __init__(self, client: Any, key: str) -> None:
        self.client, self.key = client, key.encode()
        self.evictions = 0
        self.writes = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe("__keyevent@0__:evicted")
        while not self.stop.is_set():
            hit = False
            while not hit and not self.stop.is_set():
                self.client.set(f"bench-fill:{self.writes}", b"x" * 32768)
                self.writes += 1
                while (message := pubsub.get_message()) is not None:
                    hit = hit or message["data"] == self.key
            self.evictions += hit
            self.stop.wait(EVICT_EVERY)
        pubsub.close()


def _phase(
    server: Any, go: Any, out: Any, n_procs: int
) -> tuple[dict[str, Any], list[tuple[int, int]], float]:
    server.reset_stats()
    started = time.perf_counter()
    go.set()
    results = [out.get(timeout=900) for _ in range(n_procs)]
    return server.stats(), results, time.perf_counter() - started


def _use(stamps: list[float]) -> float:
    gaps = [stamps[i] - stamps[i - CALLS] for i in range(CALLS, len(stamps))]
    return PERIOD / (sum(gaps) / len(gaps))


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
    client = redis.client()
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
            chosen = pick_symbols(server, 24 if quick else 90, MIN_RECORDS)
            halves = [chosen[0::2], chosen[1::2]]  # phase 1 (plain), phase 2 (under eviction)
            minimum = [sum(math.ceil(size / PAGE_SIZE) for _, size in half) for half in halves]
            ready, out = CTX.Queue(), CTX.Queue()
            go = [CTX.Event(), CTX.Event()]
            procs = [
                CTX.Process(
                    target=_worker,
                    args=(conn_id, [[s for s, _ in half[i::WORKERS]] for half in halves], ready, go, out),
                )
                for i in range(WORKERS)
            ]
            for proc in procs:
                proc.start()
            pids, keys = zip(*[ready.get(timeout=300) for _ in procs], strict=True)
            time.sleep(PERIOD * 1.2)  # let the warm-up's window drain
            plain, plain_results, plain_wall = _phase(server, go[0], out, len(procs))

            used = int(client.info("memory")["used_memory"])
            client.config_set("maxmemory", str(used + 4 * 1024 * 1024))
            client.config_set("maxmemory-policy", "allkeys-random")
            client.config_set("notify-keyspace-events", "Ee")
            evictor = _Evictor(client, keys[0])
            evictor.thread.start()
            try:
                evicted, evicted_results, evicted_wall = _phase(server, go[1], out, len(procs))
            finally:
                evictor.stop.set()
                evictor.thread.join(60)
                client.config_set("maxmemory", "0")
                client.flushall()
            for proc in procs:
                proc.join(60)
            slot_s, ping_s = _slot_cost(redis_conn, client, 200 if quick else 1000)
            kill_redis, lease = _recovery(server.url + "/kill-redis", redis_conn, None)
            kill_file, _ = _recovery(server.url + "/kill-file", None, state_dir)
    finally:
        redis.stop()
        shutil.rmtree(redis.workdir, ignore_errors=True)
        shutil.rmtree(state_dir, ignore_errors=True)

    stamps = sorted(plain["timestamps"])
    n = len(stamps)
    steady = _use(stamps)
    peak = max_in_window(stamps, PERIOD)
    n429 = int(plain["by_status"].get("429", 0))
    report.add(
        "workload",
        f"{len(halves[0])} HK symbols over {WORKERS} processes (pids {', '.join(map(str, pids))}), "
        f"{n} requests",
        f"min {minimum[0]} requests",
        f"{n / minimum[0]:.2f}",
    )
    report.add(
        "steady-state use of the budget",
        f"{CALLS * steady:.2f} calls / {PERIOD:g} s",
        f"{CALLS} allowed",
        f"{steady:.3f}",
        ">= 0.97",
        steady >= 0.97,
    )
    report.add(
        "max admitted in any 3-s window", str(peak), f"{CALLS} allowed", "", f"<= {CALLS}", peak <= CALLS
    )
    report.add("HTTP 429 answers", str(n429), "", "", "0", n429 == 0)

    e_stamps = sorted(evicted["timestamps"])
    e_peak = max_in_window(e_stamps, PERIOD)
    e429 = int(evicted["by_status"].get("429", 0))
    report.add(
        "under eviction: budget key evicted",
        f"{evictor.evictions} times in {evicted_wall:.0f} s ({evictor.writes} filler writes of 32 KiB)",
        f"every ~{EVICT_EVERY:g} s + the fill",
        "",
        ">= 1",
        evictor.evictions >= 1,
    )
    report.add(
        "under eviction: max admitted in any 3-s window",
        str(e_peak),
        f"{CALLS} allowed",
        "",
        f"<= {CALLS}",
        e_peak <= CALLS,
    )
    report.add("under eviction: HTTP 429 answers", str(e429), "", "", "0", e429 == 0)
    e_rate = (len(e_stamps) - 1) / (e_stamps[-1] - e_stamps[0])
    report.add(
        "under eviction: requests per second",
        f"{e_rate:.2f}",
        f"{CALLS / PERIOD:.2f} the budget allows",
        f"{e_rate / (CALLS / PERIOD):.2f}",
        "(info: each eviction costs one period)",
    )
    report.add(
        "one slot in Redis (take + release scripts)",
        f"{slot_s * 1000:.2f} ms",
        f"{ping_s * 1000:.2f} ms for 2 PINGs",
        f"{slot_s / ping_s:.2f}",
        "(info)",
    )
    bound = lease + PERIOD
    for backend, seconds in (("Redis", kill_redis), ("file", kill_file)):
        report.add(
            f"SIGKILLed holder, 1 / {PERIOD:g} s: slot back ({backend})",
            f"{seconds:.2f} s",
            f"lease + period = {bound:.1f} s",
            f"{seconds / PERIOD:.2f} periods",
            f"<= {bound:.1f} s",
            seconds <= bound + 0.25,
        )
    client_requests = sum(r for r, _ in plain_results) + sum(r for r, _ in evicted_results)
    report.notes.append(
        f"wall {plain_wall:.1f} s + {evicted_wall:.1f} s under eviction; client counted {client_requests} "
        f"requests, server {n + len(e_stamps)}; by_status {plain['by_status']}, {evicted['by_status']}; "
        f"lease {lease:g} s renewed every {lease / 3:.2f} s"
    )
    return report


if __name__ == "__main__":
    print(run().render())
