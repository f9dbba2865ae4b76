"""The request budget in Redis: one sliding window for every process on every machine (docs/BUDGET.md).

The window of :mod:`airflow_provider_shortint.budget.window` (a slot taken before a request, stamped when its
response ended) lives in **one** Redis hash per budget, changed only by one Lua script (EVALSHA, EVAL on
NOSCRIPT), with every time taken from the Redis server's clock (TIME), never a client's. One key means
eviction, expiry or a flush takes the whole state or none of it; a state that lacks its birth mark, was
written by another run of the Redis server (a restart from a snapshot, a failover) or was born in the
future reads as a new budget, which opens one period later, never as an empty window.

A slot in flight holds a lease (a tenth of the period, 0.5-5 s) that a heartbeat thread renews; a holder
that dies or is stopped stops renewing and its slot frees ``lease + period`` after its last renewal.
Redis unreachable, or refusing writes at its memory limit: no request is sent; the limiter says so once
and waits, and fails with ``ShortInterestServerError`` (error_code ``rate_limit_backend``) after
``outage_timeout``. A refused login or another value at the budget's key: ``InvalidParameterError`` at
once (another attempt cannot fix it).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from airflow_provider_shortint.budget.window import Heartbeat, RateLimiter, default_lease
from airflow_provider_shortint.exceptions import InvalidParameterError, ShortInterestServerError

log = logging.getLogger(__name__)

# KEYS[1]: the budget's hash. Fields: born (server time it was (re)started), run (run_id of the Redis
# server that started it), cause (why it was (re)started), f:<slot> (in flight: lease expiry), d:<slot>
# (ended: the stamp of its end). ARGV: op, period, lease, ttl_ms, then the op's own arguments.
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local key, op = KEYS[1], ARGV[1]
local period, lease, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function at(x) return string.format('%.6f', x) end
if op == 'take' then
  local calls, slot = tonumber(ARGV[5]), ARGV[6]
  local info = redis.pcall('INFO', 'server')  -- a server that refuses INFO: no run check, no failure
  local run = type(info) == 'string' and string.match(info, 'run_id:(%x+)') or ''
  local state = redis.call('HGETALL', key)
  local born, owner, cause, slots = nil, nil, 'new', {}
  for i = 1, #state, 2 do
    local field, value = state[i], state[i + 1]
    if field == 'born' then born = tonumber(value); if born ~= born then born = nil end
    elseif field == 'run' then owner = value
    elseif field == 'cause' then cause = value
    else slots[field] = value end
  end
  local restart = nil
  if born == nil then
    if #state == 0 then restart = 'new' else restart = 'partial' end
  elseif owner ~= run then restart = 'run'
  elseif born > now + lease then restart = 'clock' end
  if restart then
    redis.call('HSET', key, 'born', at(now), 'run', run, 'cause', restart)
    redis.call('PEXPIRE', key, ttl)
    return {0, at(period), restart, 1}
  end
  if born + period > now then
    return {0, at(born + period - now), cause, 0}
  end
  local used, in_flight, clamped, earliest = 0, 0, 0, now
  for field, text in pairs(slots) do
    local kind, id, value = string.sub(field, 1, 2), string.sub(field, 3), tonumber(text)
    if value == nil or value ~= value or (kind ~= 'f:' and kind ~= 'd:') then
      redis.call('HDEL', key, field)
    else
      local stamped = value
      if value > now + lease then  -- stamped in the future: the server's clock stepped back
        value = now
        clamped = clamped + 1
      end
      if kind == 'f:' and value <= now then  -- the lease ran out: the slot counts as ended then
        redis.call('HDEL', key, field)
        redis.call('HSET', key, 'd:' .. id, at(value))
        kind = 'd:'
      elseif value ~= stamped then
        redis.call('HSET', key, field, at(value))
      end
      if value <= now - period then
        redis.call('HDEL', key, kind .. id)
      else
        used = used + 1
        if value > now then in_flight = in_flight + 1 end
        if value < earliest then earliest = value end
      end
    end
  end
  if used < calls then
    redis.call('HSET', key, 'f:' .. slot, at(now + lease))
    redis.call('PEXPIRE', key, ttl)
    return {1, slot}
  end
  return {0, at(earliest + period - now), 'full', used, in_flight, clamped}
elseif op == 'release' then
  redis.call('HDEL', key, 'f:' .. ARGV[5])
  redis.call('HSET', key, 'd:' .. ARGV[5], at(now))
  redis.call('PEXPIRE', key, ttl)
  return 1
elseif op == 'renew' then
  local renewed = 0
  for i = 5, #ARGV do
    local field = 'f:' .. ARGV[i]
    local expiry = tonumber(redis.call('HGET', key, field) or '')
    if expiry and expiry > now then
      redis.call('HSET', key, field, at(now + lease))
      renewed = renewed + 1
    end
  end
  return renewed
end
return redis.error_reply('unknown op ' .. tostring(op))
"""

