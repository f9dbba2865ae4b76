"""The request budget in Redis: one sliding window for every process on every machine (DESIGN.md §9).

The window of :mod:`airflow_provider_shortint.budget.window` (a slot taken before a request, stamped when its
response ended) lives in a sorted set, changed only by one Lua script (EVALSHA, EVAL on NOSCRIPT), so
no crash between two steps can corrupt it, and every time comes from the Redis server's clock (TIME),
never a client's. A slot in flight holds a lease (a tenth of the period, 0.5-5 s) that a heartbeat
thread renews; a holder that dies or is stopped stops renewing and its slot frees ``lease + period``
after its last renewal. Redis unreachable: no request is sent; the limiter logs it and waits, and fails
with ``ShortInterestServerError`` (error_code ``rate_limit_backend``) after ``outage_timeout``. A budget
Redis does not know (first use, or Redis restarted without its data) opens one period after it is first
seen, since requests sent just before a restart still count at the API.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from airflow_provider_shortint.budget.window import Heartbeat, RateLimiter, default_lease
from airflow_provider_shortint.exceptions import InvalidParameterError, ShortInterestServerError

log = logging.getLogger(__name__)

# KEYS: window (zset slot -> end stamp, or lease expiry while in flight), leases (zset of slots in
# flight -> lease expiry), born (when this budget was first seen). ARGV: op, period, lease, ttl_ms, ...
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local op, period, lease, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local window, leases, born_key = KEYS[1], KEYS[2], KEYS[3]
local function keep()
  redis.call('PEXPIRE', window, ttl)
  redis.call('PEXPIRE', leases, ttl)
end
if op == 'take' then
  local calls, slot, born_ttl = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
  local born = tonumber(redis.call('GET', born_key) or '')
  if born == nil or born > now + lease then
    redis.call('SET', born_key, string.format('%.6f', now), 'PX', born_ttl)
    return {0, string.format('%.6f', period), 'new'}
  end
  redis.call('PEXPIRE', born_key, born_ttl)
  if born + period > now then
    return {0, string.format('%.6f', born + period - now), 'new'}
  end
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  local ahead = redis.call('ZRANGEBYSCORE', window, '(' .. string.format('%.6f', now + lease), '+inf')
  for _, member in ipairs(ahead) do
    redis.call('ZADD', window, now, member)
    redis.call('ZREM', leases, member)
  end
  redis.call('ZREMRANGEBYSCORE', window, '-inf', now - period)
  local used = redis.call('ZCARD', window)
  if used < calls then
    redis.call('ZADD', window, now + lease, slot)
    redis.call('ZADD', leases, now + lease, slot)
    keep()
    return {1, slot}
  end
  local first = redis.call('ZRANGE', window, 0, 0, 'WITHSCORES')
  local earliest = math.min(tonumber(first[2]), now)
  local in_flight = redis.call('ZCOUNT', window, '(' .. string.format('%.6f', now), '+inf')
  return {0, string.format('%.6f', earliest + period - now), 'full', used, in_flight, #ahead}
elseif op == 'release' then
  redis.call('ZREM', leases, ARGV[5])
  redis.call('ZADD', window, now, ARGV[5])
  keep()
  return 1
elseif op == 'renew' then
  local renewed = 0
  for i = 5, #ARGV do
    if redis.call('ZSCORE', leases, ARGV[i]) then
      redis.call('ZADD', leases, now + lease, ARGV[i])
      redis.call('ZADD', window, now + lease, ARGV[i])
      renewed = renewed + 1
    end
  end
  keep()
  return renewed
end
return redis.error_reply('unknown op ' .. tostring(op))
"""

BORN_TTL_MS = 7 * 24 * 3600 * 1000  # an idle budget is forgotten after a week (and re-opens a period later)
SOCKET_TIMEOUT = 5.0  # a Redis that stops answering mid-command is an outage, not a hang


