"""The REST transport: one GET -> the checked JSON envelope, every failure mapped once (DESIGN.md §2).

``HttpTransport.send`` makes one attempt over the hook's :class:`~.client.RestClient`: one aiohttp
request under a total deadline (the connection's ``timeout``: name resolution, connect, headers and the
whole body), its body read under a byte cap after decompression (:mod:`.bounds`), then the error table of
DESIGN.md §2. Transient failures raise :class:`retry.TransientFailure` for the caller's
:class:`retry.RetryPolicy`; everything else raises the provider's exception at once. Misconfiguration
that no retry can fix (host not resolved, TLS certificate not trusted, plain HTTP on an https URL) raises
``ShortInterestConnectionError`` naming the cause; other TLS failures (a handshake cut by a restarting load
balancer) are transient; a refused port is retried once (the server may be restarting), then fails.
Redirects are not followed: a 3xx raises at once, so one budget slot, one deadline and one byte cap cover
exactly one request. The token travels only in the ``Authorization`` header; messages never carry it,
and no exception of the HTTP library is chained to the provider's.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import socket
import ssl
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urljoin, urlsplit

from airflow_provider_shortint import __version__
from airflow_provider_shortint.exceptions import (
    ERRORS_BY_RET_CODE,
    ShortInterestAuthError,
    ShortInterestConnectionError,
    ShortInterestError,
    ShortInterestResponseError,
)
from airflow_provider_shortint.retry import MAX_RETRY_AFTER, TransientFailure
from airflow_provider_shortint.text import clip, excerpt, shown
from airflow_provider_shortint.transports.rest.bounds import BadEncoding, ResponseTooLarge, read_body

if TYPE_CHECKING:
    import aiohttp

    from airflow_provider_shortint.transports.rest.client import RestClient
    from airflow_provider_shortint.transports.rest.settings import RestSettings

#: Largest response body accepted, after decompression (a 90-item page is about 20 KB).
MAX_RESPONSE_BYTES = 2 * 1024 * 1024
#: Attempts for a refused connection (the first, and one more in case the server was restarting).
REFUSED_ATTEMPTS = 2
#: Headers of every request (``Accept-Encoding``: what :func:`.bounds.read_body` decodes, under its cap).
BASE_HEADERS = {
    "Accept": "application/json",
    "Accept-Encoding": "gzip, deflate",
    "User-Agent": f"airflow-provider-shortint/{__version__}",
}


class Answer(NamedTuple):
    """A complete HTTP answer: status, headers and the decoded body (at most the byte cap)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class HttpTransport:
    """One request to the REST API and the checked envelope it returned.

    :param settings: the validated connection (base URL, token, timeout, TLS check).
    :param client: returns the client to send with (the hook owns its lifecycle).
    :param label: names the connection in messages (the hook's ``connection_label``: "this connection"
        while the UI tests a temporary one).
    :param max_bytes: largest body accepted, after decompression.
    """

    def __init__(
        self,
        settings: RestSettings,
        client: Callable[[], RestClient],
        label: Callable[[], str],
        *,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.settings = settings
        self.client = client
        self.label = label
        self.max_bytes = max_bytes

    def send(self, symbol: str, path: str, params: dict[str, str | int]) -> dict[str, Any] | None:
        """One GET of ``{base_url}{path}``: the envelope with ret_code 0, None for -10, or raise."""
        url = f"{self.settings.base_url}{path}"
        client = self.client()
        outcome = client.run(lambda session: self._exchange(session, symbol, url, params, client.proxy))
        if isinstance(outcome, Exception):
            raise outcome  # raised here, outside any except block: nothing of aiohttp is chained
        return self.interpret(symbol, outcome.status, outcome.body, outcome.headers)

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        symbol: str,
        url: str,
        params: dict[str, str | int],
        proxy: str | None,
    ) -> Answer | Exception:
        """One request and its whole body under the deadline; the answer, or the failure to raise."""
        import aiohttp

        headers = dict(BASE_HEADERS)
        if self.settings.token:
            headers["Authorization"] = f"Bearer {self.settings.token.reveal()}"
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout, ceil_threshold=math.inf)
        try:
            async with session.get(
                url,
                params=params,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,  # each hop would escape the budget slot, the deadline and the cap
                proxy=proxy,
            ) as response:
                if 300 <= response.status < 400:
                    response.close()
                    return self._redirect(symbol, response.status, response.headers)
                try:
                    body = await read_body(response, self.max_bytes)
                except ResponseTooLarge as err:
                    response.close()
                    return ShortInterestResponseError(
                        f"{symbol}: response too large ({err}; the limit is {self.max_bytes:,} bytes "
                        "decompressed)",
                        symbol=symbol,
                        status=response.status,
                    )
                except BadEncoding as err:
                    response.close()
                    return ShortInterestResponseError(f"{symbol}: {clip(str(err), 160)}", symbol=symbol)
                return Answer(response.status, response.headers, body)
        except TimeoutError:  # the total deadline (aiohttp's own timeout errors derive from it)
            return self._timeout()
        except aiohttp.ClientConnectorError as err:
            return self._connect_failure(err)
        except (aiohttp.ClientError, OSError) as err:  # cut, reset or garbled after connecting
            return TransientFailure(
                f"connection to {self.settings.base_url} failed ({_kind(err)})", "connection_error"
            )

    def _redirect(self, symbol: str, status: int, headers: Mapping[str, str]) -> ShortInterestResponseError:
        """A 3xx is refused, naming where it pointed (scheme and host only: no credentials, no query)."""
        location = headers.get("Location")
        target = _origin(self.settings.base_url, location) if location else "no Location"
        return ShortInterestResponseError(
            f"{symbol}: HTTP {status} redirect to {clip(target, 120)}; redirects are not followed (each "
            f"would be a request outside the budget): set the host of {self.label()} to the API's final "
            "base URL",
            symbol=symbol,
            status=status,
        )

    # -- the error table ----------------------------------------------------------------------------------

    def interpret(
        self, symbol: str, status: int, body: bytes, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any] | None:
        """The error table of DESIGN.md §2 for one answer (``headers`` give Retry-After)."""
        wait = retry_after(headers) if headers is not None else None
        if status == 429:
            raise TransientFailure("HTTP 429 (rate limited)", "rate_limited", retry_after=wait, status=status)
        if status in (401, 403):
            what = (
                "refused the API token (check the password"
                if self.settings.token
                else "requires an API token (set it as the password"
            )
            raise ShortInterestAuthError(
                f"{symbol}: HTTP {status}: the API {what} of {self.label()})",
                symbol=symbol,
                status=status,
            )
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON ("[[[[...")
            payload = None
        if isinstance(payload, dict) and "ret_code" in payload:
            return self._dispatch(symbol, status, payload, body, wait)
        if status >= 500 or status == 408:  # 408: the server gave up waiting for us; try again
            raise TransientFailure(
                f"HTTP {status}: {excerpt(body, 60)!r}", "http_error", retry_after=wait, status=status
            )
        hint = f" (is {self.settings.base_url} the API's base URL?)" if status == 404 else ""
        raise ShortInterestResponseError(
            f"{symbol}: HTTP {status} with a body that is not the API's JSON envelope: "
            f"{excerpt(body)!r}{hint}",
            symbol=symbol,
            status=status,
        )

    def _dispatch(
        self, symbol: str, status: int, payload: dict[str, Any], body: bytes, wait: float | None = None
    ) -> dict[str, Any] | None:
        ret_code = payload["ret_code"]
        raw_error = payload.get("error")
        error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
        message = clip(str(error.get("message") or payload.get("ret_msg") or "no message"))
        error_code = clip(error["code"], 64) if isinstance(error.get("code"), str) else None
        if ret_code == 0 and not isinstance(ret_code, bool):
            return payload
        if ret_code == -10:
            return None
        if ret_code == -5:
            raise TransientFailure(
                f"internal error (ret_code -5): {message}",
                "internal_error",
                ret_code=-5,
                retry_after=wait,
                status=status,
            )
        error_class = ERRORS_BY_RET_CODE.get(ret_code) if isinstance(ret_code, int) else None
        if error_class is None:
            raise ShortInterestResponseError(
                f"{symbol}: HTTP {status} with unknown ret_code {shown(ret_code, 40)}: {excerpt(body)!r}",
                ret_code=ret_code if isinstance(ret_code, int) else None,
                symbol=symbol,
                status=status,
            )
        raise error_class(
            f"{symbol}: {message} (ret_code {ret_code})",
            ret_code=ret_code,
            error_code=error_code,
            symbol=symbol,
            status=status,
        )

    # -- why a request could not be sent ------------------------------------------------------------------

    def _timeout(self) -> TransientFailure:
        return TransientFailure(
            f"no answer from {self.settings.base_url} within {self.settings.timeout:g} s", "timeout"
        )

    def _connect_failure(self, err: aiohttp.ClientConnectorError) -> ShortInterestError | TransientFailure:
        """Why no connection was made: retried (transient) or raised at once (misconfiguration)."""
        import aiohttp

        url = self.settings.base_url
        cause = err.os_error
        if isinstance(cause, socket.gaierror) and cause.errno != socket.EAI_AGAIN:
            return ShortInterestConnectionError(
                f"cannot resolve the host of {url} (name not resolved: {clip(str(cause.strerror), 60)}); "
                f"check the host of {self.label()}",
                error_code="name_not_resolved",
            )
        if isinstance(err, aiohttp.ClientConnectorCertificateError):
            return self._tls_failure(err.certificate_error)
        if isinstance(cause, ssl.SSLError):
            return self._tls_failure(cause)
        if isinstance(cause, ConnectionRefusedError):
            return TransientFailure(
                f"connection to {url} refused (nothing listens on {_host_port(url)}: is the server "
                "running, is the port right?)",
                "connection_refused",
                max_attempts=REFUSED_ATTEMPTS,
            )
        if isinstance(cause, socket.gaierror):
            return TransientFailure(
                f"connection to {url} failed (temporary failure in name resolution)", "connection_error"
            )
        if urlsplit(url).scheme == "https" and isinstance(cause, (ConnectionResetError, EOFError)):
            # The TCP connection was made (a refused one fails above) and cut before TLS completed.
            return self._tls_failure(cause)
        return TransientFailure(f"connection to {url} failed ({_kind(cause)})", "connection_error")

    def _tls_failure(self, reason: BaseException) -> ShortInterestConnectionError | TransientFailure:
        """Permanent for an untrusted certificate or plain HTTP on an https URL; any other TLS failure
        (EOF in the handshake while a load balancer restarts, a reset) is transient."""
        url = self.settings.base_url
        text = str(reason)
        if any(marker in text for marker in _PLAIN_HTTP_MARKERS):
            message = (
                f"TLS handshake with {_host_port(url)} failed: the server answered in plain HTTP. "
                f"Use http:// in the host of {self.label()} (or point it at the TLS port)"
            )
        elif isinstance(reason, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
            detail = clip(str(getattr(reason, "verify_message", None) or text), 120)
            message = (
                f"TLS certificate of {_host_port(url)} not trusted ({detail}); install the CA or, for a "
                f"test server only, set verify_ssl false on {self.label()}"
            )
        else:
            return TransientFailure(
                f"TLS handshake with {_host_port(url)} failed ({_kind(reason)})", "connection_error"
            )
        return ShortInterestConnectionError(message, error_code="tls_handshake_failed")


# OpenSSL's words when a TLS client gets a plain-HTTP answer ("HTTP/1.1 400 ...") to its hello.
_PLAIN_HTTP_MARKERS = ("WRONG_VERSION_NUMBER", "wrong version number", "record layer failure", "http request")


def _origin(base_url: str, location: str) -> str:
    """``scheme://host[:port]`` of a Location (relative to ``base_url``): nothing else of it is shown."""
    try:
        parts = urlsplit(urljoin(base_url, location))
    except ValueError:
        return "an unreadable URL"
    if not parts.hostname:
        return "an unreadable URL"
    port = f":{parts.port}" if _safe_port(parts) else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def _kind(err: BaseException | None) -> str:
    """A failure's type and its first words, for a message (never a header: aiohttp's texts hold none)."""
    if err is None:
        return "unknown cause"
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {clip(text, 120)}" if text else type(err).__name__


def _safe_port(parts: Any) -> bool:
    """True when the URL's port is readable (``urlsplit(...).port`` raises on garbage)."""
    try:
        return parts.port is not None
    except ValueError:
        return False


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait (``X-Retry-After-Ms`` or ``Retry-After``), if any.

    Clamped to 0..``MAX_RETRY_AFTER``; values that are not finite numbers or dates are ignored.
    """
    millis = headers.get("X-Retry-After-Ms")
    if millis:
        try:
            return _clamp_wait(float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return _clamp_wait(float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000": UTC, says RFC 5322
            when = when.replace(tzinfo=dt.UTC)
        return _clamp_wait((when - dt.datetime.now(dt.UTC)).total_seconds())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _clamp_wait(seconds: float) -> float | None:
    """A server-requested wait within 0..MAX_RETRY_AFTER; None for NaN (ignored)."""
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
