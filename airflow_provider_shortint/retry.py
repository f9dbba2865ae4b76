"""The one retry policy: what a transient failure is, how long to wait, what the server asked for.

Every caller that retries (both hooks' transports, the sensor, the triggers) goes through
:class:`RetryPolicy` (tenacity underneath) or, for a poll loop that owns its own schedule, through
:func:`backoff_delay`; nothing else computes a backoff.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_shortint.exceptions import ShortInterestServerError

if TYPE_CHECKING:
    from tenacity import RetryCallState

_T = TypeVar("_T")

# Longest wait a Retry-After header can impose (a broken "Retry-After: 1e9" must not park a task forever).
MAX_RETRY_AFTER = 300.0
#: Most time one call may spend waiting between its attempts, all retries together: 300 s per
#: Retry-After times up to 100 retries would otherwise park one request for hours.
MAX_TOTAL_WAIT = 15 * 60.0


class TransientFailure(Exception):
    """A failure worth another attempt (-5, HTTP 429/5xx, timeout, connection error), with its reason.

    ``error_code`` names the kind (internal_error, rate_limited, http_error, timeout, connection_error,
    connection_refused); ``ret_code`` is set only when the server itself said -5. ``max_attempts`` caps
    the attempts for this kind of failure below the policy's own (a refused port: 2).
    """

    def __init__(
        self,
        reason: str,
        error_code: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        ret_code: int | None = None,
        max_attempts: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.max_attempts = max_attempts
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
        # The jitter goes inside the cap: "Retry-After: 999999" waits MAX_RETRY_AFTER, not a bit more.
        asked = retry_after + random.uniform(0, 0.1 * retry_after + 0.01)
        delay = max(delay, min(asked, MAX_RETRY_AFTER))
    return delay


class RetryPolicy:
    """Retry a call on :class:`TransientFailure`: ``max_retries`` more attempts, backoff with jitter.

    After the last attempt the failure becomes a :class:`ShortInterestServerError` naming the symbol and
    the number of attempts. The waits of one call together stay within ``max_total_wait`` (default
    :data:`MAX_TOTAL_WAIT`): a retry whose wait would pass it is not made. ``sleep`` is injectable so
    tests do not wait.
    """

    def __init__(
        self,
        max_retries: int,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        *,
        sleep: Callable[[float], None] = time.sleep,
        log: Any = None,
        max_total_wait: float = MAX_TOTAL_WAIT,
    ) -> None:
        self.max_retries = max_retries
        self.max_total_wait = max_total_wait
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.sleep = sleep
        self.log = log or logging.getLogger(__name__)  # a stdlib or structlog logger (the hook's)

    @property
    def attempts(self) -> int:
        return self.max_retries + 1

    def limit(self, failure: TransientFailure) -> int:
        """Attempts allowed for ``failure``: the policy's, or fewer if that kind of failure caps them."""
        cap = failure.max_attempts
        return self.attempts if cap is None else max(1, min(cap, self.attempts))

    def wait(self, retry_state: RetryCallState) -> float:
        """Seconds before the next attempt: backoff, never shorter than the server's Retry-After."""
        failure = _failure_of(retry_state)
        return backoff_delay(
            retry_state.attempt_number, self.backoff_base, self.backoff_max, failure.retry_after
        )

    def call(self, symbol: str, attempt: Callable[[], _T]) -> _T:
        """Run ``attempt`` (a request for ``symbol``) until it returns or fails other than transiently."""
        from tenacity import Retrying, retry_if_exception_type

        def announce(retry_state: RetryCallState) -> None:
            failure = _failure_of(retry_state)
            delay = retry_state.upcoming_sleep
            self.log.warning(
                "%s: %s; retrying in %.2f s (attempt %d of %d)",
                symbol,
                failure.reason,
                delay,
                retry_state.attempt_number + 1,
                self.limit(failure),
            )

        over_budget = [0.0]

        def stop(retry_state: RetryCallState) -> bool:
            # tenacity computes the wait before it asks whether to stop: upcoming_sleep is this wait.
            if retry_state.attempt_number >= self.limit(_failure_of(retry_state)):
                return True
            total = retry_state.idle_for + retry_state.upcoming_sleep
            if total > self.max_total_wait:
                over_budget[0] = total
                return True
            return False

        made = [0]

        def counted() -> _T:
            made[0] += 1
            return attempt()

        retrying = Retrying(
            stop=stop,
            wait=self.wait,
            retry=retry_if_exception_type(TransientFailure),
            sleep=self.sleep,
            before_sleep=announce,
            reraise=True,
        )
        try:
            return retrying(counted)
        except TransientFailure as failure:
            why = (
                f" (the next wait would bring this request's waits to {over_budget[0]:.0f} s, over the "
                f"{self.max_total_wait:.0f} s allowed per request)"
                if over_budget[0]
                else ""
            )
            raise ShortInterestServerError(
                f"{symbol}: {failure.reason}; gave up after {made[0]} attempt(s){why}",
                ret_code=failure.ret_code,
                error_code=failure.error_code,
                symbol=symbol,
                status=failure.status,
            ) from None


def _failure_of(retry_state: RetryCallState) -> TransientFailure:
    outcome = retry_state.outcome
    failure = outcome.exception() if outcome is not None else None
    if not isinstance(failure, TransientFailure):  # pragma: no cover - retry_if_exception_type ensures it
        raise TypeError(f"expected a TransientFailure, got {failure!r}")
    return failure
