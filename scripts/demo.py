"""`make demo`: backfill -> new trading date -> daily -> report, on the local sandbox, with no configuration.

Everything lives under ./.demo (AIRFLOW_HOME with a SQLite DB, the lake, the reports, the shared
rate-limit state); the DAGs are the repository's ./dags. Each step is a real `airflow dags test` run
in a subprocess. The sandbox is started on a free loopback port and stopped on exit, failures included.

    .venv/bin/python scripts/demo.py [--rate-limit-period 3] [--chunk-size 5]

By default the sandbox's 30-requests-per-30-s limit is time-scaled to 30 per 3 s (and the connection's
client-side budget with it) so the demo takes a minute or two; `--rate-limit-period 30` runs it at the
real API's pace.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo"
LAKE = DEMO / "lake"
REPORTS = DEMO / "reports"
STEP_LOGS = DEMO / "step-logs"
VENV_BIN = Path(sys.executable).parent
READY_PREFIX = "shortint sandbox listening on "
STEP_TIMEOUT = 900.0


class StepFailed(Exception):
    """A demo step failed; its output tail has been printed."""


class Demo:
    def __init__(self, period: float, chunk_size: int) -> None:
        self.period = period
        self.chunk_size = chunk_size
        self.started = time.monotonic()
        self.sandbox: subprocess.Popen[str] | None = None
        self.sandbox_log: IO[str] = io.StringIO()
        self.url = ""
        self.env: dict[str, str] = {}

    # -- output ---------------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(f"[demo {time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def run(self, name: str, args: Sequence[str], timeout: float = STEP_TIMEOUT) -> str:
        """Run a command of this venv in the demo environment; on failure print its tail and stop."""
        STEP_LOGS.mkdir(parents=True, exist_ok=True)
        log = STEP_LOGS / f"{name}.log"
        began = time.monotonic()
        try:
            result = subprocess.run(
                list(args), env=self.env, cwd=DEMO, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as err:
            output = _text(err.stdout) + _text(err.stderr)
            log.write_text(output)
            self._tail(output)
            raise StepFailed(f"{name}: timed out after {timeout:.0f} s (log: {_rel(log)})") from None
        output = result.stdout + result.stderr
        log.write_text(output)
        if result.returncode != 0:
            self._tail(output)
            raise StepFailed(f"{name}: exit code {result.returncode} (log: {_rel(log)})")
        self.say(f"  done in {time.monotonic() - began:.1f} s (log: {_rel(log)})")
        return output

    @staticmethod
    def _tail(output: str, lines: int = 40) -> None:
        print("----- last lines of output -----", file=sys.stderr)
        print("\n".join(output.rstrip().splitlines()[-lines:]), file=sys.stderr)
        print("--------------------------------", file=sys.stderr)

    # -- sandbox --------------------------------------------------------------------------------------

    def start_sandbox(self) -> None:
        DEMO.mkdir(exist_ok=True)
        self.sandbox_log = (DEMO / "sandbox.log").open("w")
        self.sandbox = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airflow_provider_shortint.sandbox",
                "--port",
                "0",
                "--rate-limit-calls",
                "30",
                "--rate-limit-period",
                str(self.period),
            ],
            stdout=subprocess.PIPE,
            stderr=self.sandbox_log,
            text=True,
            cwd=REPO,
        )
        stdout = self.sandbox.stdout
        assert stdout is not None
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(30)
        text = line[0].strip() if line else ""
        if not text.startswith(READY_PREFIX):
            self.sandbox_log.flush()
            error = (DEMO / "sandbox.log").read_text()[-2000:]
            raise StepFailed(f"the sandbox did not start: {text or 'no output in 30 s'} {error}".strip())
        self.url = text.split()[-1]

    def stop_sandbox(self) -> None:
        process = self.sandbox
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        self.sandbox_log.close()
        self.say("sandbox stopped")

    def publish(self, market: str) -> str:
        request = urllib.request.Request(
            f"{self.url}/_sandbox/publish?market={market}", method="POST", data=b""
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.load(response)["trade_date"])

    # -- the demo -------------------------------------------------------------------------------------

    def setup(self) -> None:
        for folder in (LAKE, REPORTS, DEMO / "ratelimit"):
            shutil.rmtree(folder, ignore_errors=True)
        DEMO.mkdir(exist_ok=True)
        connection = {
            "conn_type": "shortint",
            "host": self.url,
            "extra": {
                "rate_limit_calls": 30,
                "rate_limit_period": self.period,
                "rate_limit_state_dir": str(DEMO / "ratelimit"),
                "max_retries": 5,
            },
        }
        self.env = {
            # Whatever Airflow settings the caller's shell has, the demo uses only its own.
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_HOME": str(DEMO),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_SHORTINT_DEFAULT": json.dumps(connection),
            "SHORTINT_LAKE_PATH": str(LAKE),
            "SHORTINT_REPORT_DIR": str(REPORTS),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def main(self) -> None:
        airflow = str(VENV_BIN / "airflow")
        self.say(f"starting the sandbox (rate limit 30 requests / {self.period:g} s)")
        self.start_sandbox()
        if self.period != 30:
            self.say(
                f"sandbox at {self.url}; its limit is time-scaled to 30 / {self.period:g} s and so is the "
                "connection's budget (production: 30 / 30 s; --rate-limit-period 30 for the real pace)"
            )
        else:
            self.say(f"sandbox at {self.url}, limit 30 requests / 30 s")
        self.setup()
        self.say(f"AIRFLOW_HOME={_rel(DEMO)}  DAGs={_rel(REPO / 'dags')}  lake={_rel(LAKE)}")

        marker = DEMO / ".migrated"
        if marker.exists():
            self.say("metadata DB: already migrated")
        else:
            self.say("metadata DB: airflow db migrate (SQLite, once)")
            self.run("db-migrate", [airflow, "db", "migrate"])
            marker.write_text("ok\n")
        self.say("pool shortint_api: 4 slots (caps concurrent API tasks)")
        self.run(
            "pool",
            [airflow, "pools", "set", "shortint_api", "4", "shortint API: tasks sharing the 30/30 s budget"],
        )

        self.say(f"[1/3] shortint_backfill: full history of 20 symbols, chunks of {self.chunk_size}")
        self.run(
            "shortint_backfill",
            [
                airflow,
                "dags",
                "test",
                "shortint_backfill",
                "--conf",
                json.dumps({"chunk_size": self.chunk_size}),
            ],
        )
        before = lake_summary(LAKE)
        for market in ("HK", "US"):
            self.say(f"  lake: {market} {_describe(before.get(market))}")

        published = {market: self.publish(market) for market in ("HK", "US")}
        self.say(f"sandbox publishes a new trading date: HK {published['HK']}, US {published['US']}")

        self.say("[2/3] shortint_daily: sensors see the new dates, incremental loads")
        self.run("shortint_daily", [airflow, "dags", "test", "shortint_daily"])
        after = lake_summary(LAKE)
        for market in ("HK", "US"):
            added = after.get(market, {}).get("rows", 0) - before.get(market, {}).get("rows", 0)
            self.say(f"  lake: {market} +{added} row(s), now up to {after.get(market, {}).get('last')}")
            if after.get(market, {}).get("last") != published[market]:
                raise StepFailed(f"the daily load did not bring {market} up to {published[market]}")

        self.say("[3/3] shortint_report: top movers table and history chart")
        self.run("shortint_report", [airflow, "dags", "test", "shortint_report"])
        report = newest_report(REPORTS)
        if report is None:
            raise StepFailed(f"shortint_report wrote no report under {_rel(REPORTS)}")

        print_summary(after, report, time.monotonic() - self.started)


def lake_summary(lake: Path) -> dict[str, dict[str, Any]]:
    """Rows, symbols, date range and files per market, read back from the lake itself."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if not lake.exists():
        return {}
    partitioning = ds.partitioning(pa.schema([("market", pa.string()), ("dt", pa.string())]), flavor="hive")
    dataset = ds.dataset(str(lake), format="parquet", partitioning=partitioning, exclude_invalid_files=True)
    table = dataset.to_table(columns=["symbol", "trade_date", "market", "dt"])
    frame = table.to_pandas()
    duplicates = int(frame.duplicated(["symbol", "trade_date"]).sum())
    if duplicates:
        raise StepFailed(f"the lake holds {duplicates} duplicate (symbol, trade_date) row(s)")
    result: dict[str, dict[str, Any]] = {}
    for market, rows in frame.groupby(frame["market"].astype(str)):
        result[str(market)] = {
            "rows": len(rows),
            "symbols": rows["symbol"].nunique(),
            "first": str(rows["trade_date"].min()),
            "last": str(rows["trade_date"].max()),
            "files": len(list((lake / f"market={market}").glob("dt=*/*.parquet"))),
        }
    return result