class RedisRateLimiter(RateLimiter):
    """The sliding window in Redis, read through the Airflow ``redis`` connection ``redis_conn_id``."""

    def __init__(
        self,
        redis_conn_id: str,
        name: str,
        calls: int = 30,
        period: float = 30.0,
        *,
        lease: float | None = None,
        outage_timeout: float | None = None,
        client: Any = None,
    ) -> None:
        super().__init__(calls, period)
        self.redis_conn_id = redis_conn_id
        prefix = f"shortint:budget:{{{name}}}"  # one hash tag: the three keys share a cluster slot
        self.keys = [f"{prefix}:window", f"{prefix}:leases", f"{prefix}:born"]
        self.lease = default_lease(self.period) if lease is None else float(lease)
        self.outage_timeout = max(60.0, 2 * self.period) if outage_timeout is None else float(outage_timeout)
        self._client = client
        self._sha: str | None = None
        self._down_since: float | None = None
        self._heartbeat = Heartbeat(self.lease / 3, self._renew, f"shortint-lease-{name}")

    def __repr__(self) -> str:
        return f"RedisRateLimiter({self.redis_conn_id!r}, {self.calls}/{self.period:g}s)"

    # -- Redis ---------------------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The redis-py client of the connection, built on first use with socket timeouts and no retries
        of its own (this class decides how long to wait)."""
        with self._lock:  # threads of the triggerer's pool may ask at once: one client
            if self._client is None:
                self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        try:
            from airflow.providers.redis.hooks.redis import RedisHook
        except ImportError as err:
            raise InvalidParameterError(
                f"rate_limit_redis_conn_id {self.redis_conn_id!r} needs the Redis provider: "
                "pip install 'airflow-provider-shortint[redis]'"
            ) from err
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = RedisHook(redis_conn_id=self.redis_conn_id).get_conn()  # type: ignore[no-untyped-call]
        if hasattr(client, "get_connection_kwargs"):  # a plain Redis (RedisCluster manages its own)
            kwargs = client.get_connection_kwargs()
            for option in ("socket_timeout", "socket_connect_timeout"):
                if kwargs.get(option) is None:
                    kwargs[option] = SOCKET_TIMEOUT
            client.set_retry(Retry(NoBackoff(), 0))
        return client

    def _call(self, op: str, *args: object) -> Any:
        """Run the script (EVALSHA; EVAL when the server has not cached it, e.g. after a restart)."""
        from redis.exceptions import NoScriptError

        ttl = int((self.period + 2 * self.lease) * 1000) + 1000
        argv = [op, repr(self.period), repr(self.lease), ttl, *args]
        if self._sha is None:
            import hashlib

            self._sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
        try:
            return self.client.evalsha(self._sha, len(self.keys), *self.keys, *argv)
        except NoScriptError:
            return self.client.eval(SCRIPT, len(self.keys), *self.keys, *argv)

    # -- the limiter -----------------------------------------------------------------------------------------

    def _try_take(self) -> str | tuple[float, str]:
        from redis.exceptions import AuthenticationError, AuthorizationError, NoPermissionError

        asked = time.monotonic()
        try:
            reply = self._call("take", self.calls, uuid.uuid4().hex, BORN_TTL_MS)
        except (AuthenticationError, AuthorizationError, NoPermissionError) as err:
            raise InvalidParameterError(
                f"Redis refused connection {self.redis_conn_id!r} of the API budget ({_describe(err)})"
            ) from None
        except Exception as err:
            if not _is_outage(err):
                raise
            return self._unreachable(err, asked)
        if self._down_since is not None:
            log.warning("Redis (%r) answers again after %.1f s", self.redis_conn_id, self._outage())
            self._down_since = None
        if int(reply[0]) == 1:
            return _text(reply[1])
        wait, why = float(_text(reply[1])), _text(reply[2])
        if why == "new":
            return wait, (
                "the budget is new to Redis (first use, or Redis lost its data): it opens one period after "
                "it was first seen, as requests sent before may still count at the API"
            )
        used, in_flight, clamped = (int(value) for value in reply[3:6])
        if clamped:
            log.warning("%d budget slots were stamped in the future (Redis clock stepped back?)", clamped)
        return max(wait, 0.001), f"full, {used - in_flight} used in the last period and {in_flight} in flight"

    def _unreachable(self, err: Exception, asked: float) -> tuple[float, str]:
        """No slot while Redis does not answer: wait, bounded by ``outage_timeout``, then fail."""
        if self._down_since is None:
            self._down_since = asked
            log.warning(
                "Redis (connection %r) holding the API budget does not answer (%s): no request is sent "
                "until it does, for at most %g s",
                self.redis_conn_id,
                _describe(err),
                self.outage_timeout,
            )
        down = self._outage()
        if down >= self.outage_timeout:
            self._down_since = None
            raise ShortInterestServerError(
                f"Redis (connection {self.redis_conn_id!r}) holding the API budget did not answer for "
                f"{down:.0f} s ({_describe(err)}), so no request was sent.",
                error_code="rate_limit_backend",
            )
        return min(1.0, self.outage_timeout - down), "Redis does not answer"

    def _outage(self) -> float:
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    def _taken(self, slot_id: str) -> None:
        self._heartbeat.add(slot_id)

    def _renew(self, slot_ids: list[str]) -> None:
        self._call("renew", *slot_ids)

    def release(self, slot_id: str) -> None:
        """Stamp the slot's end in Redis; if Redis does not answer its lease runs out (same effect, later)."""
        with self._heartbeat.drop(slot_id):
            try:
                self._call("release", slot_id)
            except Exception as err:
                if not _is_outage(err):
                    raise
                log.warning(
                    "could not stamp a budget slot in Redis (%s): it frees %g s after its lease ran out",
                    _describe(err),
                    self.period,
                )


def _is_outage(err: Exception) -> bool:
    """Errors that mean Redis is not (yet) answering, as opposed to a bug or a refused login."""
    from redis.exceptions import (
        BusyLoadingError,
        ClusterDownError,
        ConnectionError,
        ReadOnlyError,
        TimeoutError,
        TryAgainError,
    )

    return isinstance(
        err, (ConnectionError, TimeoutError, BusyLoadingError, ReadOnlyError, ClusterDownError, TryAgainError)
    )


def _describe(err: Exception) -> str:
    """The error on one line, its own sentences joined, so that a message quoting it stays one sentence."""
    text = " ".join(str(err).split())[:200].rstrip(".").replace(". ", "; ")
    return f"{type(err).__name__}: {text}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
