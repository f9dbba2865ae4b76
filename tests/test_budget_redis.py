"""The request budget in a real redis-server: one window for processes that share nothing but Redis, and
what it does when Redis evicts, fills up, holds a wrong value, restarts from a snapshot, freezes or dies.

One redis-server serves the session (tests/_fixtures_redis.py); each test has a budget name (so a key) of
its own, and the tests that change the server's memory settings use a database of their own and put the
settings back. Clocks are injected where the limiter takes one; the window itself runs on the Redis
server's clock, so tests that need a budget in use mark it as started a period ago instead of waiting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import multiprocessing
import os
import queue
import random
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shortint.budget import RateLimiter, budget_name, shared_limiter
from airflow_provider_shortint.budget.file_window import FileRateLimiter
from airflow_provider_shortint.budget.redis_window import RedisRateLimiter
from airflow_provider_shortint.exceptions import (
    InvalidParameterError,
    NonRetryableError,
    ShortInterestServerError,
)
from airflow_provider_shortint.hooks.short_interest import ShortInterestHook
from airflow_provider_shortint.sandbox import SandboxServer
from tests._fixtures_redis import RedisServer, free_port
from tests._helpers import FakeClock, max_in_window, starts_of_threads, wait_until

# fork: a worker starts in milliseconds instead of re-importing Airflow (tens of seconds on a busy box)
WORKERS = multiprocessing.get_context("fork")


def unique(prefix: str = "t") -> str:
    """A budget name no other test uses (tests share one redis-server)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def server_now(client: Any) -> float:
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


def opened(limiter: RedisRateLimiter, client: Any) -> RedisRateLimiter:
    """Mark the budget as started more than a period ago on this server run, as a budget in use is, so the
    test need not wait out a new budget's first period."""
    client.hset(
        limiter.key,
        mapping={
            "born": f"{server_now(client) - limiter.period - 1:.6f}",
            "run": client.info("server")["run_id"],
            "cause": "new",
        },
    )
    return limiter


def one_sentence(message: str) -> bool:
    return message.endswith(".") and message.count(". ") == 0


@contextlib.contextmanager
def server_config(client: Any, **settings: str) -> Iterator[None]:
    """CONFIG SET for the block; the session's server gets its previous values back afterwards."""
    before = {name: client.config_get(name.replace("_", "-"))[name.replace("_", "-")] for name in settings}
    try:
        for name, value in settings.items():
            client.config_set(name.replace("_", "-"), value)
        yield
    finally:
        for name, value in before.items():
            client.config_set(name.replace("_", "-"), value)


def conn_for_db(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, db: int) -> str:
    conn_id = f"shortint_redis_db{db}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", redis_server.conn_json(db=db))
    return conn_id


# -- one window, on the server's clock --------------------------------------------------------------------


def test_threads_of_two_limiters_share_one_window(redis_conn: str, redis_server: RedisServer) -> None:
    """Two limiters (as two processes would) x 2 threads, 4 calls / 0.2 s: never more than 4 starts; the
    whole state is one key, with nothing left in flight and an expiry."""
    client = redis_server.client()
    name = unique()
    limiters = [
        opened(RedisRateLimiter(redis_conn, name, 4, 0.2), client),
        RedisRateLimiter(redis_conn, name, 4, 0.2),
    ]
    starts = starts_of_threads(lambda i: limiters[i % 2].slot)
    assert len(starts) == 16
    assert max_in_window(starts, 0.2) == 4
    key = limiters[0].key
    assert client.keys(f"shortint:budget:{name}*") == [key.encode()]
    fields = {field.decode() for field in client.hkeys(key)}
    assert {"born", "run", "cause"} <= fields and not [f for f in fields if f.startswith("f:")]
    assert 0 < client.pttl(key) <= 7 * 24 * 3600 * 1000


def test_slots_are_stamped_with_redis_server_time(redis_conn: str, redis_server: RedisServer) -> None:
    client = redis_server.client()
    limiter = opened(RedisRateLimiter(redis_conn, unique(), 3, 1.0, lease=2.0), client)
    slot = limiter.acquire()
    now = server_now(client)
    assert float(client.hget(limiter.key, f"f:{slot}")) == pytest.approx(now + 2.0, abs=0.5)  # in flight
    limiter.release(slot)
    assert float(client.hget(limiter.key, f"d:{slot}")) == pytest.approx(now, abs=0.5)  # its end
    assert client.hget(limiter.key, f"f:{slot}") is None


