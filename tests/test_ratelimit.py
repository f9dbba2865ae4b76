"""The request budget: never more than N starts in any window of P seconds, in threads and processes."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_shortint.ratelimit import FileRateLimiter, RateLimiter, shared_limiter


def max_in_window(starts: list[float], period: float) -> int:
    """Largest number of starts inside any half-open window [t, t + period)."""
    starts = sorted(starts)
    best, lo = 0, 0
    for hi, t in enumerate(starts):
        while starts[lo] <= t - period:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_fake_clock_exact_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, 10.0, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(10):
        with limiter.slot():
            starts.append(clock.now)
            clock.now += 0.25  # the request takes a quarter second
    assert max_in_window(starts, 10.0) == 3
    # The fourth call waits for the first slot: 10 s after the first response ended (0.25 s), no more.
    assert starts[3] == pytest.approx(starts[0] + 0.25 + 10.0)
    assert starts[:3] == [1000.0, 1000.25, 1000.5]


def test_in_flight_slots_count() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 5.0, clock=clock, sleep=clock.sleep)
    a = limiter.acquire()
    limiter.acquire()
    # Both slots are in flight; a third caller must wait until one ends and a period passes.
    clock.now += 1.0
    limiter.release(a)
    limiter.acquire()
    assert clock.now == pytest.approx(1000.0 + 1.0 + 5.0)


def test_threads_time_scaled() -> None:
    """40 calls from 4 threads through 5 calls / 0.5 s: no window of 0.5 s sees more than 5 starts."""
    limiter = RateLimiter(5, 0.5)
    starts: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            with limiter.slot():
                with lock:
                    starts.append(time.monotonic())
                time.sleep(0.002)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(starts) == 40
    assert max_in_window(starts, 0.5) == 5


def _draw(path: str, calls: int, period: float, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    limiter = FileRateLimiter(path, calls, period)
    for _ in range(n):
        with limiter.slot():
            out.put(time.time())
            time.sleep(0.002)


def test_two_processes_share_one_budget(tmp_path: Path) -> None:
    """Two processes drawing from one file-backed budget never exceed it together."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    path = str(tmp_path / "budget.json")
    procs = [ctx.Process(target=_draw, args=(path, 5, 0.5, 12, out)) for _ in range(2)]
    for proc in procs:
        proc.start()
    starts = [out.get(timeout=60) for _ in range(24)]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert max_in_window(starts, 0.5) == 5


def test_shared_limiter_is_per_endpoint(tmp_path: Path) -> None:
    a = shared_limiter("http://a", 30, 30.0)
    assert shared_limiter("http://a", 30, 30.0) is a
    assert shared_limiter("http://b", 30, 30.0) is not a
    file_backed = shared_limiter("http://a", 30, 30.0, str(tmp_path))
    assert isinstance(file_backed, FileRateLimiter) and file_backed.path.parent == tmp_path


@pytest.mark.parametrize(("calls", "period"), [(0, 30.0), (30, 0.0), (-1, 1.0)])
def test_rejects_empty_budget(calls: int, period: float) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        RateLimiter(calls, period)


def test_long_wait_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 30.0, clock=clock, sleep=clock.sleep)
    caplog.set_level("INFO", logger="airflow_provider_shortint.ratelimit")
    with limiter.slot():
        pass
    with limiter.slot():  # waits 30 s (in fake time)
        pass
    waits = [r.getMessage() for r in caplog.records if "API budget" in r.getMessage()]
    assert waits == ["waiting 30.0 s for the API budget (1 requests / 30 s)"]
