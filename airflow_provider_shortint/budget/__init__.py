"""The request budget (DESIGN.md §9, docs/BUDGET.md): at most ``calls`` requests per ``period`` per account.

``window`` holds the sliding window in memory (the threads of one process); ``file_window`` keeps it in a
locked file (the processes of one machine), ``redis_window`` in Redis (every machine). :func:`shared_limiter`
picks the backend a connection's extras ask for; the backends are imported only when chosen.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from airflow_provider_shortint.budget.window import Heartbeat, RateLimiter, Slot, default_lease

__all__ = ["Heartbeat", "RateLimiter", "Slot", "budget_name", "default_lease", "shared_limiter"]

log = logging.getLogger(__name__)

_SHARED: dict[tuple[object, ...], RateLimiter] = {}
_SHARED_LOCK = threading.Lock()


def shared_limiter(
    key: str,
    calls: int,
    period: float,
    state_dir: str | None = None,
    redis_conn_id: str | None = None,
) -> RateLimiter:
    """One limiter per budget key (an account: ``rate_limit_key`` or the default) and budget in this process.

    Precedence: Redis when ``redis_conn_id`` is set (every machine), else a file under ``state_dir``
    (one machine), else memory (one process).
    """
    cache_key = (key, int(calls), float(period), state_dir, redis_conn_id)
    with _SHARED_LOCK:
        limiter = _SHARED.get(cache_key)
        if limiter is None:
            if redis_conn_id:
                from airflow_provider_shortint.budget.redis_window import RedisRateLimiter

                if state_dir:
                    log.info("API budget kept in Redis (%r); rate_limit_state_dir is not used", redis_conn_id)
                limiter = RedisRateLimiter(redis_conn_id, budget_name(key), calls, period)
            elif state_dir:
                from airflow_provider_shortint.budget.file_window import FileRateLimiter

                limiter = FileRateLimiter(
                    Path(state_dir) / f"shortint-budget-{budget_name(key)}.json", calls, period
                )
            else:
                limiter = RateLimiter(calls, period)
            _SHARED[cache_key] = limiter
        return limiter


def budget_name(key: str) -> str:
    """A short stable name for the budget of ``key`` (the connection's budget key)."""
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:16]
