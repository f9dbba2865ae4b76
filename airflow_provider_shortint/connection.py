"""Read and validate the ``shortint`` Airflow connection: base URL, token and extras (DESIGN.md §4)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_shortint.exceptions import InvalidParameterError

KNOWN_EXTRAS = (
    "timeout",
    "verify_ssl",
    "rate_limit_calls",
    "rate_limit_period",
    "max_retries",
    "backoff_base",
    "rate_limit_state_dir",
)


@dataclass(frozen=True)
class ConnectionSettings:
    """What the hook takes from the Airflow connection, validated."""

    base_url: str
    token: str | None = field(repr=False)
    timeout: float = 30.0
    verify_ssl: bool = True
    rate_limit_calls: int = 30
    rate_limit_period: float = 30.0
    max_retries: int = 5
    backoff_base: float = 1.0
    rate_limit_state_dir: str | None = None

    @classmethod
    def from_connection(cls, conn: Any) -> ConnectionSettings:
        """Read host/port/password/extras of an Airflow connection; bad values raise one clear error."""
        conn_id = getattr(conn, "conn_id", None)
        host = (conn.host or "").strip()
        if not host:
            raise InvalidParameterError(
                f"connection {conn_id!r} has no host: set it to the API's base URL, e.g. https://api.example.com"
            )
        if "://" not in host:
            host = f"https://{host}"
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidParameterError(f"connection {conn_id!r} host {host!r} is not an http(s) URL")
        netloc = parts.netloc
        if conn.port and parts.port is None:
            netloc = f"{netloc}:{int(conn.port)}"
        base_url = f"{parts.scheme}://{netloc}{parts.path}".rstrip("/")
        extra = conn.extra_dejson or {}

        def get(name: str, convert: Callable[[Any], Any], default: Any, valid: Callable[[Any], bool]) -> Any:
            raw = extra.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = convert(raw)
            except (TypeError, ValueError):
                value = None
            if value is None or not valid(value):
                raise InvalidParameterError(
                    f"connection {conn_id!r} extra {name!r} has an invalid value {raw!r}"
                )
            return value

        unknown = sorted(set(extra) - set(KNOWN_EXTRAS))
        if unknown:
            logging.getLogger(__name__).warning("connection %r: ignoring unknown extras %s", conn_id, unknown)
        return cls(
            base_url=base_url,
            token=conn.password or None,
            timeout=get("timeout", float, 30.0, lambda v: v > 0),
            verify_ssl=get("verify_ssl", _to_bool, True, lambda v: True),
            rate_limit_calls=get("rate_limit_calls", _to_int, 30, lambda v: v >= 1),
            rate_limit_period=get("rate_limit_period", float, 30.0, lambda v: v > 0),
            max_retries=get("max_retries", _to_int, 5, lambda v: 0 <= v <= 100),
            backoff_base=get("backoff_base", float, 1.0, lambda v: v >= 0),
            rate_limit_state_dir=get("rate_limit_state_dir", str, None, bool),
        )


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text)


def _to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    number = float(value)
    return int(number) if number.is_integer() else None
