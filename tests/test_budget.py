"""The request budget in memory and in a file: never more than N starts in any window of P seconds, in
threads and processes; the liveness of leases; what the heartbeat logs. Clocks are injected where the
limiter takes one; real time runs only where threads or processes must really race (short periods)."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shortint.budget import Heartbeat, RateLimiter, file_window, shared_limiter
from airflow_provider_shortint.budget.file_window import FileRateLimiter
from airflow_provider_shortint.budget.window import RENEW_LOG_EVERY
from tests._helpers import FakeClock, max_in_window, starts_of_threads, wait_until

# fork: a worker starts in milliseconds instead of re-importing the test module
WORKERS = multiprocessing.get_context("fork")


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
    """16 calls from 4 threads through 4 calls / 0.2 s: no window of 0.2 s sees more than 4 starts."""
    limiter = RateLimiter(4, 0.2)
    starts = starts_of_threads(lambda _: limiter.slot)
    assert len(starts) == 16
    assert max_in_window(starts, 0.2) == 4


def _draw(path: str, calls: int, period: float, n: int, out: Any) -> None:
    limiter = FileRateLimiter(path, calls, period)
    for _ in range(n):
        with limiter.slot():
            out.put(time.time())


def test_two_processes_share_one_budget(tmp_path: Path) -> None:
    """Two processes drawing from one file-backed budget (4 calls / 0.25 s) never exceed it together."""
    out = WORKERS.Queue()
    path = str(tmp_path / "budget.json")
    procs = [WORKERS.Process(target=_draw, args=(path, 4, 0.25, 6, out)) for _ in range(2)]
    for proc in procs:
        proc.start()
    starts = [out.get(timeout=60) for _ in range(12)]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert max_in_window(starts, 0.25) == 4


def test_shared_limiter_is_per_budget_key(tmp_path: Path) -> None:
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
    caplog.set_level("INFO", logger="airflow_provider_shortint.budget")
    with limiter.slot():
        pass
    with limiter.slot():  # waits 30 s (in fake time)
        pass
    waits = [r.getMessage() for r in caplog.records if "API budget" in r.getMessage()]
    assert waits == [
        "waiting 30.0 s for the API budget (1 requests / 30 s): "
        "full, 1 used in the last period and 0 in flight"
    ]


def test_slots_in_flight_free_one_period_after_they_end() -> None:
    """All slots in flight: the caller polls after one period, not after the hold (300 s) + period."""
    clock = FakeClock()
    limiter = RateLimiter(2, 5.0, clock=clock, sleep=clock.sleep)
    a, _ = limiter.acquire(), limiter.acquire()
    taken = limiter._try_take()
    assert taken == (5.0, "full, 0 used in the last period and 2 in flight")
    clock.now += 0.5
    limiter.release(a)
    limiter.acquire()
    assert clock.now == pytest.approx(1000.5 + 5.0)


# -- the file backend: liveness (issue 14) -------------------------------------------------------------------


def test_file_ignores_non_finite_and_malformed_values(tmp_path: Path) -> None:
    """Infinity, NaN, strings and booleans in the state file are dropped, not raised (was OverflowError)."""
    path = tmp_path / "budget.json"
    path.write_text(
        '[[Infinity, "a"], [NaN, "b"], [-Infinity, "c"], ["1e9", "d"], [true, "e"], [1e400, "f"], 7]',
        encoding="utf-8",
    )
    clock = FakeClock()
    limiter = FileRateLimiter(path, 1, 30.0, clock=clock, sleep=clock.sleep)
    limiter.release(limiter.acquire())
    assert clock.sleeps == []
    assert [slot[0] for slot in json.loads(path.read_text(encoding="utf-8"))] == [1000.0]


def test_file_clamps_slots_stamped_in_the_future(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Slots stamped an hour ahead (the wall clock stepped back) block for one period, not an hour."""
    path = tmp_path / "budget.json"
    path.write_text(json.dumps([[1000.0 + 3600, "x"], [1000.0 + 3600, "y"]]), encoding="utf-8")
    clock = FakeClock()
    limiter = FileRateLimiter(path, 2, 30.0, clock=clock, sleep=clock.sleep)
    caplog.set_level("WARNING", logger="airflow_provider_shortint.budget")
    limiter.acquire()
    assert sum(clock.sleeps) == pytest.approx(30.0)
    assert any("stamped up to 3600 s in the future" in r.getMessage() for r in caplog.records)