def newest_report(reports: Path) -> dict[str, Path] | None:
    folders = sorted(p for p in reports.glob("*") if (p / "top_movers.md").exists())
    if not folders:
        return None
    folder = folders[-1]
    return {
        "csv": folder / "top_movers.csv",
        "markdown": folder / "top_movers.md",
        "chart": folder / "short_interest_history.png",
    }


def print_summary(lake: dict[str, dict[str, Any]], report: dict[str, Path], elapsed: float) -> None:
    print()
    print(f"What landed in {_rel(LAKE)}:")
    print(f"  {'market':<7}{'rows':>7}{'symbols':>9}  {'first':<11} {'last':<11}{'files':>7}")
    for market, info in sorted(lake.items()):
        print(
            f"  {market:<7}{info['rows']:>7}{info['symbols']:>9}  {info['first']:<11} {info['last']:<11}"
            f"{info['files']:>7}"
        )
    print()
    print("Report:")
    for kind, path in report.items():
        size = path.stat().st_size if path.exists() else 0
        print(f"  {kind:<9}{_rel(path)}  ({size:,} bytes)")
    lines = report["markdown"].read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    if table:
        print()
        print("Top movers (first rows of the Markdown table):")
        for line in table[:8]:
            print(f"  {line}")
    print()
    print(f"demo finished in {elapsed:.0f} s")


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "no rows"
    return f"{info['rows']} rows, {info['symbols']} symbols, {info['first']} .. {info['last']}"


def _rel(path: Path) -> str:
    try:
        return f"./{path.relative_to(REPO)}"
    except ValueError:
        return str(path)


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rate-limit-period",
        type=float,
        default=3.0,
        help="window of the 30-request limit, sandbox and connection alike (default 3; the API's is 30)",
    )
    parser.add_argument("--chunk-size", type=int, default=5, help="symbols per mapped backfill task")
    args = parser.parse_args(argv)
    demo = Demo(args.rate_limit_period, args.chunk_size)
    try:
        demo.main()
    except StepFailed as err:
        print(f"demo FAILED: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo interrupted", file=sys.stderr)
        return 130
    finally:
        demo.stop_sandbox()
    return 0


if __name__ == "__main__":
    sys.exit(main())
