"""The control API under ``/_sandbox/``: JSON in and out, never rate-limited or faulted (docs/SANDBOX.md)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qs

from airflow_provider_shortint.sandbox.http_server import Reply, gateway_error, json_reply

if TYPE_CHECKING:
    from airflow_provider_shortint.sandbox.core import Sandbox

PREFIX: Final = "/_sandbox/"
ALLOWED: Final[dict[str, tuple[str, ...]]] = {
    "state": ("GET",),
    "stats": ("GET",),
    "config": ("GET", "POST"),
    "history": ("GET",),
    "publish": ("POST",),
    "reset_stats": ("POST",),
    "reset": ("POST",),
    "enqueue": ("POST",),
}


def handle(sandbox: Sandbox, method: str, path: str, query: str, body: bytes) -> Reply:
    """Answer one control request by calling the matching ``SandboxServer`` method."""
    name = path[len(PREFIX) :].strip("/")
    if name not in ALLOWED:
        return gateway_error(404, "not_found", f"no control endpoint {path!r}; try GET /_sandbox/state")
    if method not in ALLOWED[name]:
        return gateway_error(405, "method_not_allowed", f"{path} accepts {', '.join(ALLOWED[name])}")
    try:
        payload = json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return gateway_error(400, "bad_request", "body is not valid JSON")
    if not isinstance(payload, dict):
        return gateway_error(400, "bad_request", "body must be a JSON object")
    params = {k: v[0] for k, v in parse_qs(query).items()}
    try:
        if name in ("state", "config"):
            if method == "POST":
                sandbox.configure(**payload)
            return json_reply(200, sandbox.state())
        if name == "stats":
            return json_reply(200, sandbox.stats())
        if name == "history":
            symbol = str(params.get("symbol", payload.get("symbol", "")))
            return json_reply(200, {"symbol": symbol, "items": sandbox.history(symbol)})
        if name == "publish":
            market = str(params.get("market", payload.get("market", "")))
            return json_reply(
                200, {"market": market.upper(), "trade_date": sandbox.publish(market).isoformat()}
            )
        if name == "reset_stats":
            sandbox.reset_stats()
            return json_reply(200, {"ok": True})
        if name == "reset":
            sandbox.reset()
            return json_reply(200, {"ok": True})
        return _enqueue(sandbox, payload)
    except (ValueError, TypeError) as err:
        return gateway_error(400, "bad_request", str(err))


def _enqueue(sandbox: Sandbox, payload: dict[str, object]) -> Reply:
    """``POST /_sandbox/enqueue {"status": 503, "body": "...", "headers": {...}}``."""
    headers = payload.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError("headers must be a JSON object")
    status = payload.get("status", 200)
    text = payload.get("body", "")
    if isinstance(status, bool) or not isinstance(status, int) or not isinstance(text, str):
        raise ValueError("status must be an integer and body a string")
    return json_reply(200, {"queued": sandbox.enqueue(status, text, headers)})
