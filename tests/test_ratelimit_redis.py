"""The request budget in a real redis-server: one window for processes that share nothing but Redis."""

from __future__ import annotations

import json
import logging
import logging.handlers
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_shortint.budget import RateLimiter, budget_name, shared_limiter
from airflow_provider_shortint.budget.file_window import FileRateLimiter
from airflow_provider_shortint.budget.redis_window import RedisRateLimiter
from airflow_provider_shortint.exceptions import InvalidParameterError, ShortInterestServerError
from airflow_provider_shortint.hooks.short_interest import ShortInterestHook
from airflow_provider_shortint.sandbox import SandboxServer
from tests._fixtures_redis import RedisServer, free_port
from tests._helpers import max_in_window

# fork: a worker starts in milliseconds instead of re-importing Airflow (tens of seconds on a busy box)
WORKERS = multiprocessing.get_context("fork")


def opened(limiter: RedisRateLimiter) -> RedisRateLimiter:
    """Let a new budget's first period (closed: Redis cannot tell new from lost) pass."""
    taken = limiter._try_take()
    assert not isinstance(taken, str) and "new to Redis" in taken[1]
    time.sleep(taken[0])
    return limiter


def test_threads_of_two_limiters_share_one_window(redis_conn: str, redis_server: RedisServer) -> None:
    """Two limiters (as two processes would) x 3 threads, 5 calls / 0.5 s: never more than 5 starts."""
    first = opened(RedisRateLimiter(redis_conn, "t", 5, 0.5))
    limiters = [first, RedisRateLimiter(redis_conn, "t", 5, 0.5)]
    starts: list[float] = []
    lock = threading.Lock()

    def worker(limiter: RedisRateLimiter) -> None:
        for _ in range(7):
            with limiter.slot():
                with lock:
                    starts.append(time.monotonic())
                time.sleep(0.002)

    threads = [threading.Thread(target=worker, args=(limiters[i % 2],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(starts) == 42
    assert max_in_window(starts, 0.5) == 5
    client: Any = redis_server.client()
    window, leases, born = limiters[0].keys
    assert client.zcard(leases) == 0  # every slot released
    assert 0 < client.pttl(window) <= (0.5 + 2 * 0.5) * 1000 + 1000  # idle windows expire
    assert client.pttl(born) > 0


def test_slots_are_stamped_with_redis_server_time(redis_conn: str, redis_server: RedisServer) -> None:
    client: Any = redis_server.client()
    limiter = opened(RedisRateLimiter(redis_conn, "clock", 3, 1.0, lease=2.0))
    slot = limiter.acquire()
    seconds, micros = client.time()
    server_now = seconds + micros / 1e6
    assert client.zscore(limiter.keys[0], slot) == pytest.approx(server_now + 2.0, abs=0.5)  # in flight
    limiter.release(slot)
    assert client.zscore(limiter.keys[0], slot) == pytest.approx(server_now, abs=0.5)  # stamped end
    assert client.zscore(limiter.keys[1], slot) is None


def test_script_is_loaded_again_after_a_flush(redis_conn: str, redis_server: RedisServer) -> None:
    """EVALSHA first; NOSCRIPT (a restarted or flushed Redis) falls back to EVAL."""
    client: Any = redis_server.client()
    limiter = opened(RedisRateLimiter(redis_conn, "sha", 5, 0.5))
    limiter.release(limiter.acquire())
    client.script_flush()
    limiter.release(limiter.acquire())
    stats = client.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] >= 4
    assert stats["cmdstat_eval"]["calls"] >= 1


def test_new_budget_opens_one_period_after_first_seen(redis_conn: str) -> None:
    limiter = RedisRateLimiter(redis_conn, "new", 5, 2.0)
    first = limiter._try_take()
    assert not isinstance(first, str) and first[0] == pytest.approx(2.0)
    again = limiter._try_take()
    assert not isinstance(again, str) and 0 < again[0] <= 2.0 and "new to Redis" in again[1]


def test_future_stamps_are_clamped(redis_conn: str, redis_server: RedisServer) -> None:
    """A slot stamped an hour ahead (Redis' clock stepped back) blocks for one period, not an hour."""
    client: Any = redis_server.client()
    limiter = opened(RedisRateLimiter(redis_conn, "future", 1, 3.0))
    seconds, _ = client.time()
    client.zadd(limiter.keys[0], {"ghost": seconds + 3600})
    taken = limiter._try_take()
    assert not isinstance(taken, str)
    assert 2.5 <= taken[0] <= 3.0
    assert client.zscore(limiter.keys[0], "ghost") <= seconds + 2


def test_precedence_redis_then_state_dir_then_process(redis_conn: str, tmp_path: Any) -> None:
    both = shared_limiter("http://p", 30, 30.0, str(tmp_path), redis_conn)
    assert isinstance(both, RedisRateLimiter) and both.redis_conn_id == redis_conn
    assert shared_limiter("http://p", 30, 30.0, str(tmp_path), redis_conn) is both
    assert both.keys[0] == f"shortint:budget:{{{budget_name('http://p')}}}:window"
    assert type(shared_limiter("http://p", 30, 30.0, str(tmp_path))) is FileRateLimiter
    assert type(shared_limiter("http://p", 30, 30.0)) is RateLimiter


def test_unreachable_redis_waits_then_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens: the limiter says so, sends nothing, and fails with one sentence after the bound."""
    conn_id = "shortint_redis_nowhere"
    port = free_port()
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": port}),
    )
    caplog.set_level("WARNING", logger="airflow_provider_shortint")
    limiter = RedisRateLimiter(conn_id, "down", 5, 1.0, outage_timeout=1.0)
    with pytest.raises(ShortInterestServerError) as caught:
        limiter.acquire()
    err = caught.value
    assert err.error_code == "rate_limit_backend"
    assert err.message.endswith("so no request was sent.") and err.message.count(". ") == 0
    assert conn_id in err.message and "ConnectionError" in err.message
    warnings = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(warnings) == 1 and "no request is sent until it does, for at most 1 s" in warnings[0]


def test_frozen_redis_is_an_outage_not_a_hang(redis_conn: str, redis_server: RedisServer) -> None:
    """A Redis that accepts but never answers (SIGSTOP): the socket timeout turns it into an outage."""
    limiter = opened(RedisRateLimiter(redis_conn, "frozen", 5, 0.5, outage_timeout=1.0))
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(ShortInterestServerError, match="TimeoutError") as caught:
            limiter.acquire()
        assert caught.value.error_code == "rate_limit_backend"
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    limiter.release(limiter.acquire())  # answers again: the same limiter goes on


def test_refused_password_is_a_configuration_error(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client: Any = redis_server.client()
    client.config_set("requirepass", "right-one")
    conn_id = "shortint_redis_badpass"
    conn = {"conn_type": "redis", "host": "127.0.0.1", "port": redis_server.port, "password": "wrong-one"}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    with pytest.raises(
        InvalidParameterError, match="Redis refused connection 'shortint_redis_badpass'"
    ) as err:
        RedisRateLimiter(conn_id, "auth", 5, 1.0).acquire()
    assert "wrong-one" not in str(err.value) and "right-one" not in str(err.value)


# -- processes that share nothing but the Redis connection ---------------------------------------------------


def _fetch(
    shortint_conn: str,
    redis_conn: str,
    calls: int,
    period: float,
    n: int,
    out: Any,
    logs: Any,
) -> None:
    """A worker process: ``n`` requests through the hook, its budget in Redis; log lines to ``logs``."""
    logger = logging.getLogger("airflow_provider_shortint")
    logger.addHandler(logging.handlers.QueueHandler(logs))
    logger.setLevel(logging.INFO)
    hook = ShortInterestHook(shortint_conn)  # its extra rate_limit_redis_conn_id names the Redis budget
    assert isinstance(hook.rate_limiter, RedisRateLimiter) and hook.rate_limiter.calls == calls
    for _ in range(n):
        hook.get_latest("HK.00700")
    out.put(("done", os.getpid(), hook.requests_made))


def _hold(redis_conn: str, url: str, calls: int, period: float, out: Any) -> None:
    """Take a slot and never give it back (the process is killed "mid-request")."""
    limiter = shared_limiter(url, calls, period, None, redis_conn)
    out.put(("holding", limiter.acquire()))
    time.sleep(600)


def _run_workers(
    sandbox: SandboxServer,
    shortint_conn: str,
    redis_conn: str,
    calls: int,
    period: float,
    per_process: list[int],
    during: Callable[[], None] | None = None,
) -> list[str]:
    """Start one worker per entry, run ``during`` meanwhile, wait for all; returns their log lines."""
    out, logs = WORKERS.Queue(), WORKERS.Queue()
    procs = [
        WORKERS.Process(target=_fetch, args=(shortint_conn, redis_conn, calls, period, n, out, logs))
        for n in per_process
    ]
    for proc in procs:
        proc.start()
    try:
        if during is not None:
            during()
        done = [out.get(timeout=180) for _ in procs]
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    assert sorted(n for _, _, n in done) == sorted(per_process)
    lines = []
    while not logs.empty():
        lines.append(logs.get(timeout=5).getMessage())
    return lines


def _open_budget(redis_conn: str, url: str, calls: int, period: float) -> None:
    opened(RedisRateLimiter(redis_conn, budget_name(url), calls, period))


def _budget_conn(
    sandbox: SandboxServer,
    use_conn: Callable[..., str],
    redis_conn: str,
    conn_id: str,
    calls: int,
    period: float,
) -> str:
    """The sandbox limited to ``calls`` per ``period``, and a connection whose budget (this test's own,
    opened in advance) lives in Redis."""
    sandbox.configure(rate_limit_calls=calls, rate_limit_period=period)
    conn = use_conn(
        sandbox.url,
        conn_id=conn_id,
        rate_limit_key=sandbox.url,
        rate_limit_calls=calls,
        rate_limit_period=period,
        rate_limit_redis_conn_id=redis_conn,
    )
    _open_budget(redis_conn, sandbox.url, calls, period)
    return conn


def test_three_processes_share_one_budget_at_the_sandbox(
    sandbox: SandboxServer, use_conn: Callable[..., str], redis_conn: str
) -> None:
    """3 processes, no shared directory, 10 calls / 1 s: the server never admits more, never answers 429."""
    calls, period = 10, 1.0
    conn = _budget_conn(sandbox, use_conn, redis_conn, "shortint_rl3", calls, period)
    _run_workers(sandbox, conn, redis_conn, calls, period, [12, 12, 12])
    stats = sandbox.stats()
    assert stats["requests"] == 36 and stats["by_status"] == {"200": 36}
    assert max_in_window(sorted(stats["timestamps"]), period) <= calls


def test_sigkilled_holder_frees_its_slot_and_the_others_go_on(
    sandbox: SandboxServer, use_conn: Callable[..., str], redis_conn: str, redis_server: RedisServer
) -> None:
    """A process killed holding a slot stops renewing its lease: the slot frees lease + period later."""
    calls, period = 2, 1.0
    conn = _budget_conn(sandbox, use_conn, redis_conn, "shortint_rlk", calls, period)
    client: Any = redis_server.client()
    window = RedisRateLimiter(redis_conn, budget_name(sandbox.url), calls, period).keys[0]
    out = WORKERS.Queue()
    holder = WORKERS.Process(target=_hold, args=(redis_conn, sandbox.url, calls, period, out))
    holder.start()
    killed: list[float] = []

    def kill_holder() -> None:
        _, slot = out.get(timeout=120)
        time.sleep(1.0)  # two leases: the heartbeat keeps the slot meanwhile
        seconds, micros = client.time()
        assert client.zscore(window, slot) > seconds + micros / 1e6  # still in flight
        os.kill(holder.pid, signal.SIGKILL)  # type: ignore[arg-type]
        seconds, micros = client.time()
        killed.extend([seconds + micros / 1e6, client.zscore(window, slot)])

    try:
        _run_workers(sandbox, conn, redis_conn, calls, period, [8, 8], during=kill_holder)
    finally:
        holder.kill()
        holder.join(30)
    kill_time, last_expiry = killed
    lease = 0.5
    assert last_expiry <= kill_time + lease  # no renewal after the kill: frees <= lease + period later
    stats = sandbox.stats()
    assert stats["by_status"] == {"200": 16}
    assert max_in_window(sorted(stats["timestamps"]), period) <= calls


def test_sigkilled_holder_of_the_only_slot_delays_the_next_by_at_most_lease_plus_period(
    sandbox: SandboxServer, redis_conn: str
) -> None:
    calls, period, lease = 1, 1.0, 0.5
    _open_budget(redis_conn, sandbox.url, calls, period)
    out = WORKERS.Queue()
    holder = WORKERS.Process(target=_hold, args=(redis_conn, sandbox.url, calls, period, out))
    holder.start()
    try:
        out.get(timeout=120)
        os.kill(holder.pid, signal.SIGKILL)  # type: ignore[arg-type]
        sleeps: list[float] = []
        limiter = RedisRateLimiter(redis_conn, budget_name(sandbox.url), calls, period)

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            time.sleep(seconds)

        limiter.sleep = sleep
        limiter.release(limiter.acquire())
    finally:
        holder.kill()
        holder.join(30)
    assert sleeps, "the killed process did hold the only slot"
    assert sum(sleeps) <= lease + period + 0.05
    print(f"\nslot of a SIGKILLed holder back after {sum(sleeps):.2f} s (lease {lease} + period {period})")


def test_redis_stopped_mid_run_waits_then_resumes_without_a_burst(
    sandbox: SandboxServer, use_conn: Callable[..., str], redis_conn: str, redis_server: RedisServer
) -> None:
    """Redis killed (its data lost) and restarted: workers send nothing meanwhile, say so, and the
    window they find empty opens one period later, so the server never sees more than the limit."""
    calls, period = 5, 1.0
    conn = _budget_conn(sandbox, use_conn, redis_conn, "shortint_rlr", calls, period)
    marks: dict[str, float] = {}

    def outage() -> None:
        deadline = time.monotonic() + 60
        while sandbox.stats()["requests"] < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        redis_server.stop()
        marks["down"] = time.time()
        time.sleep(2.0)
        marks["up"] = time.time()
        redis_server.start()

    lines = _run_workers(sandbox, conn, redis_conn, calls, period, [12, 12], during=outage)
    stats = sandbox.stats()
    stamps = sorted(stats["timestamps"])
    assert stats["by_status"] == {"200": 24}
    assert max_in_window(stamps, period) <= calls
    assert not [t for t in stamps if marks["down"] + 0.5 < t < marks["up"]]  # nothing sent while down
    assert any("does not answer" in line and "no request is sent until it does" in line for line in lines)
    assert any("answers again" in line for line in lines)
    assert any("new to Redis" in line for line in lines)
    after = [t for t in stamps if t > marks["up"]]
    print(
        f"\nRedis down {marks['up'] - marks['down']:.1f} s: last request {marks['down'] - stamps[0]:.2f} s "
        f"into the run was {max(t for t in stamps if t < marks['up']) - marks['down']:+.2f} s from the stop; "
        f"first after the restart {after[0] - marks['up']:.2f} s later (period {period:g} s); "
        f"max in any window {max_in_window(stamps, period)}/{calls}"
    )
