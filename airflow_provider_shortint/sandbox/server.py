"""The sandbox's lifecycle and public control surface: ``SandboxServer`` owns the shared state
(histories, publish clock, budget, faults, statistics) and starts the front ends that serve it
(REST, optionally OpenD)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import date
from types import TracebackType
from typing import TYPE_CHECKING, Any

from airflow_provider_shortint.sandbox import contract, data
from airflow_provider_shortint.sandbox.budget import Budget
from airflow_provider_shortint.sandbox.config import (
    END_MARKER_MODES,
    FAULT_KINDS,
    LIVE_FIELDS,
    STOP_POLL,
    SandboxConfig,
    make_config,
)
from airflow_provider_shortint.sandbox.contract import SPECIAL_SYMBOLS, decode_key, encode_key
from airflow_provider_shortint.sandbox.faults import FaultInjector
from airflow_provider_shortint.sandbox.gate import Gate
from airflow_provider_shortint.sandbox.http_server import HTTPServer
from airflow_provider_shortint.sandbox.rest import RestFrontEnd
from airflow_provider_shortint.sandbox.state import PublishClock, Stats

if TYPE_CHECKING:
    from airflow_provider_shortint.sandbox.opend import OpenDServer

__all__ = [
    "END_MARKER_MODES",
    "FAULT_KINDS",
    "SPECIAL_SYMBOLS",
    "SandboxConfig",
    "SandboxServer",
    "decode_key",
    "encode_key",
    "make_config",
]


class SandboxServer:
    """The sandbox: serves from background threads (``start``/``stop`` or ``with``), steered in-process.

    ``SandboxServer(SandboxConfig(...), opend_port=0)`` also serves the OpenD protocol (see ``opend_port``).
    """

    def __init__(self, config: SandboxConfig | None = None, **overrides: object) -> None:
        self._config = make_config(config, **overrides)
        self._stopping = threading.Event()
        self._config_lock = threading.Lock()
        self.counters = Stats()
        self.clock = PublishClock(self._config.today)
        self.budget = Budget()
        self.faults = FaultInjector(self._config.seed)
        self.gate = Gate(self.budget, self.faults, self.counters, self.clock)
        self.rest = RestFrontEnd(self)
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._opend: OpenDServer | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SandboxServer:
        """Bind and serve from daemon threads; returns self. OpenD needs futu-api (ImportError says so)."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        if self._config.opend_port is not None:
            from airflow_provider_shortint.sandbox.opend import OpenDServer

            self._opend = OpenDServer(self, self._config.host, self._config.opend_port)
        try:
            self._httpd = HTTPServer((self._config.host, self._config.port), self.rest)
        except BaseException:
            self._stop_opend()
            raise
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": STOP_POLL},
            name="shortint-sandbox",
            daemon=True,
        )
        self._thread.start()
        if self._opend is not None:
            self._opend.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the sockets (idempotent); delayed answers in flight are cut short."""
        self._stopping.set()
        self._stop_opend()
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _stop_opend(self) -> None:
        opend, self._opend = self._opend, None
        if opend is not None:
            opend.stop()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def config(self) -> SandboxConfig:
        """The current settings."""
        return self._config

    @property
    def host(self) -> str:
        """The host the server is bound to."""
        return self._config.host

    @property
    def port(self) -> int:
        """The bound REST port (the free one picked when the config says 0)."""
        if self._httpd is None:
            raise RuntimeError("sandbox is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8765``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def opend_port(self) -> int:
        """The bound OpenD port; RuntimeError when the sandbox runs without one (``opend_port=None``)."""
        if self._opend is None:
            raise RuntimeError("sandbox is not serving OpenD: start it with opend_port=0 (or a port)")
        return self._opend.port

    def pause(self, seconds: float) -> None:
        """Sleep for an injected delay, waking early when the server stops."""
        self._stopping.wait(seconds)

    # ------------------------------------------------------------------ control (Python API)

    def publish(self, market: str) -> date:
        """Advance ``market`` ("HK" or "US") to its next trading date and return that date."""
        return self.clock.publish(market)

    def published(self, market: str) -> date:
        """The date ``market`` is published through (records after it do not exist yet)."""
        return self.clock.published(market)

    def configure(self, **fields: object) -> SandboxConfig:
        """Change settings live (any field but host/ports); ``seed`` reseeds, ``today`` resets publishing."""
        unknown = set(fields) - LIVE_FIELDS
        if unknown:
            raise ValueError(f"unknown or read-only config fields: {sorted(unknown)}")
        with self._config_lock:
            self._config = make_config(self._config, **fields)
            if "seed" in fields:
                self.faults.reseed(self._config.seed)
            if "today" in fields:
                self.clock.reset(self._config.today)
            return self._config

    def stats(self) -> dict[str, Any]:
        """Counters of API requests over both doors (control requests excluded); keys in docs/SANDBOX.md."""
        return self.counters.snapshot()

    def reset_stats(self) -> None:
        """Zero every counter of :meth:`stats`."""
        self.counters.reset()

    def reset(self) -> None:
        """Back to the start: stats, canned queue, rate-limit window, fault RNG, publish dates."""
        with self._config_lock:
            self.counters.reset()
            self.clock.reset(self._config.today)
            self.rest.canned.clear()
            self.budget.clear()
            self.faults.reseed(self._config.seed)

    def enqueue(
        self, status: int = 200, body: str | bytes = "", headers: Mapping[str, str] | None = None
    ) -> int:
        """Queue a canned HTTP response for the next REST API request (FIFO); returns the queue length.

        Content-Type defaults to application/json and Content-Length to the body's length.
        """
        return self.rest.canned.push(status, body, headers)

    def history(self, symbol: str) -> list[data.Item]:
        """Every item the API would return for ``symbol`` right now, newest first, exactly as served.

        Raises ValueError for malformed or unsupported symbols and for the special error symbols.
        """
        canonical = contract.canonical(symbol)
        if isinstance(canonical, contract.Refusal):
            raise ValueError(canonical.message)
        if canonical in contract.SYMBOL_ERRORS:
            raise ValueError(f"{canonical} is a special symbol: {SPECIAL_SYMBOLS[canonical]}")
        return data.history(canonical, self.published(data.market_of(canonical)))

    def state(self) -> dict[str, Any]:
        """Published dates, settings and fault rates (what ``GET /_sandbox/state`` returns)."""
        config = self._config
        return {
            "url": self.url if self._httpd is not None else None,
            "opend_port": self._opend.port if self._opend is not None else None,
            "published": {market: day.isoformat() for market, day in self.clock.snapshot().items()},
            "config": config.public_dict(),
            "fault_rates": config.fault_rates(),
            "queued": len(self.rest.canned),
        }
