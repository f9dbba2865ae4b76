"""What a transient failure is, how long to wait before the next attempt, and what the server asked for."""

from __future__ import annotations

import datetime as dt
import math
import random
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests

# Longest wait a Retry-After header can impose (a broken "Retry-After: 1e9" must not park a task forever).
MAX_RETRY_AFTER = 300.0


class TransientFailure(Exception):
    """A failure worth another attempt (-5, HTTP 429/5xx, timeout, connection error), with its reason.

    ``error_code`` names the kind (internal_error, rate_limited, http_error, timeout, connection_error);
    ``ret_code`` is set only when the server itself said -5.
    """

    def __init__(
        self,
        reason: str,
        error_code: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        ret_code: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_code = error_code
        self.retry_after = retry_after
        self.status = status
        self.ret_code = ret_code


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter before attempt ``attempt + 1``; never shorter than Retry-After.

    The wait is drawn from [c/2, c] with c = min(cap, base * 2**(attempt - 1)), so concurrent clients
    spread out instead of retrying in lockstep.
    """
    ceiling = min(cap, base * 2 ** (attempt - 1))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after + random.uniform(0, 0.1 * retry_after + 0.01))
    return delay


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