def test_script_is_loaded_again_after_a_flush(redis_conn: str, redis_server: RedisServer) -> None:
    """EVALSHA first; NOSCRIPT (a restarted or flushed script cache) falls back to EVAL."""
    client = redis_server.client()
    limiter = opened(RedisRateLimiter(redis_conn, unique(), 5, 0.5), client)
    limiter.release(limiter.acquire())
    before = client.info("commandstats")
    client.script_flush()
    limiter.release(limiter.acquire())
    after = client.info("commandstats")
    assert after["cmdstat_evalsha"]["calls"] >= before["cmdstat_evalsha"]["calls"] + 2
    assert after["cmdstat_eval"]["calls"] >= before.get("cmdstat_eval", {"calls": 0})["calls"] + 1


def test_new_budget_opens_one_period_after_first_seen(redis_conn: str) -> None:
    limiter = RedisRateLimiter(redis_conn, unique(), 5, 2.0)
    first = limiter._try_take()
    assert not isinstance(first, str) and first[0] == pytest.approx(2.0)
    assert first[1].startswith("the budget is new to Redis")
    again = limiter._try_take()
    assert not isinstance(again, str) and 0 < again[0] <= 2.0 and again[1] == first[1]


def test_future_stamps_are_clamped(redis_conn: str, redis_server: RedisServer) -> None:
    """A slot stamped an hour ahead (Redis' clock stepped back) blocks for one period, not an hour."""
    client = redis_server.client()
    limiter = opened(RedisRateLimiter(redis_conn, unique(), 1, 3.0), client)
    now = server_now(client)
    client.hset(limiter.key, "d:ghost", f"{now + 3600:.6f}")
    taken = limiter._try_take()
    assert not isinstance(taken, str)
    assert 2.5 <= taken[0] <= 3.0
    assert float(client.hget(limiter.key, "d:ghost")) <= now + 2


def test_budget_started_in_the_future_restarts(redis_conn: str, redis_server: RedisServer) -> None:
    """A birth mark an hour ahead (the server's clock stepped back) reads as a budget that opens one period
    from now, not in an hour."""
    client = redis_server.client()
    limiter = opened(RedisRateLimiter(redis_conn, unique(), 3, 2.0), client)
    client.hset(limiter.key, "born", f"{server_now(client) + 3600:.6f}")
    taken = limiter._try_take()
    assert not isinstance(taken, str) and taken[0] == pytest.approx(2.0)
    assert "clock stepped back" in taken[1]


def test_lost_part_of_the_state_reads_as_a_new_budget(redis_conn: str, redis_server: RedisServer) -> None:
    """Slots without the birth mark (a state rebuilt by a late release after an eviction, or a field
    deleted by hand) are never an empty window: the budget opens one period later."""
    client = redis_server.client()
    limiter = opened(RedisRateLimiter(redis_conn, unique(), 2, 2.0), client)
    limiter.release(limiter.acquire())
    client.hdel(limiter.key, "born")
    taken = limiter._try_take()
    assert not isinstance(taken, str) and taken[0] == pytest.approx(2.0)
    assert "part of the budget's state in Redis is missing" in taken[1]


def test_precedence_redis_then_state_dir_then_process(redis_conn: str, tmp_path: Path) -> None:
    both = shared_limiter("http://p", 30, 30.0, str(tmp_path), redis_conn)
    assert isinstance(both, RedisRateLimiter) and both.redis_conn_id == redis_conn
    assert shared_limiter("http://p", 30, 30.0, str(tmp_path), redis_conn) is both
    assert both.key == f"shortint:budget:{budget_name('http://p')}"
    assert type(shared_limiter("http://p", 30, 30.0, str(tmp_path))) is FileRateLimiter
    assert type(shared_limiter("http://p", 30, 30.0)) is RateLimiter


# -- Redis that does not answer, refuses, or holds something else -----------------------------------------


