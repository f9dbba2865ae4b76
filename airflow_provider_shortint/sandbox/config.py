"""Settings of the sandbox: one frozen dataclass, validated when made, changed live through ``configure``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

from airflow_provider_shortint.sandbox import data

END_MARKER_MODES: Final = ("-1", "absent", "empty")
FAULT_KINDS: Final = ("internal_error", "http5xx", "http429", "delay", "malformed")
#: How often a serving loop checks for stop(): a stopped sandbox frees its ports within this (tests start
#: and stop one per test).
STOP_POLL: Final = 0.01


@dataclass(frozen=True)
class SandboxConfig:
    """Settings of a sandbox server; all but host and the ports can be changed live (``configure``).

    ``opend_port``: None serves REST only; 0 also serves the OpenD protocol on a free port (needs futu-api).
    ``opend_logged_in`` False plays a gateway not logged in to the quote server (OpenD door only).
    """

    host: str = "127.0.0.1"
    port: int = 0
    rate_limit_calls: int = 30
    rate_limit_period: float = 30.0
    internal_error_rate: float = 0.0
    http5xx_rate: float = 0.0
    http429_rate: float = 0.0
    fault_retry_after: float = 1.0  # seconds an injected 429 asks the client to wait
    delay_rate: float = 0.0
    delay_seconds: float = 2.0
    malformed_rate: float = 0.0
    seed: int = 0
    end_marker: str = "-1"
    today: date = data.DEFAULT_TODAY
    token: str | None = field(default=None, repr=False)
    socket_timeout: float = 10.0
    verbose: bool = False
    opend_port: int | None = None
    opend_logged_in: bool = True

    def __post_init__(self) -> None:
        for name in ("internal_error_rate", "http5xx_rate", "http429_rate", "delay_rate", "malformed_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {rate}")
        if self.rate_limit_calls < 0:
            raise ValueError(f"rate_limit_calls must be >= 0 (0 disables), got {self.rate_limit_calls}")
        if not self.rate_limit_period > 0:
            raise ValueError(f"rate_limit_period must be > 0, got {self.rate_limit_period}")
        if self.end_marker not in END_MARKER_MODES:
            raise ValueError(f"end_marker must be one of {END_MARKER_MODES}, got {self.end_marker!r}")
        if not 0 <= self.fault_retry_after <= 3600:
            raise ValueError(f"fault_retry_after must be within 0..3600 s, got {self.fault_retry_after}")
        if not self.delay_seconds >= 0:
            raise ValueError(f"delay_seconds must be >= 0, got {self.delay_seconds}")
        if not self.socket_timeout > 0:
            raise ValueError(f"socket_timeout must be > 0, got {self.socket_timeout}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within 0..65535, got {self.port}")
        if self.opend_port is not None and not 0 <= self.opend_port <= 65535:
            raise ValueError(
                f"opend_port must be within 0..65535 (or None: no OpenD port), got {self.opend_port}"
            )

    def public_dict(self) -> dict[str, Any]:
        """JSON-ready settings; the token itself is never shown, only whether one is set."""
        result: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name == "token":
                result["token_set"] = value is not None
            else:
                result[item.name] = value.isoformat() if isinstance(value, date) else value
        return result

    def fault_rates(self) -> dict[str, float]:
        """The fault rates keyed by fault kind."""
        return {kind: float(getattr(self, f"{kind}_rate")) for kind in FAULT_KINDS}


READ_ONLY: Final = frozenset({"host", "port", "opend_port"})
LIVE_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(SandboxConfig)) - READ_ONLY
_FLOAT_FIELDS: Final = frozenset(
    {"rate_limit_period", "delay_seconds", "socket_timeout", "fault_retry_after"}
    | {f"{kind}_rate" for kind in FAULT_KINDS}
)


def _coerce(name: str, value: object) -> object:
    """Convert a config value given in Python or JSON to the field's type, or raise ValueError."""
    if name not in LIVE_FIELDS:
        raise ValueError(f"unknown or read-only config field {name!r}; live fields: {sorted(LIVE_FIELDS)}")
    if name in _FLOAT_FIELDS or name in ("rate_limit_calls", "seed"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if name in _FLOAT_FIELDS:
            return number
        if number != int(number):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return int(number)
    if name == "today":
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            return date.fromisoformat(value)
        raise ValueError(f"today must be a date or 'YYYY-MM-DD', got {value!r}")
    if name == "token":
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return value
        raise ValueError("token must be a string or null")
    if name in ("verbose", "opend_logged_in"):
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be a boolean, got {value!r}")
    if not isinstance(value, str):  # end_marker
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


def make_config(config: SandboxConfig | None = None, **overrides: object) -> SandboxConfig:
    """A config from an optional base plus overrides (values coerced like the control API's)."""
    base = config or SandboxConfig()
    fields = {name: _coerce(name, value) for name, value in overrides.items() if name not in READ_ONLY}
    for name in READ_ONLY & set(overrides):
        fields[name] = overrides[name]
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]
