"""OpenD transport: client overhead per request against a bare futu-api call, and budget use.

1. Overhead. The sandbox runs in its own process (``--opend-port 0 --rate-limit-calls 0``). A bare
   ``OpenQuoteContext.get_short_interest("HK.00700", num=50)`` (the SDK's own frames) alternates with
   ``FutuOpenDHook.get_page("HK.00700", count=50)`` on one open context each. The hook adds: validation,
   a budget slot (30 slots, period 1 ms: never waits), the retry policy, the error check, frames ->
   items (seconds -> ms) and ``parse_items``. Medians. Goal: <= 2 ms per request.
2. Budget. Multi-page HK histories fetched through ``FutuOpenDHook.get_history`` (pages of 50) from the
   sandbox's OpenD door, time-scaled to 30 calls / 1.5 s on the server and on the connection. From the
   server's admitted-request timestamps: steady-state use = period / mean(t[i] - t[i-30]) (goal >= 0.97),
   the most requests in any window (<= 30), and "request too frequent" refusals (goal 0).
3. Byte bound. A hostile gateway (tests/_fixtures_opend_hostile.py) answers with a frame that declares
   2 GiB and streams 256 MiB of it (64 with --quick) before closing. Peak RSS growth of one request, in a
   fresh process per variant (``_util.measure_peak``): the hook (goal: below the frame cap + 64 MiB)
   against a bare futu-api ``get_short_interest`` on the same gateway (which buffers what is streamed).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time

from bench._util import REPO, Report, median, quiet_env, quiet_logs

SYMBOL = "HK.00700"
CALLS = 30
PERIOD = 1.5
PAGE = 50
MIN_RECORDS = 101  # > 2 pages of 50: every symbol needs at least three requests


def register_opend(conn_id: str, port: int, **extra: object) -> str:
    conn = {
        "conn_type": "futu_opend",
        "host": "127.0.0.1",
        "port": port,
        "extra": {"backoff_base": 0.05, **extra},
    }
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
    return conn_id


def start_sandbox() -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_shortint.sandbox",
            "--port",
            "0",
            "--opend-port",
            "0",
            "--rate-limit-calls",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=quiet_env(),
    )
    assert process.stdout is not None
    for _ in range(5):
        line = process.stdout.readline()
        if "OpenD listening on" in line:
            return process, int(line.rsplit(":", 1)[1])
    process.kill()
    raise RuntimeError("sandbox did not report its OpenD port")


def overhead(report: Report, quick: bool) -> None:
    from airflow_provider_shortint.hooks.futu_opend import FutuOpenDHook
    from airflow_provider_shortint.transports.opend.sdk import load_futu

    n = 100 if quick else 300
    process, port = start_sandbox()
    try:
        futu = load_futu()  # the same quiet logging for both clients
        bare = futu.OpenQuoteContext(host="127.0.0.1", port=port)
        hook = FutuOpenDHook(
            register_opend("opend_bench_overhead", port, rate_limit_calls=30, rate_limit_period=0.001)
        )

        def hook_call() -> int:
            return len(hook.get_page(SYMBOL, count=PAGE).items)

        def bare_call() -> int:
            ret, _, hk_df = bare.get_short_interest(SYMBOL, num=PAGE)
            assert ret == futu.RET_OK
            return len(hk_df)

        for _ in range(20):  # warm-up: connections, imports, caches
            hook_call()
            bare_call()
        times: dict[object, list[float]] = {hook_call: [], bare_call: []}
        pairs: list[float] = []
        for i in range(n):
            order = (hook_call, bare_call) if i % 2 == 0 else (bare_call, hook_call)
            measured = {}
            for call in order:
                start = time.perf_counter()
                call()
                measured[call] = time.perf_counter() - start
            for call, seconds in measured.items():
                times[call].append(seconds)
            pairs.append(measured[hook_call] - measured[bare_call])
        hook.close()
        bare.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
    t_hook, t_bare = median(times[hook_call]), median(times[bare_call])
    extra = t_hook - t_bare
    report.add(
        f"per request, median of {n} each",
        f"{t_hook * 1000:.2f} ms hook",
        f"{t_bare * 1000:.2f} ms bare SDK",
        f"{t_hook / t_bare:.2f}",
    )
    report.add(
        "client overhead (hook - bare SDK)",
        f"{extra * 1000:.2f} ms",
        "1000 ms/request allowed",
        f"{extra:.4f}",
        "<= 2 ms",
        extra <= 0.002,
    )
    report.add("  median of paired differences", f"{median(pairs) * 1000:.2f} ms", "", "", "(info)")


def budget(report: Report, quick: bool) -> None:
    from airflow_provider_shortint.hooks.futu_opend import FutuOpenDHook
    from airflow_provider_shortint.sandbox import SandboxConfig, SandboxServer
    from bench.ratelimit_efficiency import max_in_window, pick_symbols

    n_symbols = 12 if quick else 40
    config = SandboxConfig(rate_limit_calls=CALLS, rate_limit_period=PERIOD)
    with SandboxServer(config, opend_port=0) as server:
        chosen = pick_symbols(server, n_symbols, MIN_RECORDS)
        minimum = sum(math.ceil(size / PAGE) for _, size in chosen)
        conn_id = register_opend(
            "opend_bench_budget", server.opend_port, rate_limit_calls=CALLS, rate_limit_period=PERIOD
        )
        hook = FutuOpenDHook(conn_id)
        hook.get_latest(SYMBOL)  # warm-up (imports, connection), not measured; then let the window drain
        time.sleep(PERIOD * 1.2)
        server.reset_stats()
        started = time.perf_counter()
        rows = sum(hook.get_history(symbol, page_size=PAGE).num_rows for symbol, _ in chosen)
        wall = time.perf_counter() - started
        hook.close()
        stats = server.stats()
    stamps = sorted(stats["timestamps"])
    n = len(stamps)
    gaps = [stamps[i] - stamps[i - CALLS] for i in range(CALLS, n)]
    steady = PERIOD / (sum(gaps) / len(gaps))
    peak = max_in_window(stamps, PERIOD)
    refused = int(stats["rate_limited"])
    report.add(
        "budget workload",
        f"{len(chosen)} HK symbols, {rows:,} rows, {n} requests",
        f"min {minimum} requests",
        f"{n / minimum:.2f}",
    )
    report.add(
        "steady-state use of the budget",
        f"{steady * CALLS:.2f} calls / {PERIOD} s",
        f"{CALLS} allowed",
        f"{steady:.3f}",
        ">= 0.97",
        steady >= 0.97,
    )
    report.add("max admitted in any window", str(peak), f"{CALLS} allowed", "", f"<= {CALLS}", peak <= CALLS)
    report.add("'request too frequent' refusals", str(refused), "", "", "0", refused == 0)
    report.notes.append(
        f"budget run wall {wall:.1f} s; client counted {hook.requests_made} requests, server {n}"
    )


def byte_bound(report: Report, quick: bool) -> None:
    from airflow_provider_shortint.transports.opend.link import MAX_FRAME_BYTES
    from bench._util import mib, peak_memory
    from tests._fixtures_opend_hostile import HostileGateway

    streamed = (64 if quick else 256) * 2**20
    gateway = HostileGateway()
    try:
        gateway.behave(answer="huge", only="00005", stream_limit=streamed)
        hook = peak_memory("bench.opend", "hook", str(gateway.port))["rss_growth"]
        bare = peak_memory("bench.opend", "bare", str(gateway.port))["rss_growth"]
    finally:
        gateway.close()
    bound = MAX_FRAME_BYTES + 64 * 2**20
    report.add(
        f"declared 2 GiB frame ({streamed >> 20} MiB streamed): peak RSS growth",
        f"{mib(hook)} hook",
        f"{mib(bare)} bare SDK",
        f"{hook / bare:.4f}",
        f"< {mib(bound)}",
        hook < bound,
    )


def _memory(variant: str, port: int) -> None:
    """``python -m bench.opend --memory hook|bare PORT``: one request for the hostile frame, warmed up
    first; prints the peak memory of that request (one JSON line)."""
    from airflow_provider_shortint.exceptions import ShortInterestResponseError
    from airflow_provider_shortint.hooks.futu_opend import FutuOpenDHook
    from airflow_provider_shortint.transports.opend.sdk import load_futu
    from bench._util import measure_peak

    quiet_logs()
    conn_id = register_opend("opend_bench_hostile", port, max_retries=3, timeout=5)
    warm = FutuOpenDHook(conn_id)
    for _ in range(3):
        warm.get_page(SYMBOL, count=3)
    warm.close()
    with measure_peak() as peak:
        if variant == "hook":
            hook = FutuOpenDHook(conn_id)
            with contextlib.suppress(ShortInterestResponseError):  # the frame cap: as expected
                hook.get_page("HK.00005", count=PAGE)
            hook.close()
        else:
            ctx = load_futu().OpenQuoteContext(host="127.0.0.1", port=port)
            ctx.get_short_interest("HK.00005", num=PAGE)
            ctx.close()
    print(json.dumps(peak))


def run(quick: bool = False) -> Report:
    quiet_logs()
    report = Report(
        "opend", f"FutuOpenDHook vs bare futu-api ({SYMBOL}, num={PAGE}); budget {CALLS} / {PERIOD} s"
    )
    overhead(report, quick)
    budget(report, quick)
    byte_bound(report, quick)
    return report


if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory"]:
        _memory(sys.argv[2], int(sys.argv[3]))
    else:
        print(run().render())
