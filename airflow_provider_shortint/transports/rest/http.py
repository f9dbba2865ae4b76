"""The REST transport: one GET -> the checked JSON envelope, every failure mapped once (DESIGN.md §2).

``HttpTransport.send`` makes one attempt: a bounded response (:mod:`http_bounds`: a total deadline and
a byte cap after decompression), then the error table of DESIGN.md §2. Transient failures raise
:class:`retry.TransientFailure` for the caller's :class:`retry.RetryPolicy`; everything else raises the
provider's exception at once. Misconfiguration that no retry can fix (host not resolved, TLS certificate
not trusted, plain HTTP on an https URL) raises ``ShortInterestConnectionError`` naming the cause; other
TLS failures (a handshake cut by a restarting load balancer) are transient; a refused port is retried
once (the server may be restarting), then fails. Redirects are not followed: a 3xx raises at once, so
one budget slot, one deadline and one byte cap cover exactly one request. Messages never carry the token.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import socket
import ssl
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

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
from airflow_provider_shortint.transports.rest.bounds import (
    BadEncoding,
    DeadlineAdapter,
    ResponseTooLarge,
    read_body,
)

if TYPE_CHECKING:
    from airflow_provider_shortint.transports.rest.settings import RestSettings

#: Largest response body accepted, after decompression (a 90-item page is about 20 KB).
MAX_RESPONSE_BYTES = 2 * 1024 * 1024
#: Attempts for a refused connection (the first, and one more in case the server was restarting).
REFUSED_ATTEMPTS = 2


def new_session(settings: RestSettings) -> requests.Session:
    """A ``requests.Session`` for the API: JSON, token header, TLS check, whole-response deadlines."""
    session = requests.Session()
    adapter = DeadlineAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["Accept"] = "application/json"
    session.headers["Accept-Encoding"] = "gzip, deflate"  # what read_body decodes (with its cap)
    session.headers["User-Agent"] = f"airflow-provider-shortint/{__version__}"
    if settings.token:
        session.headers["Authorization"] = f"Bearer {settings.token}"
    session.verify = settings.verify_ssl
    return session


class HttpTransport:
    """One request to the REST API and the checked envelope it returned.

    :param settings: the validated connection (base URL, token, timeout).
    :param conn_id: the connection's id, named in messages about the token.
    :param session: returns the session to send with (the hook owns its lifecycle).
    :param max_bytes: largest body accepted, after decompression.
    """

    def __init__(
        self,
        settings: RestSettings,
        conn_id: str,
        session: Callable[[], requests.Session],
        *,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.settings = settings
        self.conn_id = conn_id
        self.session = session
        self.max_bytes = max_bytes

    def send(self, symbol: str, path: str, params: dict[str, str | int]) -> dict[str, Any] | None:
        """One GET of ``{base_url}{path}``: the envelope with ret_code 0, None for -10, or raise."""
        url = f"{self.settings.base_url}{path}"
        failure: Exception | None = None
        try:
            response = self.session().get(
                url,
                params=params,
                timeout=self.settings.timeout,
                stream=True,
                verify=self.settings.verify_ssl,
                allow_redirects=False,  # each hop would escape the budget slot, the deadline and the cap
            )
        except requests.RequestException as err:
            failure = self._request_failure(err)
        if failure is not None:  # raised outside the except block: nothing of requests is chained
            raise failure
        if 300 <= response.status_code < 400:
            response.close()
            raise self._redirect(symbol, response)
        try:
            status, body = response.status_code, self._body(symbol, response)
        finally:
            response.close()
        return self.interpret(symbol, status, body, response)

    def _redirect(self, symbol: str, response: requests.Response) -> ShortInterestResponseError:
        """A 3xx is refused, naming where it pointed (scheme and host only: no credentials, no query)."""
        status = response.status_code
        location = response.headers.get("Location")
        target = "no Location"
        if location:
            parts = urlsplit(requests.compat.urljoin(self.settings.base_url, location))
            port = f":{parts.port}" if _safe_port(parts) else ""
            target = f"{parts.scheme}://{parts.hostname}{port}" if parts.hostname else "an unreadable URL"
        return ShortInterestResponseError(
            f"{symbol}: HTTP {status} redirect to {clip(target, 120)}; redirects are not followed (each "
            f"would be a request outside the budget): set the host of connection {self.conn_id!r} to the "
            "API's final base URL",
            symbol=symbol,
            status=status,
        )

    # -- the body and the error table ---------------------------------------------------------------------

    def _body(self, symbol: str, response: requests.Response) -> bytes:
        failure: Exception | None = None
        try:
            return read_body(response, self.max_bytes)
        except ResponseTooLarge as err:
            failure = ShortInterestResponseError(
                f"{symbol}: response too large ({err}; the limit is {self.max_bytes:,} bytes decompressed)",
                symbol=symbol,
                status=response.status_code,
            )
        except BadEncoding as err:
            failure = ShortInterestResponseError(f"{symbol}: {clip(str(err), 160)}", symbol=symbol)
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
            failure = self._timeout()
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as err:
            failure = TransientFailure(
                f"connection to {self.settings.base_url} failed while reading the body "
                f"({type(err).__name__})",
                "connection_error",
            )
        raise failure

    def interpret(
        self, symbol: str, status: int, body: bytes, response: requests.Response | None = None
    ) -> dict[str, Any] | None:
        """The error table of DESIGN.md §2 for one answer (``response`` gives Retry-After)."""
        wait = retry_after(response) if response is not None else None
        if status == 429:
            raise TransientFailure("HTTP 429 (rate limited)", "rate_limited", retry_after=wait, status=status)
        if status in (401, 403):
            what = (
                "refused the API token (check the password"
                if self.settings.token
                else "requires an API token (set it as the password"
            )
            raise ShortInterestAuthError(
                f"{symbol}: HTTP {status}: the API {what} of connection {self.conn_id!r})",
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

    def _request_failure(self, err: requests.RequestException) -> ShortInterestError | TransientFailure:
        """The root cause of a failed request: retried (transient) or raised at once (misconfiguration)."""
        url = self.settings.base_url
        where = _host_port(url)
        causes = list(_causes(err))
        gai = next((c for c in causes if isinstance(c, socket.gaierror)), None)
        if gai is not None and gai.errno != socket.EAI_AGAIN:
            return ShortInterestConnectionError(
                f"cannot resolve the host of {url} (name not resolved: {clip(str(gai.strerror), 60)}); "
                f"check the host of connection {self.conn_id!r}",
                error_code="name_not_resolved",
            )
        if isinstance(err, requests.exceptions.SSLError) or any(isinstance(c, ssl.SSLError) for c in causes):
            return self._tls_failure(err, causes)
        if isinstance(err, requests.Timeout):
            return self._timeout()
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            return TransientFailure(
                f"connection to {url} refused (nothing listens on {where}: is the server running, "
                "is the port right?)",
                "connection_refused",
                max_attempts=REFUSED_ATTEMPTS,
            )
        reason = "temporary failure in name resolution" if gai is not None else type(err).__name__
        return TransientFailure(f"connection to {url} failed ({reason})", "connection_error")

    def _tls_failure(
        self, err: BaseException, causes: list[BaseException]
    ) -> ShortInterestConnectionError | TransientFailure:
        """Permanent for an untrusted certificate or plain HTTP on an https URL; any other TLS failure
        (EOF in the handshake while a load balancer restarts, a reset) is transient."""
        url = self.settings.base_url
        reason = next((c for c in causes if isinstance(c, ssl.SSLError)), err)
        text = str(reason)
        if any(marker in text for marker in _PLAIN_HTTP_MARKERS):
            message = (
                f"TLS handshake with {_host_port(url)} failed: the server answered in plain HTTP. "
                f"Use http:// in the host of connection {self.conn_id!r} (or point it at the TLS port)"
            )
        elif isinstance(reason, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
            detail = clip(str(getattr(reason, "verify_message", None) or text), 120)
            message = (
                f"TLS certificate of {_host_port(url)} not trusted ({detail}); install the CA or, for a "
                f"test server only, set verify_ssl false on connection {self.conn_id!r}"
            )
        else:
            return TransientFailure(
                f"TLS handshake with {_host_port(url)} failed ({type(reason).__name__}: {clip(text, 160)})",
                "connection_error",
            )
        return ShortInterestConnectionError(message, error_code="tls_handshake_failed")


# OpenSSL's words when a TLS client gets a plain-HTTP answer ("HTTP/1.1 400 ...") to its hello.
_PLAIN_HTTP_MARKERS = ("WRONG_VERSION_NUMBER", "wrong version number", "record layer failure", "http request")


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


def _causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and what it wraps (args, urllib3's ``reason``, ``__cause__``/``__context__``), once each."""
    todo: list[object] = [err]
    seen: set[int] = set()
    while todo and len(seen) < 50:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo.extend([*item.args, getattr(item, "reason", None), item.__cause__, item.__context__])


def retry_after(response: requests.Response) -> float | None:
    """Seconds the server asked us to wait (``X-Retry-After-Ms`` or ``Retry-After``), if any.

    Clamped to 0..``MAX_RETRY_AFTER``; values that are not finite numbers or dates are ignored.
    """
    millis = response.headers.get("X-Retry-After-Ms")
    if millis:
        try:
            return _clamp_wait(float(millis) / 1000)
        except ValueError:
            pass
    value = response.headers.get("Retry-After")
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
