"""Request economy: requests the operator spends ÷ the fewest the API allows, on the sandbox.

* full backfill (mode="full", page_size=90): minimum Σ ceil(records / 90) per symbol (1 for none);
* incremental run on an up-to-date lake: minimum one request per symbol;
* incremental run after the sandbox published one new trading date per market: one per symbol;
* incremental run after five publishes (the lake lags several records): still one per symbol.

Symbols: HK and US of every history length (short, exactly a multiple of 90 where one exists, long).
Requests are counted by the server (``stats()["requests"]``) and by the hook (``requests_made``).
"""

from __future__ import annotations

import math
import tempfile
from typing import Any

from bench._util import Report, quiet_logs, register_connection, run_operator

PAGE_SIZE = 90
US_TICKERS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "XOM", "AMD", "IBM", "KO")


def pick_symbols(server: Any, quick: bool) -> list[str]:
    """HK and US symbols covering short, boundary (multiple of 90) and long histories."""
    sizes: dict[str, int] = {}
    for code in range(1, 200 if quick else 400):
        symbol = f"HK.{code:05d}"
        try:
            sizes[symbol] = len(server.history(symbol))
        except ValueError:
            continue
    hk = sorted(sizes, key=lambda s: (sizes[s], s))
    boundary = [s for s in hk if sizes[s] % PAGE_SIZE in (0, 1, PAGE_SIZE - 1)][:4]
    spread = hk[:: max(1, len(hk) // (8 if quick else 20))]
    us = [f"US.{ticker}" for ticker in US_TICKERS[: 4 if quick else len(US_TICKERS)]]
    return sorted(set(boundary + spread + ["HK.00700"])) + us


def run(quick: bool = False) -> Report:
    from airflow_provider_shortint.sandbox import SandboxConfig, SandboxServer

    quiet_logs()
    report = Report("request_economy", "requests spent ÷ the minimum (page_size=90)")
    with (
        SandboxServer(SandboxConfig(rate_limit_calls=0)) as server,
        tempfile.TemporaryDirectory(prefix="bench-econ-") as lake,
    ):
        symbols = pick_symbols(server, quick)
        sizes = {symbol: len(server.history(symbol)) for symbol in symbols}
        conn_id = register_connection(
            "shortint_bench_econ", server.url, rate_limit_calls=1000, rate_limit_period=1
        )

        def step(label: str, mode: str, minimum: int, expect_rows: int | None) -> None:
            server.reset_stats()
            summary = run_operator(conn_id, lake, symbols, mode, PAGE_SIZE)
            served = server.stats()["requests"]
            ratio = served / minimum
            rows = summary["rows_written"]
            rows_ok = expect_rows is None or rows == expect_rows
            report.add(
                label,
                f"{served} requests, {rows:,} rows written",
                f"min {minimum}",
                f"{ratio:.2f}",
                "1.00",
                ratio == 1.0 and rows_ok and summary["hook_requests"] == served,
            )

        full_min = sum(max(1, math.ceil(size / PAGE_SIZE)) for size in sizes.values())
        step("full backfill", "full", full_min, sum(sizes.values()))
        step("incremental, lake up to date", "incremental", len(symbols), 0)
        server.publish("HK")
        server.publish("US")
        step("incremental after 1 publish/market", "incremental", len(symbols), len(symbols))
        before = {symbol: len(server.history(symbol)) for symbol in symbols}
        for _ in range(5):
            server.publish("HK")
            server.publish("US")
        added = sum(len(server.history(symbol)) - before[symbol] for symbol in symbols)
        step("incremental after 5 publishes/market", "incremental", len(symbols), added)

    counts = sorted(sizes.values())
    boundary = sum(1 for n in counts if n % PAGE_SIZE == 0)
    report.notes.append(
        f"{len(symbols)} symbols ({sum(s.startswith('HK.') for s in symbols)} HK, "
        f"{sum(s.startswith('US.') for s in symbols)} US), {counts[0]}..{counts[-1]} records each, "
        f"{boundary} with an exact multiple of {PAGE_SIZE}; rows written checked against the sandbox"
    )
    return report


if __name__ == "__main__":
    print(run().render())