def _hold_slot_then_wait(path: str, calls: int, period: float, lease: float, ready: Any) -> None:
    limiter = FileRateLimiter(path, calls, period, lease=lease)
    limiter.acquire()  # never released: the process is killed "mid-request"
    ready.set()
    threading.Event().wait(600)  # until the test kills it


def _file_stamps(path: Path) -> list[float]:
    try:
        return [float(slot[0]) for slot in json.loads(path.read_text(encoding="utf-8"))]
    except (OSError, ValueError):
        return []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stopped"])
def test_file_slot_of_a_dead_or_stopped_process_frees_within_lease_plus_period(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """A holder killed or stopped mid-request stops renewing its lease: its slot frees ``lease + period``
    after its last renewal. The waits the next limiter asks for add up to no more than that."""
    ready = WORKERS.Event()
    path, period, lease = tmp_path / "budget.json", 0.4, 0.3
    holder = WORKERS.Process(target=_hold_slot_then_wait, args=(str(path), 1, period, lease, ready))
    holder.start()
    try:
        assert ready.wait(60)
        first = _file_stamps(path)
        assert len(first) == 1
        # the heartbeat renews the lease (twice, so renewal is a habit, not an accident)
        assert wait_until(lambda: _file_stamps(path)[0] > first[0] + lease / 4)
        second = _file_stamps(path)[0]
        assert wait_until(lambda: _file_stamps(path)[0] > second)
        os.kill(holder.pid, sig)  # type: ignore[arg-type]
        killed = time.time()
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            time.sleep(seconds)

        limiter = FileRateLimiter(path, 1, period, lease=lease, sleep=sleep)
        limiter.release(limiter.acquire())
        # (no wait at all when the holder stopped holding the file lock: setting it aside took longer)
        assert sum(sleeps) <= lease + period + 1e-3
        assert _file_stamps(path)[0] >= killed  # our own slot, stamped after the holder stopped
    finally:
        os.kill(holder.pid, signal.SIGCONT)  # type: ignore[arg-type]
        holder.kill()
        holder.join(30)


def _hold_lock(lock_path: str, ready: Any) -> None:
    with open(lock_path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        ready.set()
        threading.Event().wait(600)  # until the test kills it


def test_file_lock_of_a_stopped_process_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A process stopped while holding the state-file lock: named in the log, its lock set aside."""
    ready = WORKERS.Event()
    path = tmp_path / "budget.json"
    holder = WORKERS.Process(target=_hold_lock, args=(f"{path}.lock", ready))
    holder.start()
    try:
        assert ready.wait(60)
        os.kill(holder.pid, signal.SIGSTOP)  # type: ignore[arg-type]
        caplog.set_level("WARNING", logger="airflow_provider_shortint.budget")
        limiter = FileRateLimiter(path, 5, 1.0, lock_timeout=1.0)
        limiter.release(limiter.acquire())
        messages = [r.getMessage() for r in caplog.records]
        assert any(f"held by pid {holder.pid} (stopped)" in m for m in messages), messages
        assert any("set aside, going on with a fresh lock" in m for m in messages), messages
        assert len(json.loads(path.read_text(encoding="utf-8"))) == 1
    finally:
        os.kill(holder.pid, signal.SIGCONT)  # type: ignore[arg-type]
        holder.kill()
        holder.join(30)


def test_file_write_of_a_holder_whose_lock_was_set_aside_is_discarded(tmp_path: Path) -> None:
    """The stopped holder wakes up and writes: its stale state must not overwrite the new one."""
    path = tmp_path / "budget.json"
    stale = FileRateLimiter(path, 5, 30.0)
    fresh = FileRateLimiter(path, 5, 30.0, lock_timeout=0.3)
    inside, resume = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def stuck_writer() -> None:
        try:
            with stale._state() as slots:
                inside.set()
                resume.wait(30)
                slots.append([time.time(), "stale"])
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=stuck_writer)
    thread.start()
    assert inside.wait(30)
    fresh.release(fresh.acquire())  # waits 0.3 s, sets the lock aside, writes its slot
    resume.set()
    thread.join(30)
    assert [type(err).__name__ for err in errors] == ["_LockLost"]
    ids = [slot[1] for slot in json.loads(path.read_text(encoding="utf-8"))]
    assert len(ids) == 1 and ids != ["stale"]


def test_holder_paused_between_its_check_and_its_rename_loses_no_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reviewer's interleaving, forced: the holder passes its "lock still mine" check, stalls past
    ``lock_timeout``, a waiter sets the lock aside and records its slot, then the holder renames its
    stale state over the file. The late rename must fail and the holder must take its slot again on
    top of the waiter's, so the file ends with both slots."""
    path = tmp_path / "budget.json"
    holder = FileRateLimiter(path, 2, 30.0)
    waiter = FileRateLimiter(path, 2, 30.0, lock_timeout=0.3)
    checked, resume = threading.Event(), threading.Event()
    real_check = file_window._still_current
    pauses: list[bool] = []

    def check_then_stall(fd: int, lock_path: str) -> bool:
        current = real_check(fd, lock_path)
        writing = any(path.parent.glob(f"{path.name}.*.tmp"))  # the commit's check, not the lock's
        if threading.current_thread().name == "holder" and writing and not pauses:
            pauses.append(current)
            checked.set()
            assert resume.wait(30)
        return current

    monkeypatch.setattr(file_window, "_still_current", check_then_stall)
    taken: list[str] = []
    thread = threading.Thread(target=lambda: taken.append(holder.acquire()), name="holder")
    thread.start()
    assert checked.wait(30)
    mine = waiter.acquire()  # waits 0.3 s, sets the holder's lock aside, records its slot
    resume.set()
    thread.join(30)
    assert not thread.is_alive() and pauses == [True]  # the holder had passed its check
    ids = {slot[1] for slot in json.loads(path.read_text(encoding="utf-8"))}
    assert ids == {mine, taken[0]}
    assert not isinstance(waiter.try_acquire(), str)  # 2 of 2 in flight: the budget is full
    holder.release(taken[0])
    waiter.release(mine)


def test_heartbeat_keeps_a_long_request_counted(tmp_path: Path) -> None:
    """A request longer than four leases keeps its slot: each time (injected) time moves on, the heartbeat
    renews the lease from the new time, and the other process's view sees the slot in flight."""
    path, lease = tmp_path / "budget.json", 0.3
    clock = FakeClock()
    holder = FileRateLimiter(path, 1, 30.0, lease=lease, clock=clock, sleep=clock.sleep)
    other = FileRateLimiter(path, 1, 30.0, lease=lease, clock=clock, sleep=clock.sleep)
    with holder.slot():
        seen = []
        for _ in range(6):  # 6 x 0.2 s of the injected clock: four leases
            clock.now += 0.2  # less than a lease since the last renewal
            renewed = [clock.now + lease]
            assert wait_until(lambda: _file_stamps(path) == renewed), _file_stamps(path)  # noqa: B023
            taken = other._try_take()
            assert not isinstance(taken, str)
            seen.append(taken[1])
    assert seen == ["full, 0 used in the last period and 1 in flight"] * 6
    assert _file_stamps(path) == [clock.now]  # stamped when it ended


def test_failed_renewals_are_logged_once_then_every_minute(caplog: pytest.LogCaptureFixture) -> None:
    """A store that is down fails every renewal (here 4 a second of the injected clock, for 100 s): the
    heartbeat's own thread logs it once, again after RENEW_LOG_EVERY s, and once when it works again."""
    clock = FakeClock()
    calls = [0]
    done = threading.Event()

    def renew(slot_ids: list[str]) -> None:
        calls[0] += 1
        if calls[0] > 1:
            clock.now += 0.25  # a renewal every quarter of a second
        if calls[0] > 400:
            done.set()
            return
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    caplog.set_level("WARNING", logger="airflow_provider_shortint.budget")
    heartbeat = Heartbeat(0.0005, renew, "test-heartbeat", where=" in the test store", clock=clock)
    heartbeat.add("slot-1")
    assert done.wait(60)
    with heartbeat.drop("slot-1"):
        pass
    messages = [r.getMessage() for r in caplog.records]
    assert RENEW_LOG_EVERY == 60.0
    assert len(messages) == 3, messages
    assert messages[0] == (
        "could not renew the lease of 1 budget slots in the test store (Error 111 connecting to "
        "127.0.0.1:6379. Connection refused.): they count as ended when their lease runs out; said again "
        "every 60 s while this lasts"
    )
    assert messages[1].startswith(
        "still cannot renew the budget leases in the test store after 60 s (241 failed"
    )
    assert messages[2] == "renewed the budget leases in the test store again after 100.0 s of failures"
