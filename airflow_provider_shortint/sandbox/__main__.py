"""CLI: ``python -m airflow_provider_shortint.sandbox --port 8765 [--opend-port 11111]``; runs until SIGTERM
or SIGINT."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from datetime import date
from types import FrameType

from airflow_provider_shortint.sandbox.config import END_MARKER_MODES, SandboxConfig
from airflow_provider_shortint.sandbox.server import SandboxServer


def _rate(text: str) -> float:
    """argparse type: a probability within 0..1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (every flag maps to a SandboxConfig field)."""
    d = SandboxConfig()
    p = argparse.ArgumentParser(
        prog="python -m airflow_provider_shortint.sandbox",
        description="Local short-interest API with deterministic data, a rate limit and injectable faults.",
    )
    p.add_argument("--host", default=d.host, help="address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (default %(default)s)")
    p.add_argument(
        "--opend-port",
        type=int,
        default=None,
        help="also serve the OpenD protocol (futu-api) on this port; 0 picks a free one (default: off)",
    )
    p.add_argument("--rate-limit-calls", type=int, default=d.rate_limit_calls, help="0 disables the limit")
    p.add_argument("--rate-limit-period", type=float, default=d.rate_limit_period, help="window in seconds")
    p.add_argument("--internal-error-rate", type=_rate, default=0.0, help="share of ret_code -5 answers")
    p.add_argument("--http5xx-rate", type=_rate, default=0.0, help="share of HTTP 500/502/503 answers")
    p.add_argument("--http429-rate", type=_rate, default=0.0, help="share of injected HTTP 429 answers")
    p.add_argument("--delay-rate", type=_rate, default=0.0, help="share of delayed answers")
    p.add_argument("--delay-seconds", type=float, default=d.delay_seconds, help="length of a delay")
    p.add_argument("--malformed-rate", type=_rate, default=0.0, help="share of truncated transfers")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the fault draws")
    p.add_argument("--end-marker", choices=END_MARKER_MODES, default=d.end_marker, help="last-page next_key")
    p.add_argument("--today", type=date.fromisoformat, default=d.today, help="published-through date")
    p.add_argument(
        "--token",
        default=os.environ.get("SHORTINT_SANDBOX_TOKEN") or None,
        help="require 'Authorization: Bearer TOKEN' (default: $SHORTINT_SANDBOX_TOKEN, kept out of `ps`)",
    )
    p.add_argument("--socket-timeout", type=float, default=d.socket_timeout, help="per-connection timeout")
    p.add_argument("--verbose", action="store_true", help="log requests to stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox until SIGTERM or SIGINT; prints one 'listening on URL' line to stdout."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = SandboxConfig(**{name: value for name, value in vars(args).items()})
    except ValueError as err:
        parser.error(str(err))
    server = SandboxServer(config)
    try:
        server.start()
    except ImportError as err:
        print(f"shortint sandbox: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        where = f"{config.host}:{config.port}" + (
            f" / OpenD {config.opend_port}" if config.opend_port is not None else ""
        )
        print(f"shortint sandbox: cannot listen on {where}: {err}", file=sys.stderr)
        return 1
    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"shortint sandbox listening on {server.url}", flush=True)
    if config.opend_port is not None:
        print(f"shortint sandbox OpenD listening on {config.host}:{server.opend_port}", flush=True)
    try:
        while not done.wait(0.2):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
