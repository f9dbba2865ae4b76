"""A local writer does not wait for ever on a partition lock that a stopped process holds.

A child process takes the partition's flock and is SIGSTOP'd (a stopped writer, or one stuck on a hung
NFS server). The writer must log that it waits, for which partition and holder, then give up with a
LakeWriteError naming the lake and partition, leaving the lake as it was and readable.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shortint.lake import LakeError, LakeWriteError, open_lake
from airflow_provider_shortint.records import rows_to_table

D3 = dt.date(2026, 5, 15)
HOLD = (
    "import fcntl, os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
)


def table(symbols: list[str]) -> Any:
    return rows_to_table(
        [{"symbol": s, "trade_date": D3, "timestamp": 1, "close_price": 1.0} for s in symbols]
    )


def test_writer_logs_and_gives_up_on_a_stopped_lock_holder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lake = open_lake(str(tmp_path / "lake"))
    lake.upsert(table(["HK.00005"]))
    lock_file = tmp_path / "lake" / "_locks" / "market=HK_year=2026.lock"
    assert lock_file.exists()
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"locked\n"
        os.kill(child.pid, signal.SIGSTOP)
        lake._store.lock_timeout = 1.0  # type: ignore[attr-defined]
        lake._store.lock_log_after = 0.1  # type: ignore[attr-defined]
        with (
            caplog.at_level(logging.INFO, logger="airflow_provider_shortint.lake.stores.local"),
            pytest.raises(LakeWriteError) as info,
        ):
            lake.upsert(table(["HK.00700"]))
        waits = [r.getMessage() for r in caplog.records if "waiting for the lock" in r.getMessage()]
        assert len(waits) == 1, waits  # logged once, not on every poll
        assert "market=HK/year=2026" in waits[0] and f"pid {child.pid}" in waits[0]
        error = info.value
        assert isinstance(error, OSError) and isinstance(error, LakeError)
        assert error.errno == errno.ETIMEDOUT
        message = str(error)
        assert str(tmp_path / "lake") in message and "market=HK/year=2026" in message
        assert f"pid {child.pid}" in message and "1 s" in message
        assert "no partition was written" in " ".join(error.__notes__)
        assert lake.read(["symbol"]).column("symbol").to_pylist() == ["HK.00005"]  # readable, unchanged
    finally:
        os.kill(child.pid, signal.SIGCONT)
        child.communicate(timeout=30)  # closes stdin: the holder exits and the kernel drops its lock
    assert lake.upsert(table(["HK.00700"])).rows_written == 1
    assert lake.read(["symbol"]).column("symbol").to_pylist() == ["HK.00005", "HK.00700"]


def test_a_briefly_held_lock_is_waited_for(tmp_path: Path) -> None:
    lake = open_lake(str(tmp_path / "lake"))
    lake.upsert(table(["HK.00005"]))
    lock_file = tmp_path / "lake" / "_locks" / "market=HK_year=2026.lock"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"locked\n"
        # the holder exits once its stdin closes, while the writer below polls for the lock
        import threading

        threading.Timer(0.3, lambda: child.stdin.close() if child.stdin else None).start()
        assert lake.upsert(table(["HK.00700"])).rows_written == 1
    finally:
        child.kill()
        child.wait(30)
    assert lake.read(["symbol"]).column("symbol").to_pylist() == ["HK.00005", "HK.00700"]