# Why a budget opens one period from now: the state was missing, incomplete, from another server run or
# born in the future. Requests sent before may still count at the API, so none of these is an empty window.
RESTARTS = {
    "new": "the budget is new to Redis (first use, or its key expired, was evicted or flushed, or Redis "
    "restarted empty)",
    "partial": "part of the budget's state in Redis is missing (its key was evicted or deleted while a "
    "request was in flight, or a field was deleted)",
    "run": "the budget's state was written by another run of the Redis server (a restart from a snapshot "
    "or a failover to a replica), which may lack its latest slots",
    "clock": "the budget was started in the future of the Redis server's clock (the clock stepped back)",
}
OPENS = "it opens one period after that, as requests sent before may still count at the API"

BUDGET_TTL_MS = 7 * 24 * 3600 * 1000  # an idle budget is forgotten after a week (and re-opens a period later)
SOCKET_TIMEOUT = 5.0  # a Redis that stops answering mid-command is an outage, not a hang
RETRY_EVERY = 1.0  # while Redis does not answer (or refuses writes), ask again this often


class RedisRateLimiter(RateLimiter):
    """The sliding window in Redis, read through the Airflow ``redis`` connection ``redis_conn_id``.

    ``clock`` (monotonic) times outages and ``sleep`` waits: both injectable, as in :class:`RateLimiter`;
    the window itself runs on the Redis server's clock.
    """

    def __init__(
        self,
        redis_conn_id: str,
        name: str,
        calls: int = 30,
        period: float = 30.0,
        *,
        lease: float | None = None,
        outage_timeout: float | None = None,
        socket_timeout: float = SOCKET_TIMEOUT,
        client: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(calls, period, clock=clock, sleep=sleep)
        self.redis_conn_id = redis_conn_id
        self.key = f"shortint:budget:{name}"
        self.lease = default_lease(self.period) if lease is None else float(lease)
        self.outage_timeout = max(60.0, 2 * self.period) if outage_timeout is None else float(outage_timeout)
        self.socket_timeout = float(socket_timeout)
        self._client = client
        self._sha: str | None = None
        self._down_since: float | None = None
        self._heartbeat = Heartbeat(
            self.lease / 3,
            self._renew,
            f"shortint-lease-{name}",
            where=f" in Redis (connection {redis_conn_id!r}, key {self.key!r})",
            clock=clock,
        )

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
            kwargs = client.get_connection_kwargs()  # redis-py's default differs by version (None, 5 s)
            kwargs["socket_timeout"] = kwargs["socket_connect_timeout"] = self.socket_timeout
            client.set_retry(Retry(NoBackoff(), 0))
        return client

    def _call(self, op: str, *args: object) -> Any:
        """Run the script (EVALSHA; EVAL when the server has not cached it, e.g. after a restart)."""
        from redis.exceptions import NoScriptError

        argv = [op, repr(self.period), repr(self.lease), BUDGET_TTL_MS, *args]
        if self._sha is None:
            import hashlib

            self._sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
        try:
            return self.client.evalsha(self._sha, 1, self.key, *argv)
        except NoScriptError:
            return self.client.eval(SCRIPT, 1, self.key, *argv)

    # -- the limiter -----------------------------------------------------------------------------------------

    def _try_take(self) -> str | tuple[float, str]:
        asked = self.clock()
        try:
            reply = self._call("take", self.calls, uuid.uuid4().hex)
        except Exception as err:
            return self._failed(err, asked)
        if self._down_since is not None:
            log.warning(
                "Redis (connection %r) holding the API budget answers again after %.1f s",
                self.redis_conn_id,
                self.clock() - self._down_since,
            )
            self._down_since = None
        if int(reply[0]) == 1:
            return _text(reply[1])
        wait, why = float(_text(reply[1])), _text(reply[2])
        if why != "full":
            restart = RESTARTS.get(why, RESTARTS["new"])
            if int(reply[3]) and why != "new":  # the reply that restarted it: state was lost, say so
                log.warning(
                    "API budget in Redis (connection %r, key %r): %s", self.redis_conn_id, self.key, restart
                )
            return max(wait, 0.001), f"{restart}: {OPENS}"
        used, in_flight, clamped = (int(value) for value in reply[3:6])
        if clamped:
            log.warning("%d budget slots were stamped in the future (Redis clock stepped back?)", clamped)
        return max(wait, 0.001), f"full, {used - in_flight} used in the last period and {in_flight} in flight"

    def _failed(self, err: Exception, asked: float) -> tuple[float, str]:
        """Sort a failed take: a configuration another attempt cannot fix raises at once; an outage that
        may pass (no answer, memory limit, disk) waits, bounded by ``outage_timeout``; anything else of
        Redis raises the provider's error; what is not Redis' is a bug and propagates."""
        from redis.exceptions import (
            AuthenticationError,
            AuthorizationError,
            NoPermissionError,
            OutOfMemoryError,
            RedisError,
            ResponseError,
        )

        where = f"connection {self.redis_conn_id!r}, key {self.key!r}"
        if isinstance(err, (AuthenticationError, AuthorizationError, NoPermissionError)):
            raise InvalidParameterError(
                f"Redis refused {where} of the API budget ({_describe(err)})", error_code="rate_limit_backend"
            ) from None
        if isinstance(err, ResponseError) and str(err).startswith("WRONGTYPE"):
            raise InvalidParameterError(
                f"Redis ({where}) holds a value that is not this provider's API budget (WRONGTYPE): "
                "another application uses the name or it was written by hand, so delete that key or give "
                "the connection another rate_limit_key.",
                error_code="rate_limit_backend",
            ) from None
        if isinstance(err, OutOfMemoryError):
            return self._outage(
                err, asked, "is at its memory limit (maxmemory) and refuses to write the budget"
            )
        if isinstance(err, ResponseError) and str(err).startswith("MISCONF"):
            return self._outage(err, asked, "cannot save to disk and refuses to write the budget")
        if _is_outage(err):
            return self._outage(err, asked, "does not answer")
        if isinstance(err, RedisError):
            raise ShortInterestServerError(
                f"Redis ({where}) failed on the API budget ({_describe(err)}), so no request was sent.",
                error_code="rate_limit_backend",
            ) from None
        raise err

    def _outage(self, err: Exception, asked: float, what: str) -> tuple[float, str]:
        """No slot while Redis cannot record one: say so once, wait, fail after ``outage_timeout``."""
        if self._down_since is None:
            self._down_since = asked
            log.warning(
                "Redis (connection %r, key %r) holding the API budget %s (%s): no request is sent until it "
                "does, for at most %g s",
                self.redis_conn_id,
                self.key,
                what,
                _describe(err),
                self.outage_timeout,
            )
        down = self.clock() - self._down_since
        if down >= self.outage_timeout:
            self._down_since = None
            raise ShortInterestServerError(
                f"Redis (connection {self.redis_conn_id!r}, key {self.key!r}) holding the API budget {what} "
                f"for {down:.0f} s ({_describe(err)}), so no request was sent.",
                error_code="rate_limit_backend",
            )
        return min(RETRY_EVERY, self.outage_timeout - down), f"Redis {what}"

    def _taken(self, slot_id: str) -> None:
        self._heartbeat.add(slot_id)

    def _renew(self, slot_ids: list[str]) -> None:
        self._call("renew", *slot_ids)

    def release(self, slot_id: str) -> None:
        """Stamp the slot's end in Redis; if Redis cannot take it the lease runs out (same effect, later)."""
        from redis.exceptions import RedisError

        with self._heartbeat.drop(slot_id):
            try:
                self._call("release", slot_id)
            except RedisError as err:  # the request is done: its result must not be lost to this
                log.warning(
                    "could not stamp a budget slot in Redis (connection %r, key %r: %s): it frees %g s after "
                    "its lease runs out",
                    self.redis_conn_id,
                    self.key,
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
    text = " ".join(str(err).split()).split(" script: ")[0]  # not the script's sha and line
    text = text[:200].rstrip(".").replace(". ", "; ")
    return f"{type(err).__name__}: {text}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
