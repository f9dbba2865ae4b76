"""What the front ends (REST, OpenD, the control API) need from the sandbox: its shared state and its
control surface. ``server.SandboxServer`` provides it; the front ends depend on this description only,
so the server can start them without either importing the other."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any, Protocol

from airflow_provider_shortint.sandbox import data
from airflow_provider_shortint.sandbox.config import SandboxConfig
from airflow_provider_shortint.sandbox.gate import Gate
from airflow_provider_shortint.sandbox.state import Stats


class Sandbox(Protocol):
    """The shared state of both doors (gate, counters) and the control calls of ``/_sandbox/``."""

    counters: Stats
    gate: Gate

    @property
    def config(self) -> SandboxConfig: ...

    def pause(self, seconds: float) -> None: ...

    def publish(self, market: str) -> date: ...

    def configure(self, **fields: object) -> SandboxConfig: ...

    def stats(self) -> dict[str, Any]: ...

    def reset_stats(self) -> None: ...

    def reset(self) -> None: ...

    def enqueue(
        self, status: int = 200, body: str | bytes = "", headers: Mapping[str, str] | None = None
    ) -> int: ...

    def history(self, symbol: str) -> list[data.Item]: ...

    def state(self) -> dict[str, Any]: ...
