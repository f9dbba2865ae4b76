"""Client overhead per request: ``hook.get_page`` minus a bare ``requests.Session.get`` of the same URL.

The sandbox runs in its own process (``python -m airflow_provider_shortint.sandbox --rate-limit-calls 0``)
so that its request handling does not compete for this process's GIL. Both clients keep one
keep-alive session and fetch the same full page (``HK.00700``, count=90); the raw client reads the
body (``response.content``) and nothing else. The hook adds: symbol/count validation, the rate limiter
(30 slots, as by default, with a period of 1 ms so that it never waits), retries bookkeeping,
``json.loads``, the envelope checks and ``parse_items``. Requests alternate hook / raw; medians.

Goal: overhead <= 2 ms per request, beside the 1,000 ms per request that 30 calls / 30 s allow.
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench._util import REPO, Report, median, quiet_env, quiet_logs, register_connection

SYMBOL = "HK.00700"
COUNT = 90


def start_sandbox() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_shortint.sandbox", "--port", "0", "--rate-limit-calls", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=quiet_env(),
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"sandbox did not start: {line!r}")
    return process, line.split()[-1]


def run(quick: bool = False) -> Report:
    import requests

    from airflow_provider_shortint import __version__
    from airflow_provider_shortint.hooks.short_interest import ShortInterestHook

    quiet_logs()
    n = 100 if quick else 300
    report = Report("client_overhead", f"hook.get_page vs raw requests.Session.get ({SYMBOL}, count={COUNT})")
    process, url = start_sandbox()
    try:
        conn_id = register_connection(
            "shortint_bench_overhead", url, rate_limit_calls=30, rate_limit_period=0.001
        )
        hook = ShortInterestHook(shortint_conn_id=conn_id)
        raw = requests.Session()
        raw.headers["Accept"] = "application/json"
        raw.headers["User-Agent"] = f"airflow-provider-shortint/{__version__}"
        endpoint = f"{url}/v1/quote/{SYMBOL}/short-selling/short-interest"

        def hook_call() -> int:
            return len(hook.get_page(SYMBOL, count=COUNT).items)

        def raw_call() -> int:
            response = raw.get(endpoint, params={"count": COUNT}, timeout=30)
            return len(response.content)

        for _ in range(20):  # warm-up: connections, imports, caches
            hook_call()
            raw_call()
        hook_times: list[float] = []
        raw_times: list[float] = []
        pairs: list[float] = []
        for i in range(n):
            order = (hook_call, raw_call) if i % 2 == 0 else (raw_call, hook_call)
            measured: dict[object, float] = {}
            for call in order:
                start = time.perf_counter()
                call()
                measured[call] = time.perf_counter() - start
            hook_times.append(measured[hook_call])
            raw_times.append(measured[raw_call])
            pairs.append(measured[hook_call] - measured[raw_call])
        hook.close()
        raw.close()
    finally:
        process.terminate()
        process.wait(timeout=10)

    t_hook, t_raw = median(hook_times), median(raw_times)
    overhead = t_hook - t_raw
    report.add(
        f"per request, median of {n} each",
        f"{t_hook * 1000:.2f} ms hook",
        f"{t_raw * 1000:.2f} ms raw",
        f"{t_hook / t_raw:.2f}",
    )
    report.add(
        "client overhead (hook - raw)",
        f"{overhead * 1000:.2f} ms",
        "1000 ms/request allowed",
        f"{overhead / 1.0:.4f}",
        "<= 2 ms",
        overhead <= 0.002,
    )
    report.add("  median of paired differences", f"{median(pairs) * 1000:.2f} ms", "", "", "(info)")
    return report


if __name__ == "__main__":
    print(run().render())