def test_unreachable_redis_waits_then_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens: the limiter says so once, asks again every second, sends nothing, and fails with
    one sentence after ``outage_timeout`` (60 s by default, on the injected clock)."""
    conn_id = "shortint_redis_nowhere"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": free_port()}),
    )
    caplog.set_level("WARNING", logger="airflow_provider_shortint")
    clock = FakeClock()
    limiter = RedisRateLimiter(conn_id, "down", 5, 1.0, clock=clock, sleep=clock.sleep)
    assert limiter.outage_timeout == 60.0
    with pytest.raises(ShortInterestServerError) as caught:
        limiter.acquire()
    err = caught.value
    assert err.error_code == "rate_limit_backend" and one_sentence(err.message)
    assert err.message.endswith("so no request was sent.")
    assert conn_id in err.message and limiter.key in err.message and "ConnectionError" in err.message
    assert clock.sleeps == [1.0] * 60
    warnings = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(warnings) == 1 and "no request is sent until it does, for at most 60 s" in warnings[0]


def test_frozen_redis_is_an_outage_not_a_hang(redis_conn: str, redis_server: RedisServer) -> None:
    """A Redis that accepts but never answers (SIGSTOP): the socket timeout turns it into an outage."""
    clock = FakeClock()
    limiter = RedisRateLimiter(
        redis_conn, unique(), 5, 0.5, outage_timeout=2.0, socket_timeout=0.2, clock=clock, sleep=clock.sleep
    )
    opened(limiter, redis_server.client())
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(ShortInterestServerError, match="TimeoutError") as caught:
            limiter.acquire()
        assert caught.value.error_code == "rate_limit_backend"
        assert clock.sleeps == [1.0, 1.0]
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    limiter.release(limiter.acquire())  # answers again: the same limiter goes on


@pytest.mark.parametrize("refusal", ["wrong-password", "no-permission"])
def test_refused_login_is_a_configuration_error(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, refusal: str
) -> None:
    """WRONGPASS or NOPERM: ``InvalidParameterError`` at once (another attempt cannot fix it), naming the
    connection and the key, never the password."""
    client = redis_server.client()
    user = unique("user")
    if refusal == "no-permission":
        client.acl_setuser(
            user, enabled=True, passwords=["+right-one"], keys="*", commands=["+@all", "-evalsha"]
        )
        login: dict[str, object] = {"login": user, "password": "right-one"}
    else:
        login = {"login": user, "password": "wrong-one"}
    conn_id = f"shortint_redis_{refusal.replace('-', '_')}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", redis_server.conn_json(0, **login))
    clock = FakeClock()
    try:
        with pytest.raises(InvalidParameterError, match=f"Redis refused connection '{conn_id}'") as caught:
            RedisRateLimiter(conn_id, unique(), 5, 1.0, clock=clock, sleep=clock.sleep).acquire()
    finally:
        client.acl_deluser(user)
    assert isinstance(caught.value, NonRetryableError) and caught.value.error_code == "rate_limit_backend"
    assert "wrong-one" not in str(caught.value) and "right-one" not in str(caught.value)
    assert clock.sleeps == []


def test_wrong_type_at_the_budget_key_is_a_configuration_error(
    redis_conn: str,
    redis_server: RedisServer,
    sandbox: SandboxServer,
    use_conn: Callable[..., str],
) -> None:
    """Another value at the budget's key (WRONGTYPE): one sentence naming the Redis connection and the key,
    raised at once, not retried, and no request reaches the API."""
    client = redis_server.client()
    key = f"shortint:budget:{budget_name(sandbox.url)}"
    client.set(key, "someone else's value")
    clock = FakeClock()
    limiter = RedisRateLimiter(redis_conn, budget_name(sandbox.url), 5, 1.0, clock=clock, sleep=clock.sleep)
    with pytest.raises(InvalidParameterError) as caught:
        limiter.acquire()
    err = caught.value
    assert isinstance(err, NonRetryableError) and err.error_code == "rate_limit_backend"
    assert f"connection {redis_conn!r}, key {key!r}" in err.message and "WRONGTYPE" in err.message
    assert one_sentence(err.message) and clock.sleeps == []
    conn = use_conn(
        sandbox.url,
        conn_id="shortint_wrongtype",
        rate_limit_key=sandbox.url,
        rate_limit_redis_conn_id=redis_conn,
    )
    with pytest.raises(InvalidParameterError, match="WRONGTYPE"):
        ShortInterestHook(conn).get_latest("HK.00700")
    assert sandbox.stats()["requests"] == 0
    assert client.get(key) == b"someone else's value"  # the foreign value is left alone


@pytest.mark.parametrize("policy", ["noeviction", "volatile-lru"])
def test_memory_limit_is_an_outage_then_a_named_error(
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    policy: str,
) -> None:
    """Redis over ``maxmemory`` with a policy that cannot free enough (noeviction; volatile-* with only
    our key to evict) refuses the script's writes (OOM): no request is sent, the limiter says so once
    naming the connection and the key, waits (memory frees as keys expire or a broker queue drains) and
    fails after ``outage_timeout`` with one sentence; once memory is back it goes on."""
    db = 6
    conn_id = conn_for_db(redis_server, monkeypatch, db)
    client = redis_server.client(db)
    clock = FakeClock()
    limiter = RedisRateLimiter(conn_id, unique(), 3, 0.2, outage_timeout=5.0, clock=clock, sleep=clock.sleep)
    opened(limiter, client)
    limiter.release(limiter.acquire())
    fillers = [f"fill:{i}" for i in range(16)]
    for filler in fillers:
        client.set(filler, b"x" * 65536)  # no expiry: volatile-* cannot evict these
    caplog.set_level("WARNING", logger="airflow_provider_shortint")
    used = int(client.info("memory")["used_memory"])
    try:
        with server_config(client, maxmemory_policy=policy, maxmemory=str(used - 32768)):
            with pytest.raises(ShortInterestServerError) as caught:
                limiter.acquire()
            err = caught.value
            assert err.error_code == "rate_limit_backend" and one_sentence(err.message)
            assert f"connection {conn_id!r}, key {limiter.key!r}" in err.message
            assert "memory limit" in err.message and "OutOfMemoryError" in err.message
            assert clock.sleeps == [1.0] * 5
            told = [r.getMessage() for r in caplog.records if "memory limit" in r.getMessage()]
            assert len(told) == 1 and limiter.key in told[0], told

            def sleep(seconds: float) -> None:  # memory frees while the next acquire waits
                clock.sleep(seconds)
                client.delete(*fillers)
                if seconds < 1.0:  # a new budget's period (volatile-lru evicted ours) runs on Redis' clock
                    time.sleep(seconds)

            limiter.sleep = sleep
            limiter.release(limiter.acquire())
    finally:
        client.flushdb()
    assert clock.sleeps[5] == 1.0  # refused once more, then answered
    assert [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()]


def test_disk_error_refusing_writes_is_an_outage_then_a_named_error(
    redis_binary: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that must save snapshots but cannot (``MISCONF``: its folder is not writable, here /proc)
    refuses writes: handled as an outage, like the memory limit; writes allowed again, it goes on. (Its
    own server: ``dir`` cannot be changed on a running Redis.)"""
    server = RedisServer(redis_binary, free_port(), "--save", "3600 1", "--dir", "/proc")
    server.start()
    try:
        conn_id = "shortint_redis_misconf"
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", server.conn_json())
        client = server.client()
        clock = FakeClock()
        limiter = RedisRateLimiter(
            conn_id, unique(), 3, 0.2, outage_timeout=3.0, clock=clock, sleep=clock.sleep
        )
        opened(limiter, client)
        client.bgsave()
        assert wait_until(lambda: client.info("persistence")["rdb_last_bgsave_status"] == "err")
        caplog.set_level("WARNING", logger="airflow_provider_shortint")
        with pytest.raises(ShortInterestServerError, match="cannot save to disk") as caught:
            limiter.acquire()
        assert caught.value.error_code == "rate_limit_backend" and one_sentence(caught.value.message)
        assert f"key {limiter.key!r}" in caught.value.message and clock.sleeps == [1.0] * 3
        client.config_set("save", "")  # no snapshots asked for: writes allowed again
        limiter.release(limiter.acquire())
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)
    told = [r.getMessage() for r in caplog.records if "cannot save to disk" in r.getMessage()]
    assert len(told) == 1, told


