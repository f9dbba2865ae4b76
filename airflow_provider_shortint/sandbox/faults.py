"""Fault injection shared by the front ends: which faults fire for one request, from a seeded RNG.

What a fault looks like on the wire is each front end's business (see docs/SANDBOX.md):
internal_error (ret_code -5 / retType -1), http5xx (HTTP 500/502/503 / retType -100), http429
(HTTP 429 / a frequency-limit reply), delay (the answer waits ``delay_seconds``), malformed (a
truncated body / a truncated frame, then the connection is dropped).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from airflow_provider_shortint.sandbox.config import FAULT_KINDS, SandboxConfig


@dataclass(frozen=True)
class Draw:
    """The faults that fire for one request, and the HTTP status an http5xx fault uses."""

    fired: frozenset[str]
    bad_gateway: int = 500


class FaultInjector:
    """Deterministic fault draws: the same seed and request order give the same faults."""

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def reseed(self, seed: int) -> None:
        """Restart the draws from ``seed``."""
        with self._lock:
            self._rng = random.Random(seed)

    def draw(self, config: SandboxConfig) -> Draw:
        """One draw per fault kind against the configured rates."""
        with self._lock:
            draws = {kind: self._rng.random() for kind in FAULT_KINDS}
            bad_gateway = self._rng.choice((500, 502, 503))
        rates = config.fault_rates()
        return Draw(frozenset(kind for kind, value in draws.items() if value < rates[kind]), bad_gateway)
