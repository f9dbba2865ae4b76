"""HTTP server of the sandbox: the REST contract of DESIGN §2 plus a rate limit, injected faults and a
control API, so the provider can be developed, demonstrated and tested without the real service."""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import dataclasses
import hmac
import io
import json
import math
import random
import re
import socket
import socketserver
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from airflow_provider_shortint.sandbox import data

END_MARKERS: Final = ("-1", "absent", "empty")
DEFAULT_COUNT: Final = 30
MAX_COUNT: Final = 90
API_PREFIX: Final = "/v1/quote/"
API_SUFFIX: Final = "/short-selling/short-interest"
CONTROL_PREFIX: Final = "/_sandbox/"
MAX_BODY: Final = 1 << 20
MAX_TIMESTAMPS: Final = 100_000
FAULT_KINDS: Final = ("internal_error", "http5xx", "http429", "delay", "malformed")

SPECIAL_SYMBOLS: Final[dict[str, str]] = {
    "HK.99999": "ret_code -7 invalid_symbol (well-formed, no such security)",
    "US.NOSUCH": "ret_code -7 invalid_symbol (well-formed, no such security)",
    "HK.99998": "ret_code -8 unsupported (a warrant)",
    "US.VIX": "ret_code -8 unsupported (an index)",
    "HK.99997": "ret_code -10 no_data",
    "US.NODATA": "ret_code -10 no_data",
    "US.LOOPKEY": "always the same items and the same next_key (repeated-key server fault)",
    "US.BADJSON": "HTTP 200, correct Content-Length, truncated (invalid) JSON body",
    "US.HTML": "HTTP 200 with an HTML page instead of JSON",
    "US.BADRET": "ret_code 42 (unknown to clients), otherwise a well-formed error envelope",
}
_SYMBOL_ERRORS: Final[dict[str, tuple[int, str, str]]] = {
    "HK.99999": (-7, "invalid_symbol", "security HK.99999 does not exist"),
    "US.NOSUCH": (-7, "invalid_symbol", "security US.NOSUCH does not exist"),
    "HK.99998": (-8, "unsupported", "HK.99998 is a warrant: only stocks and funds are supported"),
    "US.VIX": (-8, "unsupported", "US.VIX is an index: only stocks and funds are supported"),
    "HK.99997": (-10, "no_data", "no short interest data for HK.99997"),
    "US.NODATA": (-10, "no_data", "no short interest data for US.NODATA"),
    "US.BADRET": (42, "mystery", "an error code this client has never seen"),
}
_HTML_PAGE: Final = (
    b"<!DOCTYPE html>\n<html><head><title>Maintenance</title></head>"
    b"<body><h1>Down for maintenance</h1><p>Please try again later.</p></body></html>\n"
)
_COUNT_RE: Final = re.compile(r"[0-9]{1,6}")


@dataclass(frozen=True)
class SandboxConfig:
    """Settings of a sandbox server; all but host and port can be changed live (``configure``)."""

    host: str = "127.0.0.1"
    port: int = 0
    rate_limit_calls: int = 30
    rate_limit_period: float = 30.0
    internal_error_rate: float = 0.0
    http5xx_rate: float = 0.0
    http429_rate: float = 0.0
    delay_rate: float = 0.0
    delay_seconds: float = 2.0
    malformed_rate: float = 0.0
    seed: int = 0
    end_marker: str = "-1"
    today: date = data.DEFAULT_TODAY
    token: str | None = field(default=None, repr=False)
    socket_timeout: float = 10.0
    verbose: bool = False

    def __post_init__(self) -> None:
        for name in ("internal_error_rate", "http5xx_rate", "http429_rate", "delay_rate", "malformed_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {rate}")
        if self.rate_limit_calls < 0:
            raise ValueError(f"rate_limit_calls must be >= 0 (0 disables), got {self.rate_limit_calls}")
        if not self.rate_limit_period > 0:
            raise ValueError(f"rate_limit_period must be > 0, got {self.rate_limit_period}")
        if self.end_marker not in END_MARKERS:
            raise ValueError(f"end_marker must be one of {END_MARKERS}, got {self.end_marker!r}")
        if not self.delay_seconds >= 0:
            raise ValueError(f"delay_seconds must be >= 0, got {self.delay_seconds}")
        if not self.socket_timeout > 0:
            raise ValueError(f"socket_timeout must be > 0, got {self.socket_timeout}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within 0..65535, got {self.port}")

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
        """The five fault rates keyed by fault kind."""
        return {kind: float(getattr(self, f"{kind}_rate")) for kind in FAULT_KINDS}


