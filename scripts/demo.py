"""`make demo`: backfill -> new trading date -> daily -> report over REST, then the daily DAG again over
OpenD into the same lake, all on the local sandbox, with no configuration.

Everything lives under ./.demo (AIRFLOW_HOME with a SQLite DB, the lake, the reports, the shared
rate-limit state); the DAGs are the repository's ./dags. Each step is a real `airflow dags test` run
in a subprocess. The sandbox serves both doors (REST, and the OpenD protocol the futu-api SDK speaks)
on free loopback ports and is stopped on exit, failures included. The last step points the DAGs at
the connection `futu_opend_default` (`SHORTINT_CONN_ID=futu_opend_default`); without futu-api
(`[futu]`) it is skipped.

    .venv/bin/python scripts/demo.py [--rate-limit-period 3] [--chunk-size 5] [--rest-only] [--delta]

``--delta`` writes a Delta Lake table (./.demo/delta, `SHORTINT_TABLE_FORMAT=delta`) instead of the
Parquet lake (./.demo/lake): the same DAGs, the same steps (`make demo DEMO_ARGS=--delta`).

By default the sandbox's 30-requests-per-30-s limit is time-scaled to 30 per 3 s (and the connection's
client-side budget with it) so the demo takes a minute or two; `--rate-limit-period 30` runs it at the
real API's pace.
"""

from __future__ import annotations

import argparse
import importlib.util
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

from demo_lake import (
    REPO,
    StepFailed,
    added,
    describe,
    lake_summary,
    newest_report,
    print_summary,
    rel,
    rows_on,
)

DEMO = REPO / ".demo"
LAKE = DEMO / "lake"
REPORTS = DEMO / "reports"
STEP_LOGS = DEMO / "step-logs"
VENV_BIN = Path(sys.executable).parent
READY_PREFIX = "shortint sandbox listening on "
OPEND_READY_PREFIX = "shortint sandbox OpenD listening on "
STEP_TIMEOUT = 900.0
MARKETS = ("HK", "US")
#: Both connections name one budget: the REST and the OpenD door of one account (DESIGN §9).
BUDGET_KEY = "shortint-demo-account"


