"""The admission step every API request passes, whichever door: the shared budget, then the fault draw."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date

from airflow_provider_shortint.sandbox import data
from airflow_provider_shortint.sandbox.budget import Budget
from airflow_provider_shortint.sandbox.config import SandboxConfig
from airflow_provider_shortint.sandbox.faults import Draw, FaultInjector
from airflow_provider_shortint.sandbox.state import PublishClock, Stats


@dataclass(frozen=True)
class Admission:
    """The gate's verdict on one request.

    ``wait`` set: the budget refused it (seconds until a slot frees). ``injected_429``: a fault answers
    "too many requests" without using a slot. Otherwise serve ``published`` with the faults of ``draw``.
    """

    config: SandboxConfig
    wait: float | None = None
    injected_429: bool = False
    draw: Draw = field(default_factory=lambda: Draw(frozenset()))
    published: dict[data.Market, date] = field(default_factory=dict)

    def fired(self, kind: str) -> bool:
        """True when the fault ``kind`` fires for this request."""
        return kind in self.draw.fired


class Gate:
    """Budget, faults, statistics and the publish clock, in the order both front ends apply them."""

    def __init__(self, budget: Budget, faults: FaultInjector, stats: Stats, clock: PublishClock) -> None:
        self.budget = budget
        self.faults = faults
        self.stats = stats
        self.clock = clock

    def admit(self, config: SandboxConfig) -> Admission:
        """Take a budget slot and draw the faults for one request already counted by its front end."""
        now = time.monotonic()
        wait = self.budget.take(now, config.rate_limit_calls, config.rate_limit_period)
        if wait is not None:
            self.stats.rate_limited()
            return Admission(config, wait=wait)
        draw = self.faults.draw(config)
        if "http429" in draw.fired:
            self.budget.give_back(now)
            self.stats.fault("http429")
            return Admission(config, injected_429=True)
        self.stats.admitted(now, draw.fired)
        return Admission(config, draw=draw, published=self.clock.snapshot())
