"""kill -9 a lake writer at random moments: every file stays readable and a clean re-run converges.

A supervisor subprocess imports the lake once (Airflow takes seconds to import) and, per trial, forks a
writer that loops upserting and staging-then-committing varied tables over 4 partitions; the test
SIGKILLs the writer after a random delay. The supervisor blocks ``import pandas``: the whole write
path runs without pandas.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TRIALS = 20
HK = ["HK.00005", "HK.00700", "HK.01299", "HK.09988"]
US = ["US.AAPL", "US.BRK.B", "US.MSFT", "US.TSLA"]
# Ten weeks across a new year: x 2 markets = 4 partitions (2025 and 2026 of HK and US).
DAYS = [dt.date(2025, 11, 17) + dt.timedelta(days=7 * k) for k in range(10)]


def make_rows(symbols: list[str], days: list[dt.date], version: int) -> list[dict[str, Any]]:
    """Rows of the given version; version 0 is the intended data."""
    rows = []
    for day in days:
        for symbol in symbols:
            seed = sum(map(ord, symbol)) * 31 + day.toordinal()
            row: dict[str, Any] = {
                "symbol": symbol,
                "trade_date": day,
                "timestamp": seed * 1000,
                "close_price": seed % 1000 / 10 + version,
                "last_close_price": seed % 999 / 10,
            }
            if symbol.startswith("HK."):
                row.update(avg_daily_short_volume=seed + version, aggregated_short=seed // 3)
            else:
                row.update(shares_short=seed * 7 + version, days_to_cover=version / 2 if version else None)
            rows.append(row)
    return rows


SUPERVISOR = r"""
import json, os, random, sys, traceback


class NoPandas:
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("pandas is blocked in the lake writer", name=name)
        return None


sys.meta_path.insert(0, NoPandas())
import airflow_provider_shortint.lake as lake_module

assert "pyarrow" not in sys.modules, "importing the lake module must not import pyarrow"
import pyarrow, pyarrow.compute, pyarrow.parquet  # warm up: forked writers start at once

from airflow_provider_shortint.records import rows_to_table
from test_lake_crash import DAYS, HK, US, make_rows


def write_forever(lake_path, seed):
    rng = random.Random(seed)
    lake = lake_module.open_lake(lake_path)
    while True:
        days = rng.sample(DAYS, rng.randint(1, len(DAYS)))
        symbols = rng.sample(HK + US, rng.randint(1, len(HK + US)))
        rows = rows_to_table(make_rows(symbols, days, rng.choice([0, 1, 2, 3])))
        if rng.random() < 0.5:
            lake.upsert(rows)
        else:  # a staged load: a kill may land between staging and the commit, or inside the commit
            lake.stage(rows, run="crash", name=f"writer-{seed}")
            lake.commit_staged("crash")


print("@@ready", flush=True)
for line in sys.stdin:
    command = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # log lines must not mix with the protocol
        try:
            write_forever(command["lake"], command["seed"])
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(3)
    print("@@" + json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    killed_by = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    print("@@" + json.dumps({"signal": killed_by}), flush=True)
assert "pandas" not in sys.modules
"""


@pytest.fixture
def supervisor() -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert receive(proc) == "ready", "the supervisor did not start"
        yield proc
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def receive(proc: subprocess.Popen[str]) -> str:
    """The supervisor's next protocol line ("@@..."), skipping any log output."""
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        assert line, "the supervisor exited"
        if line.startswith("@@"):
            return line[2:].strip()


def check_every_file(root: Path) -> int:
    """Every *.parquet file is complete and in the lake schema; returns the number of temp files seen."""
    import pyarrow.parquet as pq

    from airflow_provider_shortint.records import lake_schema

    for path in root.rglob("*.parquet"):
        assert not path.name.startswith("."), path
        table = pq.read_table(path, partitioning=None)
        assert table.schema.equals(lake_schema()), path
        keys = list(
            zip(table.column("symbol").to_pylist(), table.column("trade_date").to_pylist(), strict=True)
        )
        assert keys == sorted(set(keys)), path
    return sum(1 for path in root.rglob(".*") if path.is_file())


def test_sigkill_never_leaves_a_broken_lake(tmp_path: Path, supervisor: subprocess.Popen[str]) -> None:
    from airflow_provider_shortint.lake import open_lake
    from airflow_provider_shortint.records import rows_to_table

    assert supervisor.stdin is not None and supervisor.stdout is not None
    root = tmp_path / "lake"
    lake = open_lake(root)
    rng = random.Random(20260515)
    temps_seen = 0
    started = time.monotonic()
    for trial in range(TRIALS):
        supervisor.stdin.write(json.dumps({"lake": str(root), "seed": trial}) + "\n")
        supervisor.stdin.flush()
        pid = json.loads(receive(supervisor))["pid"]
        time.sleep(rng.uniform(0.02, 0.35))
        os.kill(pid, signal.SIGKILL)
        outcome = json.loads(receive(supervisor))
        assert outcome["signal"] == signal.SIGKILL, f"trial {trial}: the writer died by itself: {outcome}"
        temps_seen += check_every_file(root)
        table = lake.read(["symbol", "trade_date"])  # readers skip dead writers' temp files
        keys = list(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))
        assert len(keys) == len(set(keys)), f"trial {trial}: duplicate keys"
    print(f"{TRIALS} kills in {time.monotonic() - started:.1f} s; {temps_seen} temp file(s) seen")

    intended = rows_to_table(make_rows(HK + US, DAYS, 0))
    lake.commit_staged("crash")  # what a killed writer staged: committed (any version), then overwritten
    lake.upsert(intended)  # one clean re-run
    reference = open_lake(tmp_path / "reference")
    reference.upsert(intended)
    got, want = lake.read(), reference.read()
    assert got.drop_columns(["ingested_at"]).equals(want.drop_columns(["ingested_at"]))
    assert got.num_rows == len(HK + US) * len(DAYS)
    assert sorted(p.relative_to(root) for p in root.rglob("*.parquet")) == sorted(
        p.relative_to(tmp_path / "reference") for p in (tmp_path / "reference").rglob("*.parquet")
    )
    # The re-run cleared every stale temp file of the partitions (under their lock); a stager killed
    # mid-write may have left one in the staging folder, which discarding the run removes.
    assert not [p for p in root.rglob(".*") if p.is_file() and "_staging" not in p.parts]
    lake.discard_staged("crash")
    assert check_every_file(root) == 0
    assert lake.upsert(intended).rows_written == 0