LIVE_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(SandboxConfig)) - {"host", "port"}
_FLOAT_FIELDS: Final = frozenset(
    {"rate_limit_period", "delay_seconds", "socket_timeout"} | {f"{kind}_rate" for kind in FAULT_KINDS}
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
    if name == "verbose":
        if isinstance(value, bool):
            return value
        raise ValueError(f"verbose must be a boolean, got {value!r}")
    if not isinstance(value, str):  # end_marker
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


def make_config(config: SandboxConfig | None = None, **overrides: object) -> SandboxConfig:
    """A config from an optional base plus overrides (values coerced like the control API's)."""
    base = config or SandboxConfig()
    fields = {name: _coerce(name, value) for name, value in overrides.items() if name not in ("host", "port")}
    for name in ("host", "port"):
        if name in overrides:
            fields[name] = overrides[name]
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


@dataclass
class _Reply:
    """One HTTP response; ``truncate`` sends only half the body and then closes the connection."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    truncate: bool = False
    delay: float = 0.0


def _json_reply(status: int, payload: object, headers: list[tuple[str, str]] | None = None) -> _Reply:
    """A JSON response."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return _Reply(status, body, [("Content-Type", "application/json; charset=utf-8"), *(headers or [])])


def _api_error(ret_code: int, code: str, message: str, status: int = 200) -> _Reply:
    """An API error in the envelope of DESIGN §2."""
    payload = {"ret_code": ret_code, "ret_msg": message, "error": {"code": code, "message": message}}
    return _json_reply(status, payload)


def _gateway_error(
    status: int, code: str, message: str, headers: list[tuple[str, str]] | None = None
) -> _Reply:
    """A gateway-level error (401, 404, 405, 429...): JSON ``{"error": ...}`` without ret_code."""
    return _json_reply(status, {"error": {"code": code, "message": message}}, headers)


def encode_key(symbol: str, day: date) -> str:
    """Opaque page key: unpadded urlsafe base64 of the symbol and the trade date of the page's first item."""
    return base64.urlsafe_b64encode(f"{symbol}|{day.isoformat()}".encode()).decode().rstrip("=")


def decode_key(key: str) -> tuple[str, date]:
    """Inverse of :func:`encode_key`; raises ValueError when the key was not made by this server."""
    try:
        raw = base64.b64decode(key + "=" * (-len(key) % 4), altchars=b"-_", validate=True).decode()
        symbol, _, day = raw.partition("|")
        return symbol, date.fromisoformat(day)
    except (binascii.Error, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"undecodable next_key {key[:40]!r}") from err


class SandboxServer:
    """The sandbox: serves from a background thread (``start``/``stop`` or ``with``), steered in-process."""

    def __init__(self, config: SandboxConfig | None = None, **overrides: object) -> None:
        self._config = make_config(config, **overrides)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._mono0 = time.monotonic()
        self._unix0 = time.time()
        self._published: dict[data.Market, date] = {}
        self._window: deque[float] = deque()
        self._queue: deque[_Reply] = deque()
        self._rng = random.Random(self._config.seed)
        self._reset_stats_locked()
        self._reset_publish_locked()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SandboxServer:
        """Bind and serve from a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        cls = _HTTPServerV6 if ":" in self._config.host else _HTTPServer
        self._httpd = cls((self._config.host, self._config.port), self)
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="shortint-sandbox",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent); delayed answers in flight are cut short."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

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
        """The bound port (the free one picked when the config says 0)."""
        if self._httpd is None:
            raise RuntimeError("sandbox is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8765``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # ------------------------------------------------------------------ control (Python API)

    def publish(self, market: str) -> date:
        """Advance ``market`` ("HK" or "US") to its next trading date and return that date."""
        key = _market(market)
        with self._lock:
            day = data.next_record_date(key, self._published[key])
            self._published[key] = day
            return day

    def published(self, market: str) -> date:
        """The date ``market`` is published through (records after it do not exist yet)."""
        with self._lock:
            return self._published[_market(market)]

    def configure(self, **fields: object) -> SandboxConfig:
        """Change settings live (any field but host/port); ``seed`` reseeds, ``today`` resets publishing."""
        unknown = set(fields) - LIVE_FIELDS
        if unknown:
            raise ValueError(f"unknown or read-only config fields: {sorted(unknown)}")
        with self._lock:
            self._config = make_config(self._config, **fields)
            if "seed" in fields:
                self._rng = random.Random(self._config.seed)
            if "today" in fields:
                self._reset_publish_locked()
            return self._config

    def stats(self) -> dict[str, Any]:
        """Counters of API requests (control requests excluded); see docs/SANDBOX.md for the keys."""
        with self._lock:
            return {
                "requests": self._requests,
                "by_status": {str(k): v for k, v in sorted(self._by_status.items())},
                "by_symbol": dict(sorted(self._by_symbol.items())),
                "rate_limited": self._rate_limited,
                "faults": {kind: self._faults[kind] for kind in FAULT_KINDS},
                "timestamps": list(self._timestamps),
            }

    def reset_stats(self) -> None:
        """Zero every counter of :meth:`stats`."""
        with self._lock:
            self._reset_stats_locked()

    def reset(self) -> None:
        """Back to the start: stats, canned queue, rate-limit window, fault RNG, publish dates."""
        with self._lock:
            self._reset_stats_locked()
            self._reset_publish_locked()
            self._queue.clear()
            self._window.clear()
            self._rng = random.Random(self._config.seed)

    def enqueue(
        self, status: int = 200, body: str | bytes = "", headers: Mapping[str, str] | None = None
    ) -> int:
        """Queue a canned response for the next API request (FIFO); returns the queue length.

        Content-Type defaults to application/json and Content-Length to the body's length.
        """
        if not 100 <= int(status) <= 599:
            raise ValueError(f"status must be an HTTP status code, got {status}")
        raw = body.encode() if isinstance(body, str) else bytes(body)
        hdrs = [(str(k), str(v)) for k, v in (headers or {}).items()]
        if not any(k.lower() == "content-type" for k, _ in hdrs):
            hdrs.insert(0, ("Content-Type", "application/json; charset=utf-8"))
        with self._lock:
            self._queue.append(_Reply(int(status), raw, hdrs))
            return len(self._queue)

    def history(self, symbol: str) -> list[data.Item]:
        """Every item the API would return for ``symbol`` right now, newest first, exactly as served.

        Raises ValueError for malformed or unsupported symbols and for the special error symbols.
        """
        try:
            canonical = data.parse_symbol(symbol)
        except data.SymbolError as err:
            raise ValueError(err.message) from err
        if canonical in _SYMBOL_ERRORS:
            raise ValueError(f"{canonical} is a special symbol: {SPECIAL_SYMBOLS[canonical]}")
        return data.history(canonical, self.published(data.market_of(canonical)))

    def state(self) -> dict[str, Any]:
        """Published dates, settings and fault rates (what ``GET /_sandbox/state`` returns)."""
        with self._lock:
            config = self._config
            return {
                "url": self.url if self._httpd is not None else None,
                "published": {market: day.isoformat() for market, day in self._published.items()},
                "config": config.public_dict(),
                "fault_rates": config.fault_rates(),
                "queued": len(self._queue),
            }

    # ------------------------------------------------------------------ internals

    def _reset_stats_locked(self) -> None:
        self._requests = 0
        self._by_status: Counter[int] = Counter()
        self._by_symbol: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._rate_limited = 0
        self._timestamps: deque[float] = deque(maxlen=MAX_TIMESTAMPS)

    def _reset_publish_locked(self) -> None:
        self._published = {market: self._config.today for market in data.MARKETS}

    def _admit_locked(self, now: float) -> float | None:
        """Take a rate-limit slot; None when admitted, else seconds until a slot frees."""
        calls, period = self._config.rate_limit_calls, self._config.rate_limit_period
        if calls <= 0:
            return None
        window = self._window
        while window and window[0] <= now - period:
            window.popleft()
        if len(window) >= calls:
            return max(window[len(window) - calls] + period - now, 0.001)
        window.append(now)
        return None

    def _pause(self, seconds: float) -> None:
        """Sleep for an injected delay, waking early when the server stops."""
        self._stopping.wait(seconds)

    def _count_status(self, status: int) -> None:
        """Record the HTTP status an API request was answered with."""
        with self._lock:
            self._by_status[status] += 1

    def _handle_api(self, raw_symbol: str, query: str, authorization: str | None) -> _Reply:
        """Answer one API request: auth, canned queue, rate limit, faults, then the contract itself."""
        now = time.monotonic()
        try:
            symbol_key = data.parse_symbol(raw_symbol)
        except data.SymbolError:
            symbol_key = raw_symbol[:32]
        with self._lock:
            config = self._config
            self._requests += 1
            self._by_symbol[symbol_key] += 1
            if config.token is not None and not _authorized(authorization, config.token):
                return _gateway_error(401, "unauthorized", "missing or wrong bearer token")
            if self._queue:
                return self._queue.popleft()
            wait = self._admit_locked(now)
            if wait is not None:
                self._rate_limited += 1
                return _gateway_error(
                    429,
                    "rate_limited",
                    f"rate limit of {config.rate_limit_calls} requests per "
                    f"{config.rate_limit_period:g} s reached",
                    [
                        ("Retry-After", str(max(1, math.ceil(wait)))),
                        ("X-Retry-After-Ms", str(math.ceil(wait * 1000))),
                    ],
                )
            draws = {kind: self._rng.random() for kind in FAULT_KINDS}
            bad_gateway = self._rng.choice((500, 502, 503))
            fired = {kind for kind, draw in draws.items() if draw < getattr(config, f"{kind}_rate")}
            if "http429" in fired:
                if config.rate_limit_calls > 0:  # an injected 429 does not use up a slot
                    self._window.pop()  # the slot _admit_locked just appended (under the same lock)
                self._faults["http429"] += 1
                return _gateway_error(
                    429, "rate_limited", "rate limit exceeded (injected fault)", [("Retry-After", "1")]
                )
            self._timestamps.append(self._unix0 + (now - self._mono0))
            for kind in fired:
                self._faults[kind] += 1
            published = dict(self._published)
        if "http5xx" in fired:
            reply = _Reply(
                bad_gateway,
                f"<html><body><h1>{bad_gateway} Server Error</h1><p>injected</p></body></html>\n".encode(),
                [("Content-Type", "text/html; charset=utf-8")],
            )
        elif "internal_error" in fired:
            reply = _api_error(-5, "internal_error", "internal error (injected fault)")
        else:
            reply = self._serve(raw_symbol, query, published, config)
            reply.truncate = "malformed" in fired
        if "delay" in fired:
            reply.delay = config.delay_seconds
        return reply

    def _serve(
        self, raw_symbol: str, query: str, published: dict[data.Market, date], config: SandboxConfig
    ) -> _Reply:
        """The REST contract proper (no faults)."""
        try:
            symbol = data.parse_symbol(raw_symbol)
        except data.SymbolError as err:
            return _api_error(err.ret_code, err.code, err.message, 400 if err.ret_code == -3 else 200)
        params = parse_qs(query, keep_blank_values=True)
        counts = params.get("count", [str(DEFAULT_COUNT)])
        if len(counts) != 1 or not _COUNT_RE.fullmatch(counts[0]) or not 1 <= int(counts[0]) <= MAX_COUNT:
            return _api_error(
                -3,
                "invalid_parameter",
                f"count must be an integer within 1..{MAX_COUNT}: {counts[0][:20]!r}",
                400,
            )
        count = int(counts[0])
        keys = params.get("next_key", [""])
        if len(keys) != 1:
            return _api_error(-3, "invalid_parameter", "next_key given more than once", 400)
        next_key = keys[0]
        if symbol in _SYMBOL_ERRORS:
            return _api_error(*_SYMBOL_ERRORS[symbol])
        if symbol == "US.HTML":
            return _Reply(200, _HTML_PAGE, [("Content-Type", "text/html; charset=utf-8")])
        market = data.market_of(symbol)
        items = data.history_view(symbol, published[market])  # oldest first
        if not items:
            return _api_error(-10, "no_data", f"no short interest data for {symbol} yet")
        if symbol == "US.LOOPKEY":
            next_key = ""
        end = len(items)
        if next_key:
            try:
                key_symbol, key_day = decode_key(next_key)
            except ValueError:
                key_symbol, key_day = "", date.min
            iso = key_day.isoformat()
            end = bisect.bisect_right(items, iso, key=lambda item: str(item["timestamp_str"]))
            if key_symbol != symbol or end == 0 or items[end - 1]["timestamp_str"] != iso:
                return _api_error(
                    -3, "invalid_parameter", f"unknown next_key {next_key[:40]!r} for {symbol}", 400
                )
        start = max(0, end - count)
        page = items[start:end][::-1]
        payload: dict[str, Any] = {"items": page}
        if symbol == "US.LOOPKEY":  # points back at this very page, whatever the page size
            payload["next_key"] = encode_key(symbol, date.fromisoformat(str(items[-1]["timestamp_str"])))
        elif start > 0:
            payload["next_key"] = encode_key(
                symbol, date.fromisoformat(str(items[start - 1]["timestamp_str"]))
            )
        elif config.end_marker != "absent":
            payload["next_key"] = "-1" if config.end_marker == "-1" else ""
        if symbol == "US.BADJSON":
            body = json.dumps({"ret_code": 0, "ret_msg": "success", "data": payload}).encode()
            return _Reply(200, body[: max(1, len(body) // 3)], [("Content-Type", "application/json")])
        return _json_reply(200, {"ret_code": 0, "ret_msg": "success", "data": payload})

    def _handle_control(self, method: str, path: str, query: str, body: bytes) -> _Reply:
        """Answer a ``/_sandbox/...`` request (JSON in and out; never rate-limited or faulted)."""
        name = path[len(CONTROL_PREFIX) :].strip("/")
        allowed = {
            "state": ("GET",),
            "stats": ("GET",),
            "config": ("GET", "POST"),
            "history": ("GET",),
            "publish": ("POST",),
            "reset_stats": ("POST",),
            "reset": ("POST",),
            "enqueue": ("POST",),
        }
        if name not in allowed:
            return _gateway_error(404, "not_found", f"no control endpoint {path!r}; try GET /_sandbox/state")
        if method not in allowed[name]:
            return _gateway_error(405, "method_not_allowed", f"{path} accepts {', '.join(allowed[name])}")
        try:
            payload = json.loads(body) if body.strip() else {}
        except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
            return _gateway_error(400, "bad_request", "body is not valid JSON")
        if not isinstance(payload, dict):
            return _gateway_error(400, "bad_request", "body must be a JSON object")
        params = {k: v[0] for k, v in parse_qs(query).items()}
        try:
            if name == "state":
                return _json_reply(200, self.state())
            if name == "stats":
                return _json_reply(200, self.stats())
            if name == "config":
                if method == "POST":
                    self.configure(**payload)
                return _json_reply(200, self.state())
            if name == "history":
                symbol = str(params.get("symbol", payload.get("symbol", "")))
                return _json_reply(200, {"symbol": symbol, "items": self.history(symbol)})
            if name == "publish":
                market = str(params.get("market", payload.get("market", "")))
                return _json_reply(
                    200, {"market": market.upper(), "trade_date": self.publish(market).isoformat()}
                )
            if name == "reset_stats":
                self.reset_stats()
                return _json_reply(200, {"ok": True})
            if name == "reset":
                self.reset()
                return _json_reply(200, {"ok": True})
            headers = payload.get("headers") or {}
            if not isinstance(headers, dict):
                raise ValueError("headers must be a JSON object")
            status = payload.get("status", 200)
            text = payload.get("body", "")
            if isinstance(status, bool) or not isinstance(status, int) or not isinstance(text, str):
                raise ValueError("status must be an integer and body a string")
            return _json_reply(200, {"queued": self.enqueue(status, text, headers)})
        except (ValueError, TypeError) as err:
            return _gateway_error(400, "bad_request", str(err))


def _market(market: str) -> data.Market:
    """Validate a market name ("hk" -> "HK")."""
    upper = str(market).strip().upper()
    if upper == "HK":
        return "HK"
    if upper == "US":
        return "US"
    raise ValueError(f"market must be HK or US, got {market!r}")


def _authorized(header: str | None, token: str) -> bool:
    """Constant-time check of ``Authorization: Bearer <token>``."""
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the sandbox; never lets an exception escape, logs only when verbose."""

    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms each.
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        return "shortint-sandbox/1.0"

    #: Monotonic time by which the current request (line, headers, body) must have arrived, or None.
    read_deadline: float | None = None

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.sandbox.config.socket_timeout)
        # Reads go through _DeadlineReader: the socket timeout bounds each read, the deadline the request.
        self.rfile.close()
        self.rfile = io.BufferedReader(_DeadlineReader(self))

    def handle_one_request(self) -> None:
        """One request; it must arrive whole within 2 x socket_timeout of the wait for it starting.

        The per-read socket timeout alone lets a client that sends a byte now and then (slowloris) hold
        a thread forever. The idle wait of a keep-alive connection stays bounded by the socket timeout.
        """
        self.read_deadline = time.monotonic() + 2 * self.server.sandbox.config.socket_timeout
        try:
            super().handle_one_request()
        finally:
            self.read_deadline = None

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sandbox.config.verbose:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _read_body(self) -> bytes | None:
        """The request body (None when too large or unreadable)."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if length < 0 or length > MAX_BODY:
            return None
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        sandbox = self.server.sandbox
        try:
            body = self._read_body()
            self.read_deadline = None  # the request is in: injected delays and the answer are not limited
            if body is None:
                self.close_connection = True
                self._send(_gateway_error(413, "bad_request", "request body missing, malformed or too large"))
                return
            parts = urlsplit(self.path)
            path = parts.path
            if path.startswith(CONTROL_PREFIX):
                self._send(sandbox._handle_control(method, path, parts.query, body))
                return
            if (
                path.startswith(API_PREFIX)
                and path.endswith(API_SUFFIX)
                and len(path) > len(API_PREFIX + API_SUFFIX)
            ):
                raw = path[len(API_PREFIX) : -len(API_SUFFIX)]
                if "/" not in raw:
                    if method != "GET":
                        self._send(_gateway_error(405, "method_not_allowed", "the API accepts GET only"))
                        return
                    reply = sandbox._handle_api(unquote(raw), parts.query, self.headers.get("Authorization"))
                    if reply.delay > 0:
                        sandbox._pause(reply.delay)
                    sandbox._count_status(reply.status)
                    self._send(reply)
                    return
            self._send(_gateway_error(404, "not_found", f"no such endpoint: {path[:80]!r}"))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception as err:  # the server must survive anything
            self.close_connection = True
            if sandbox.config.verbose:
                sys.stderr.write(f"sandbox: internal error: {err!r}\n")
            with contextlib.suppress(OSError):
                self._send(_api_error(-5, "internal_error", "sandbox internal error", 500))

    def _send(self, reply: _Reply) -> None:
        """Write a reply; a truncated one announces the full Content-Length, sends half and closes."""
        self.send_response(reply.status)
        names = {name.lower() for name, _ in reply.headers}
        for name, value in reply.headers:
            self.send_header(name, value)
        if "content-length" not in names:
            self.send_header("Content-Length", str(len(reply.body)))
        if reply.truncate:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply.body[: len(reply.body) // 2] if reply.truncate else reply.body)
        self.wfile.flush()


class _DeadlineReader(io.RawIOBase):
    """The raw socket reader of a handler: each read waits at most the socket timeout and never past
    the handler's ``read_deadline`` (then TimeoutError, which http.server and ``_dispatch`` handle by
    dropping the connection)."""

    def __init__(self, handler: _Handler) -> None:
        super().__init__()
        self._handler = handler
        self._sock: socket.socket = handler.connection

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        timeout = self._handler.server.sandbox.config.socket_timeout
        deadline = self._handler.read_deadline
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the request did not arrive in time")
            timeout = min(timeout, remaining)
        self._sock.settimeout(timeout)
        try:
            return self._sock.recv_into(buffer)
        finally:
            self._sock.settimeout(self._handler.server.sandbox.config.socket_timeout)


class _HTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server bound to one SandboxServer; skips the reverse DNS lookup of ``HTTPServer``."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: SandboxServer) -> None:
        self.sandbox = sandbox
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.sandbox.config.verbose:
            super().handle_error(request, client_address)


class _HTTPServerV6(_HTTPServer):
    """The same on an IPv6 address."""

    address_family = socket.AF_INET6