def test_eviction_never_reads_as_an_empty_window(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis at ``maxmemory`` with ``allkeys-random``, other keys filling it: our budget key is evicted
    again and again while 3 limiters x 2 threads take slots for requests of 0-0.1 s; each eviction reads
    as a new budget (a period's wait), so no window of ``period`` ever sees more than ``calls`` starts."""
    db, calls, period, rounds = 5, 4, 0.3, 3
    conn_id = conn_for_db(redis_server, monkeypatch, db)
    client = redis_server.client(db)
    name = unique()
    limiters = [RedisRateLimiter(conn_id, name, calls, period) for _ in range(3)]
    key = limiters[0].key
    opened(limiters[0], client)
    starts: list[float] = []
    lock, stop = threading.Lock(), threading.Event()
    latency = random.Random(19)

    def worker(limiter: RedisRateLimiter) -> None:
        while not stop.is_set():
            with limiter.slot():
                with lock:
                    starts.append(time.monotonic())
                    took = latency.uniform(0, 0.1)
                stop.wait(took)  # the request's own duration spreads the slots' end stamps

    evictions = 0
    used = int(client.info("memory")["used_memory"])
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    threads = [threading.Thread(target=worker, args=(limiters[i % 3],)) for i in range(6)]
    try:
        with server_config(
            client,
            maxmemory=str(used + 1024 * 1024),
            maxmemory_policy="allkeys-random",
            notify_keyspace_events="Ee",
        ):
            pubsub.subscribe(f"__keyevent@{db}__:evicted")
            for thread in threads:
                thread.start()
            filler = 0
            for _ in range(rounds):
                wanted = len(starts) + calls
                assert wait_until(lambda: len(starts) >= wanted), "the budget did not open again"  # noqa: B023
                ours = False
                while not ours and filler < 20_000:  # flood until the random eviction hits our key
                    client.set(f"fill:{filler}", b"x" * 32768)
                    filler += 1
                    while (message := pubsub.get_message()) is not None:
                        ours = ours or message["data"] == key.encode()
                assert ours, f"our key was not evicted in {filler} writes"
                evictions += 1
            mark = len(starts)
            assert wait_until(lambda: len(starts) >= mark + calls)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        pubsub.close()
        client.flushdb()
    assert evictions == rounds and len(starts) >= (rounds + 1) * calls
    assert max_in_window(starts, period) <= calls
    print(
        f"\nallkeys-random: budget key evicted {evictions} times under 3 limiters x 2 threads; {len(starts)} "
        f"starts, at most {max_in_window(starts, period)} in any {period:g}-s window ({calls} allowed)"
    )


def test_state_restored_from_an_older_snapshot_reads_as_a_new_budget(
    redis_conn: str, redis_server: RedisServer
) -> None:
    """Redis restarted from a snapshot taken before the latest slots (its born mark survived, its window
    lost a slot): the state was written by another server run, so the budget opens one period later
    instead of handing out the lost slot at once."""
    client = redis_server.client()
    clock = FakeClock()
    limiter = opened(RedisRateLimiter(redis_conn, unique(), 2, 30.0, clock=clock, sleep=clock.sleep), client)
    limiter.release(limiter.acquire())
    client.save()  # the snapshot: one slot used of two
    limiter.release(limiter.acquire())
    full = limiter._try_take()
    assert not isinstance(full, str) and full[1].startswith("full, 2 used")
    redis_server.stop()
    try:
        redis_server.start()  # loads the snapshot
        assert len([f for f in redis_server.client().hkeys(limiter.key) if f.startswith(b"d:")]) == 1
        taken = limiter._try_take()
        if not isinstance(taken, str) and taken[1] == "Redis does not answer":  # our socket died with it
            taken = limiter._try_take()
    finally:
        (Path(redis_server.workdir) / "dump.rdb").unlink(missing_ok=True)
    assert not isinstance(taken, str), "the slot lost with the restart was handed out again"
    assert taken[0] == pytest.approx(30.0) and "another run of the Redis server" in taken[1]


def test_renewals_failing_while_redis_is_down_are_logged_once(
    redis_conn: str, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis killed while a slot is held: the heartbeat (every 0.1 s here) fails on every renewal and
    says so once; when Redis is back, once more."""
    limiter = opened(RedisRateLimiter(redis_conn, unique(), 2, 1.0, lease=0.3), redis_server.client())
    slot = limiter.acquire()
    caplog.set_level("WARNING", logger="airflow_provider_shortint.budget")
    redis_server.stop()
    try:
        assert wait_until(lambda: limiter._heartbeat.throttle.failures >= 5)
    finally:
        redis_server.start()
    assert wait_until(lambda: limiter._heartbeat.throttle.since is None)
    limiter.release(slot)
    messages = [r.getMessage() for r in caplog.records if "renew" in r.getMessage()]
    assert len(messages) == 2, messages
    where = f"in Redis (connection {redis_conn!r}, key {limiter.key!r})"
    assert messages[0].startswith(f"could not renew the lease of 1 budget slots {where}")
    assert messages[1].startswith(f"renewed the budget leases {where} again after")


# -- processes that share nothing but the Redis connection ---------------------------------------------------


def _fetch(shortint_conn: str, calls: int, n: int, out: Any, logs: Any) -> None:
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
    threading.Event().wait(600)  # until the test kills it


class LogTap:
    """The worker processes' log lines, read as they come."""

    def __init__(self, logs: Any) -> None:
        self.logs = logs
        self.lines: list[str] = []

    def drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self.lines.append(self.logs.get_nowait().getMessage())

    def count(self, text: str) -> int:
        self.drain()
        return sum(text in line for line in self.lines)


def _run_workers(
    shortint_conn: str, calls: int, per_process: list[int], during: Callable[[LogTap], None] | None = None
) -> list[str]:
    """Start one worker per entry, run ``during`` meanwhile, wait for all; returns their log lines."""
    out, logs = WORKERS.Queue(), WORKERS.Queue()
    tap = LogTap(logs)
    procs = [WORKERS.Process(target=_fetch, args=(shortint_conn, calls, n, out, logs)) for n in per_process]
    for proc in procs:
        proc.start()
    try:
        if during is not None:
            during(tap)
        done = [out.get(timeout=180) for _ in procs]
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    assert sorted(n for _, _, n in done) == sorted(per_process)
    tap.drain()
    return tap.lines


def _budget_conn(
    sandbox: SandboxServer,
    use_conn: Callable[..., str],
    redis_conn: str,
    redis_server: RedisServer,
    calls: int,
    period: float,
) -> str:
    """The sandbox limited to ``calls`` per ``period``, and a connection whose budget (this test's own,
    marked as in use) lives in Redis."""
    sandbox.configure(rate_limit_calls=calls, rate_limit_period=period)
    conn = use_conn(
        sandbox.url,
        conn_id=f"shortint_{unique('rl').replace('-', '_')}",
        rate_limit_key=sandbox.url,
        rate_limit_calls=calls,
        rate_limit_period=period,
        rate_limit_redis_conn_id=redis_conn,
    )
    opened(RedisRateLimiter(redis_conn, budget_name(sandbox.url), calls, period), redis_server.client())
    return conn


def test_three_processes_share_one_budget_at_the_sandbox(
    sandbox: SandboxServer, use_conn: Callable[..., str], redis_conn: str, redis_server: RedisServer
) -> None:
    """3 processes, no shared directory, 4 calls / 0.3 s: the server never admits more, never answers 429."""
    calls, period = 4, 0.3
    conn = _budget_conn(sandbox, use_conn, redis_conn, redis_server, calls, period)
    _run_workers(conn, calls, [4, 4, 4])
    stats = sandbox.stats()
    assert stats["requests"] == 12 and stats["by_status"] == {"200": 12}
    assert max_in_window(sorted(stats["timestamps"]), period) <= calls


def test_sigkilled_holder_frees_its_slot_and_the_others_go_on(
    sandbox: SandboxServer, use_conn: Callable[..., str], redis_conn: str, redis_server: RedisServer
) -> None:
    """A process killed holding a slot stops renewing its lease: the slot frees lease + period later."""
    calls, period = 2, 0.3
    conn = _budget_conn(sandbox, use_conn, redis_conn, redis_server, calls, period)
    client = redis_server.client()
    key = RedisRateLimiter(redis_conn, budget_name(sandbox.url), calls, period).key
    out = WORKERS.Queue()
    holder = WORKERS.Process(target=_hold, args=(redis_conn, sandbox.url, calls, period, out))
    holder.start()
    killed: list[float] = []

    def expiry(slot: str) -> float:
        return float(client.hget(key, f"f:{slot}") or 0.0)

    def kill_holder(tap: LogTap) -> None:
        _, slot = out.get(timeout=120)
        first = expiry(slot)
        assert wait_until(lambda: expiry(slot) > first)  # the heartbeat renews it...
        second = expiry(slot)
        assert wait_until(lambda: expiry(slot) > second)  # ...again
        os.kill(holder.pid, signal.SIGKILL)  # type: ignore[arg-type]
        killed.extend([server_now(client), expiry(slot)])

    try:
        _run_workers(conn, calls, [3, 3], during=kill_holder)
    finally:
        holder.kill()
        holder.join(30)
    kill_time, last_expiry = killed
    assert last_expiry <= kill_time + 0.5  # lease 0.5: no renewal after the kill, frees <= lease + period
    stats = sandbox.stats()
    assert stats["by_status"] == {"200": 6}
    assert max_in_window(sorted(stats["timestamps"]), period) <= calls


def test_sigkilled_holder_of_the_only_slot_delays_the_next_by_at_most_lease_plus_period(
    sandbox: SandboxServer, redis_conn: str, redis_server: RedisServer
) -> None:
    calls, period, lease = 1, 0.3, 0.5
    opened(RedisRateLimiter(redis_conn, budget_name(sandbox.url), calls, period), redis_server.client())
    out = WORKERS.Queue()
    holder = WORKERS.Process(target=_hold, args=(redis_conn, sandbox.url, calls, period, out))
    holder.start()
    try:
        out.get(timeout=120)
        os.kill(holder.pid, signal.SIGKILL)  # type: ignore[arg-type]
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            time.sleep(seconds)

        limiter = RedisRateLimiter(redis_conn, budget_name(sandbox.url), calls, period, sleep=sleep)
        limiter.release(limiter.acquire())
    finally:
        holder.kill()
        holder.join(30)
    assert sleeps, "the killed process did hold the only slot"
    assert sum(sleeps) <= lease + period + 1e-3  # the waits the limiter asked for, from Redis' clock
    print(
        f"\nslot of a SIGKILLed holder back after waits of {sum(sleeps):.2f} s "
        f"(lease {lease} + period {period})"
    )


def test_redis_stopped_mid_run_waits_then_resumes_without_a_burst(
    sandbox: SandboxServer, use_conn: Callable[..., str], redis_conn: str, redis_server: RedisServer
) -> None:
    """Redis killed (its data lost) mid-run: the workers send nothing while it is down (each reports it,
    then keeps asking: a listener on its port counts and drops their connections), and once it is back
    the window they find empty opens one period later, so the server never sees more than the limit."""
    calls, period = 3, 0.3
    conn = _budget_conn(sandbox, use_conn, redis_conn, redis_server, calls, period)
    marks: dict[str, float] = {}

    def outage(tap: LogTap) -> None:
        assert wait_until(lambda: sandbox.stats()["requests"] >= 4, guard=60)
        redis_server.stop()
        marks["down"] = time.time()
        attempts = [0]
        with socket.create_server(("127.0.0.1", redis_server.port)) as listener:
            listener.settimeout(0.05)

            def refuse() -> bool:
                with contextlib.suppress(TimeoutError):
                    connection, _ = listener.accept()
                    connection.close()
                    attempts[0] += 1
                return False

            # Both workers saw it: each warns once (its "waiting ..." lines also say "does not answer").
            assert wait_until(lambda: refuse() or tap.count("no request is sent until it does") >= 2)
            seen = attempts[0]
            assert wait_until(lambda: refuse() or attempts[0] >= seen + 2)  # and asked again
        marks["up"] = time.time()
        redis_server.start()

    lines = _run_workers(conn, calls, [6, 6], during=outage)
    stats = sandbox.stats()
    stamps = sorted(stats["timestamps"])
    assert stats["by_status"] == {"200": 12}
    assert max_in_window(stamps, period) <= calls
    assert not [t for t in stamps if marks["down"] + 0.5 < t < marks["up"]]  # nothing sent while down
    assert (
        sum("does not answer" in line and "no request is sent until it does" in line for line in lines) == 2
    )
    assert any("answers again" in line for line in lines)
    assert any("new to Redis" in line for line in lines)
    after = [t for t in stamps if t > marks["up"]]
    print(
        f"\nRedis down {marks['up'] - marks['down']:.1f} s: first request {after[0] - marks['up']:.2f} s "
        f"after the restart (1-s retry + period {period:g} s); "
        f"max in any window {max_in_window(stamps, period)}/{calls}"
    )
