"""The REST front end: DESIGN §2 on top of the shared contract, gate and faults (plus the control API)."""

from __future__ import annotations

import hmac
import math
import re
import threading
from collections import deque
from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, unquote

from airflow_provider_shortint.sandbox import contract, control
from airflow_provider_shortint.sandbox.config import SandboxConfig
from airflow_provider_shortint.sandbox.http_server import Reply, api_error, gateway_error, json_reply
from airflow_provider_shortint.transports.rest.settings import REST_MAX_COUNT

if TYPE_CHECKING:
    from airflow_provider_shortint.sandbox.core import Sandbox

DEFAULT_COUNT: Final = 30
API_PREFIX: Final = "/v1/quote/"
API_SUFFIX: Final = "/short-selling/short-interest"
_COUNT_RE: Final = re.compile(r"[0-9]{1,6}")
_HTML_PAGE: Final = (
    b"<!DOCTYPE html>\n<html><head><title>Maintenance</title></head>"
    b"<body><h1>Down for maintenance</h1><p>Please try again later.</p></body></html>\n"
)


class CannedQueue:
    """Responses queued by ``SandboxServer.enqueue``, served FIFO to the next REST API requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Reply] = deque()

    def push(self, status: int, body: str | bytes, headers: Mapping[str, str] | None) -> int:
        """Queue one response (Content-Type defaults to JSON); returns the queue length."""
        if not 100 <= int(status) <= 599:
            raise ValueError(f"status must be an HTTP status code, got {status}")
        raw = body.encode() if isinstance(body, str) else bytes(body)
        hdrs = [(str(k), str(v)) for k, v in (headers or {}).items()]
        if not any(k.lower() == "content-type" for k, _ in hdrs):
            hdrs.insert(0, ("Content-Type", "application/json; charset=utf-8"))
        with self._lock:
            self._queue.append(Reply(int(status), raw, hdrs))
            return len(self._queue)

    def pop(self) -> Reply | None:
        """The next queued response, if any."""
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def clear(self) -> None:
        """Drop every queued response."""
        with self._lock:
            self._queue.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)


def _authorized(header: str | None, token: str) -> bool:
    """Constant-time check of ``Authorization: Bearer <token>``."""
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def _refused(refusal: contract.Refusal) -> Reply:
    """An API error as REST serves it: HTTP 400 for invalid parameters (-3), else HTTP 200."""
    return api_error(refusal.ret_code, refusal.code, refusal.message, 400 if refusal.ret_code == -3 else 200)


class RestFrontEnd:
    """The ``Router`` of the HTTP server: API paths, the ``/_sandbox/`` control API, 404 for the rest."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.canned = CannedQueue()

    @property
    def config(self) -> SandboxConfig:
        return self.sandbox.config

    def pause(self, seconds: float) -> None:
        self.sandbox.pause(seconds)

    def route(self, method: str, path: str, query: str, headers: Any, body: bytes) -> Reply:
        if path.startswith(control.PREFIX):
            return control.handle(self.sandbox, method, path, query, body)
        if (
            path.startswith(API_PREFIX)
            and path.endswith(API_SUFFIX)
            and len(path) > len(API_PREFIX + API_SUFFIX)
        ):
            raw = path[len(API_PREFIX) : -len(API_SUFFIX)]
            if "/" not in raw:
                if method != "GET":
                    return gateway_error(405, "method_not_allowed", "the API accepts GET only")
                reply = self._api(unquote(raw), query, headers.get("Authorization"))
                self.sandbox.counters.status(reply.status)
                return reply
        return gateway_error(404, "not_found", f"no such endpoint: {path[:80]!r}")

    def _api(self, raw_symbol: str, query: str, authorization: str | None) -> Reply:
        """One API request: auth, canned queue, the shared gate (budget, faults), then the contract."""
        symbol = contract.canonical(raw_symbol)
        self.sandbox.counters.request("rest", symbol if isinstance(symbol, str) else raw_symbol[:32])
        config = self.config
        if config.token is not None and not _authorized(authorization, config.token):
            return gateway_error(401, "unauthorized", "missing or wrong bearer token")
        canned = self.canned.pop()
        if canned is not None:
            return canned
        admission = self.sandbox.gate.admit(config)
        if admission.wait is not None:
            return gateway_error(
                429,
                "rate_limited",
                f"rate limit of {config.rate_limit_calls} requests per {config.rate_limit_period:g} s "
                "reached",
                _retry_after(admission.wait),
            )
        if admission.injected_429:
            return gateway_error(
                429,
                "rate_limited",
                "rate limit exceeded (injected fault)",
                _retry_after(config.fault_retry_after),
            )
        if admission.fired("http5xx"):
            status = admission.draw.bad_gateway
            html = f"<html><body><h1>{status} Server Error</h1><p>injected</p></body></html>\n"
            reply = Reply(status, html.encode(), [("Content-Type", "text/html; charset=utf-8")])
        elif admission.fired("internal_error"):
            reply = api_error(-5, "internal_error", "internal error (injected fault)")
        else:
            reply = self._serve(symbol, query, admission.published, config)
            reply.truncate = admission.fired("malformed")
        if admission.fired("delay"):
            reply.delay = config.delay_seconds
        return reply

    def _serve(
        self, symbol: str | contract.Refusal, query: str, published: dict[str, date], config: SandboxConfig
    ) -> Reply:
        """The REST contract proper (no faults)."""
        if isinstance(symbol, contract.Refusal):
            return _refused(symbol)
        params = parse_qs(query, keep_blank_values=True)
        counts = params.get("count", [str(DEFAULT_COUNT)])
        if (
            len(counts) != 1
            or not _COUNT_RE.fullmatch(counts[0])
            or not 1 <= int(counts[0]) <= REST_MAX_COUNT
        ):
            message = f"count must be an integer within 1..{REST_MAX_COUNT}: {counts[0][:20]!r}"
            return api_error(-3, "invalid_parameter", message, 400)
        keys = params.get("next_key", [""])
        if len(keys) != 1:
            return api_error(-3, "invalid_parameter", "next_key given more than once", 400)
        page = contract.lookup(symbol, int(counts[0]), keys[0], published, config.end_marker)
        if isinstance(page, contract.Refusal):
            return _refused(page)
        if symbol == "US.HTML":
            return Reply(200, _HTML_PAGE, [("Content-Type", "text/html; charset=utf-8")])
        payload: dict[str, Any] = {"items": page.items}
        if page.next_key is not None:
            payload["next_key"] = page.next_key
        envelope = {"ret_code": 0, "ret_msg": "success", "data": payload}
        if symbol == "US.BADJSON":
            body = json_reply(200, envelope).body
            return Reply(200, body[: max(1, len(body) // 3)], [("Content-Type", "application/json")])
        return json_reply(200, envelope)


def _retry_after(wait: float) -> list[tuple[str, str]]:
    """How long a 429 asks the client to wait: whole seconds (Retry-After) and milliseconds."""
    return [("Retry-After", str(max(1, math.ceil(wait)))), ("X-Retry-After-Ms", str(math.ceil(wait * 1000)))]
