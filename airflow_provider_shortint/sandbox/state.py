"""Shared state of the sandbox: the publish clock and the request statistics (both doors count here)."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from datetime import date
from typing import Any, Final

from airflow_provider_shortint.exceptions import InvalidParameterError
from airflow_provider_shortint.markets import get_market
from airflow_provider_shortint.sandbox import calendars
from airflow_provider_shortint.sandbox.config import FAULT_KINDS

MAX_TIMESTAMPS: Final = 100_000
TRANSPORTS: Final = ("rest", "opend")


def market_code(market: str) -> calendars.Market:
    """Validate a market name ("hk" -> "HK"); ValueError names the registered markets."""
    try:
        return get_market(market).code
    except InvalidParameterError as err:  # a ValueError is what the control API answers 400 for
        raise ValueError(err.message) from None


class PublishClock:
    """The date each market is published through; ``publish`` makes the next record date appear."""

    def __init__(self, today: date) -> None:
        self._lock = threading.Lock()
        self._published: dict[calendars.Market, date] = {}
        self.reset(today)

    def reset(self, today: date) -> None:
        """Every market published through ``today``."""
        with self._lock:
            self._published = {market: today for market in calendars.MARKETS}

    def publish(self, market: str) -> date:
        """Advance ``market`` to its next record date and return that date."""
        key = market_code(market)
        with self._lock:
            day = calendars.next_record_date(key, self._published[key])
            self._published[key] = day
            return day

    def published(self, market: str) -> date:
        """The date ``market`` is published through."""
        key = market_code(market)
        with self._lock:
            return self._published[key]

    def snapshot(self) -> dict[calendars.Market, date]:
        """A copy of every market's published date."""
        with self._lock:
            return dict(self._published)


class Stats:
    """Counters of API requests (control and session requests excluded); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mono0 = time.monotonic()
        self._unix0 = time.time()
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._requests = 0
            self._by_transport: Counter[str] = Counter()
            self._by_status: Counter[int] = Counter()
            self._by_ret_type: Counter[str] = Counter()
            self._by_symbol: Counter[str] = Counter()
            self._faults: Counter[str] = Counter()
            self._rate_limited = 0
            self._timestamps: deque[float] = deque(maxlen=MAX_TIMESTAMPS)

    def request(self, transport: str, symbol_key: str) -> None:
        """Count one API request that arrived through ``transport``."""
        with self._lock:
            self._requests += 1
            self._by_transport[transport] += 1
            self._by_symbol[symbol_key] += 1

    def admitted(self, now: float, faults: frozenset[str]) -> None:
        """Record a request that passed the budget (its wall-clock time) and the faults it drew."""
        with self._lock:
            self._timestamps.append(self._unix0 + (now - self._mono0))
            for kind in faults:
                self._faults[kind] += 1

    def fault(self, kind: str) -> None:
        """Count a fault that answered before admission (an injected 429)."""
        with self._lock:
            self._faults[kind] += 1

    def rate_limited(self) -> None:
        """Count a request the budget refused."""
        with self._lock:
            self._rate_limited += 1

    def status(self, status: int) -> None:
        """Record the HTTP status a REST request was answered with."""
        with self._lock:
            self._by_status[status] += 1

    def ret_type(self, outcome: str) -> None:
        """Record how an OpenD request ended: its retType ("0", "-1"...) or "dropped"."""
        with self._lock:
            self._by_ret_type[outcome] += 1

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready counters (see docs/SANDBOX.md for the keys)."""
        with self._lock:
            return {
                "requests": self._requests,
                "by_transport": {name: self._by_transport[name] for name in TRANSPORTS},
                "by_status": {str(k): v for k, v in sorted(self._by_status.items())},
                "by_ret_type": dict(sorted(self._by_ret_type.items())),
                "by_symbol": dict(sorted(self._by_symbol.items())),
                "rate_limited": self._rate_limited,
                "faults": {kind: self._faults[kind] for kind in FAULT_KINDS},
                "timestamps": list(self._timestamps),
            }
