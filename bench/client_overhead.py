"""Client overhead per request: ``hook.get_page`` beside bare HTTP clients fetching the same URL.

The sandbox runs in its own process (``python -m airflow_provider_shortint.sandbox --rate-limit-calls 0``)
so that its request handling does not compete for this process's GIL. Every client keeps one keep-alive
connection and fetches the same full page (``HK.00700``, count=90); the bare clients read the body and
nothing else:

- the hook: symbol/count validation, the rate limiter (30 slots, as by default, with a period of 1 ms so
  that it never waits), retries bookkeeping, one aiohttp request on the hook's own event loop under its
  deadline and byte cap, ``json.loads``, the envelope checks and ``parse_items``;
- bare aiohttp: a ``ClientSession.get`` driven the same way (one ``asyncio.Runner.run`` per request), so
  hook - bare aiohttp is what the provider adds;
- bare requests: ``requests.Session.get``, the blocking client a synchronous hook would otherwise use, so
  the hook / bare requests ratio shows what driving aiohttp from synchronous code costs.

Calls rotate hook / aiohttp / requests (the order shifts every round); medians.
Goal: overhead <= 2 ms per request, beside the 1,000 ms per request that 30 calls / 30 s allow.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable

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
    import aiohttp
    import requests

    from airflow_provider_shortint.hooks.short_interest import ShortInterestHook
    from airflow_provider_shortint.transports.rest.http import BASE_HEADERS

    quiet_logs()
    n = 100 if quick else 300
    report = Report(
        "client_overhead", f"hook.get_page vs bare aiohttp and requests GETs ({SYMBOL}, count={COUNT})"
    )
    process, url = start_sandbox()
    runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
    try:
        conn_id = register_connection(
            "shortint_bench_overhead", url, rate_limit_calls=30, rate_limit_period=0.001
        )
        hook = ShortInterestHook(shortint_conn_id=conn_id)
        endpoint = f"{url}/v1/quote/{SYMBOL}/short-selling/short-interest"

        async def open_session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(headers=BASE_HEADERS, auto_decompress=False)

        session = runner.run(open_session())
        blocking = requests.Session()
        blocking.headers.update(BASE_HEADERS)

        async def aiohttp_get() -> int:
            async with session.get(endpoint, params={"count": COUNT}) as response:
                return len(await response.read())

        def hook_call() -> int:
            return len(hook.get_page(SYMBOL, count=COUNT).items)

        def aiohttp_call() -> int:
            return runner.run(aiohttp_get())

        def requests_call() -> int:
            return len(blocking.get(endpoint, params={"count": COUNT}, timeout=30).content)

        calls: list[Callable[[], int]] = [hook_call, aiohttp_call, requests_call]
        for _ in range(20):  # warm-up: connections, imports, caches
            for call in calls:
                call()
        times: dict[Callable[[], int], list[float]] = {call: [] for call in calls}
        pairs: list[float] = []
        for i in range(n):
            measured: dict[Callable[[], int], float] = {}
            for call in calls[i % 3 :] + calls[: i % 3]:
                start = time.perf_counter()
                call()
                measured[call] = time.perf_counter() - start
            for call, seconds in measured.items():
                times[call].append(seconds)
            pairs.append(measured[hook_call] - measured[aiohttp_call])
        hook.close()
        blocking.close()
        runner.run(session.close())
    finally:
        runner.close()
        process.terminate()
        process.wait(timeout=10)

    t_hook, t_aiohttp, t_requests = (median(times[call]) for call in calls)
    overhead = t_hook - t_aiohttp
    report.add(
        f"per request, median of {n} each",
        f"{t_hook * 1000:.2f} ms hook",
        f"{t_aiohttp * 1000:.2f} ms bare aiohttp",
        f"{t_hook / t_aiohttp:.2f}",
    )
    report.add(
        "client overhead (hook - bare aiohttp)",
        f"{overhead * 1000:.2f} ms",
        "1000 ms/request allowed",
        f"{overhead / 1.0:.4f}",
        "<= 2 ms",
        overhead <= 0.002,
    )
    report.add("  median of paired differences", f"{median(pairs) * 1000:.2f} ms", "", "", "(info)")
    report.add(
        "hook beside a bare blocking client",
        f"{t_hook * 1000:.2f} ms hook",
        f"{t_requests * 1000:.2f} ms bare requests",
        f"{t_hook / t_requests:.2f}",
        "(info)",
    )
    return report


if __name__ == "__main__":
    print(run().render())