class Demo:
    def __init__(self, period: float, chunk_size: int, opend: bool, delta: bool = False) -> None:
        self.period = period
        self.chunk_size = chunk_size
        self.opend = opend
        self.delta = delta
        #: The Parquet lake, or the Delta table with --delta.
        self.lake = DEMO / "delta" if delta else LAKE
        self.started = time.monotonic()
        self.sandbox: subprocess.Popen[str] | None = None
        self.sandbox_log: IO[str] = io.StringIO()
        self.reader = threading.Thread()
        self.ready_lines: list[str] = []
        self.url = ""
        self.opend_port = 0
        self.env: dict[str, str] = {}

    # -- output ---------------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(f"[demo {time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def run(self, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> str:
        """Run a command of this venv in the demo environment (or ``env``); on failure print its tail
        and stop."""
        STEP_LOGS.mkdir(parents=True, exist_ok=True)
        log = STEP_LOGS / f"{name}.log"
        began = time.monotonic()
        timeout = STEP_TIMEOUT
        try:
            result = subprocess.run(
                list(args), env=env or self.env, cwd=DEMO, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as err:
            output = _text(err.stdout) + _text(err.stderr)
            log.write_text(output)
            self._tail(output)
            raise StepFailed(f"{name}: timed out after {timeout:.0f} s (log: {rel(log)})") from None
        output = result.stdout + result.stderr
        log.write_text(output)
        if result.returncode != 0:
            self._tail(output)
            raise StepFailed(f"{name}: exit code {result.returncode} (log: {rel(log)})")
        self.say(f"  done in {time.monotonic() - began:.1f} s (log: {rel(log)})")
        return output

    @staticmethod
    def _tail(output: str, lines: int = 40) -> None:
        print("----- last lines of output -----", file=sys.stderr)
        print("\n".join(output.rstrip().splitlines()[-lines:]), file=sys.stderr)
        print("--------------------------------", file=sys.stderr)

    # -- sandbox --------------------------------------------------------------------------------------

    def start_sandbox(self) -> None:
        """Start both doors of one sandbox (one set of histories, one publish clock, one budget); its
        "listening" lines are read in the background (loading futu-api takes a few seconds)."""
        DEMO.mkdir(exist_ok=True)
        self.sandbox_log = (DEMO / "sandbox.log").open("w")
        command = [sys.executable, "-m", "airflow_provider_shortint.sandbox", "--port", "0"]
        command += ["--opend-port", "0"] if self.opend else []
        command += ["--rate-limit-calls", "30", "--rate-limit-period", str(self.period)]
        self.sandbox = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self.sandbox_log, text=True, cwd=REPO
        )
        stdout = self.sandbox.stdout
        assert stdout is not None
        wanted = 2 if self.opend else 1

        def read() -> None:
            while len(self.ready_lines) < wanted and (line := stdout.readline()):
                self.ready_lines.append(line.strip())

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()

    def wait_sandbox(self, timeout: float = 60.0) -> None:
        """The sandbox's URL and OpenD port from its "listening" lines, or a failure with its log."""
        self.reader.join(timeout)
        lines = list(self.ready_lines)
        ready = (READY_PREFIX, OPEND_READY_PREFIX)[: 2 if self.opend else 1]
        if len(lines) < len(ready) or not all(
            line.startswith(p) for line, p in zip(lines, ready, strict=False)
        ):
            self.sandbox_log.flush()
            error = (DEMO / "sandbox.log").read_text()[-2000:]
            shown = " / ".join(lines) or f"no output in {timeout:.0f} s"
            raise StepFailed(f"the sandbox did not start: {shown} {error}".strip())
        self.url = lines[0].split()[-1]
        if self.opend:
            self.opend_port = int(lines[1].rpartition(":")[2])

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

    def served(self) -> dict[str, int]:
        """Requests the sandbox answered so far, per door ("rest", "opend")."""
        with urllib.request.urlopen(f"{self.url}/_sandbox/stats", timeout=10) as response:
            return {k: int(v) for k, v in json.load(response).get("by_transport", {}).items()}

    def connection(self, conn_type: str) -> str:
        """AIRFLOW_CONN_SHORTINT_DEFAULT for one door; the same budget extras for both."""
        extra = {
            "rate_limit_calls": 30,
            "rate_limit_period": self.period,
            "rate_limit_state_dir": str(DEMO / "ratelimit"),
            "rate_limit_key": BUDGET_KEY,
            "max_retries": 5,
        }
        if conn_type == "futu_opend":
            door = {"host": "127.0.0.1", "port": self.opend_port}
        else:
            door = {"host": self.url}
        return json.dumps({"conn_type": conn_type, **door, "extra": extra})

    # -- the demo -------------------------------------------------------------------------------------

    def setup(self) -> None:
        for folder in (self.lake, REPORTS, DEMO / "ratelimit"):
            shutil.rmtree(folder, ignore_errors=True)
        DEMO.mkdir(exist_ok=True)
        self.env = {
            # Whatever Airflow settings the caller's shell has, the demo uses only its own.
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_HOME": str(DEMO),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "SHORTINT_LAKE_PATH": str(self.lake),
            "SHORTINT_TABLE_FORMAT": "delta" if self.delta else "parquet",
            "SHORTINT_REPORT_DIR": str(REPORTS),
            # Waiting sensors poll the sandbox every 5 s (the triggerer's setting; 15 min by default).
            "SHORTINT_POKE_INTERVAL": "5",
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def main(self) -> None:
        airflow = str(VENV_BIN / "airflow")
        steps = 4 if self.opend else 3
        self.say(f"starting the sandbox (rate limit 30 requests / {self.period:g} s)")
        self.start_sandbox()
        self.setup()
        self.say(f"AIRFLOW_HOME={rel(DEMO)}  DAGs={rel(REPO / 'dags')}  lake={rel(self.lake)}")
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
        self.wait_sandbox()
        self.env["AIRFLOW_CONN_SHORTINT_DEFAULT"] = self.connection("shortint")
        doors = f"REST {self.url}" + (f", OpenD 127.0.0.1:{self.opend_port}" if self.opend else "")
        if self.period != 30:
            self.say(
                f"sandbox at {doors}; its limit is time-scaled to 30 / {self.period:g} s and so is the "
                "connection's budget (production: 30 / 30 s; --rate-limit-period 30 for the real pace)"
            )
        else:
            self.say(f"sandbox at {doors}, limit 30 requests / 30 s")

        self.say(
            f"[1/{steps}] shortint_backfill over REST: full history of 20 symbols, "
            f"chunks of {self.chunk_size}"
        )
        conf = json.dumps({"chunk_size": self.chunk_size})
        self.run("shortint_backfill", [airflow, "dags", "test", "shortint_backfill", "--conf", conf])
        before = lake_summary(self.lake)
        for market in MARKETS:
            self.say(f"  lake: {market} {describe(before.get(market))}")

        self.say(f"[2/{steps}] shortint_daily over REST: sensors see the new dates, incremental loads")
        after = self.daily("shortint_daily", before, self.env)

        self.say(f"[3/{steps}] shortint_report: top movers table and history chart")
        self.run("shortint_report", [airflow, "dags", "test", "shortint_report"])
        report = newest_report(REPORTS)
        if report is None:
            raise StepFailed(f"shortint_report wrote no report under {rel(REPORTS)}")

        opend_lines: list[str] = []
        if self.opend:
            self.say(
                f"[4/{steps}] shortint_daily over OpenD: the same DAG, SHORTINT_CONN_ID=futu_opend_default "
                f"(futu-api SDK -> 127.0.0.1:{self.opend_port}), the same lake"
            )
            served = self.served()
            env = {
                **self.env,
                "AIRFLOW_CONN_FUTU_OPEND_DEFAULT": self.connection("futu_opend"),
                "SHORTINT_CONN_ID": "futu_opend_default",
            }
            final = self.daily("shortint_daily-opend", after, env)
            opend_lines = self.opend_added(after, final, served)
            after = final
        print_summary(self.lake, after, report, opend_lines, time.monotonic() - self.started)

    def daily(self, name: str, before: dict[str, dict[str, Any]], env: dict[str, str]) -> dict[str, Any]:
        """Publish a new trading date per market, run shortint_daily, check it loaded that date."""
        published = {market: self.publish(market) for market in MARKETS}
        self.say(f"  sandbox publishes a new trading date: HK {published['HK']}, US {published['US']}")
        self.run(name, [str(VENV_BIN / "airflow"), "dags", "test", "shortint_daily"], env=env)
        after = lake_summary(self.lake)
        for market, new in added(before, after).items():
            self.say(f"  lake: {market} +{new['rows']} row(s), now up to {after[market]['last']}")
            if new["dates"] != [published[market]]:
                raise StepFailed(f"{name} brought {market} dates {new['dates']}, not [{published[market]}]")
        return after

    def opend_added(self, before: dict[str, Any], after: dict[str, Any], served: dict[str, int]) -> list[str]:
        """Lines on what the OpenD run put in the lake, checked: the SDK's missing columns are null and
        timestamps are milliseconds as in the REST rows."""
        from airflow_provider_shortint.markets import MARKETS as REGISTRY

        now = self.served()
        requests = {door: now.get(door, 0) - served.get(door, 0) for door in ("opend", "rest")}
        if requests["opend"] == 0 or requests["rest"] != 0:
            raise StepFailed(f"the OpenD step was not served over OpenD alone: {requests}")
        lines = [
            f"What the OpenD run added to the same lake ({requests['opend']} requests over OpenD, "
            f"{requests['rest']} over REST; timestamps stored in ms like the REST rows):",
            f"  {'market':<7}{'rows':>5}  {'new date':<11} null: the columns the SDK does not carry",
        ]
        for market, new in added(before, after).items():
            rows = rows_on(self.lake, market, new["dates"])
            missing = REGISTRY[market].opend_missing
            if not set(missing) <= set(rows["all_null"]) or (rows["min_timestamp"] or 0) < 10**12:
                raise StepFailed(f"the OpenD rows of {market} are not what DESIGN §8 says: {rows}")
            dates = ", ".join(new["dates"])
            lines.append(f"  {market:<7}{'+' + str(new['rows']):>5}  {dates:<11} {', '.join(missing)}")
        return lines


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
    parser.add_argument("--rest-only", action="store_true", help="skip the OpenD step")
    parser.add_argument("--delta", action="store_true", help="write a Delta Lake table, not the Parquet lake")
    args = parser.parse_args(argv)
    opend = not args.rest_only and importlib.util.find_spec("futu") is not None
    if not args.rest_only and not opend:
        print('futu-api is not installed (pip install ".[futu]"): the OpenD step is skipped', flush=True)
    demo = Demo(args.rate_limit_period, args.chunk_size, opend, args.delta)
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
