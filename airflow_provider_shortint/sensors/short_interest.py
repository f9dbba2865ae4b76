"""ShortInterestNewRecordSensor: wait until the API has a record newer than a date (or than the lake)."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout

from airflow_provider_shortint.exceptions import (
    InvalidParameterError,
    NonRetryableError,
    ShortInterestError,
)
from airflow_provider_shortint.validation import is_template, positive_int

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_shortint.hooks.base import ShortInterestBaseHook


class Target(NamedTuple):
    """What one check compares against: the canonical symbol and the reference date (None: any record)."""

    symbol: str
    reference: dt.date | None


class ShortInterestNewRecordSensor(BaseSensorOperator):
    """Done when ``symbol``'s newest record has ``trade_date > after``; pushes its symbol and date.

    The reference date is ``after`` if given; else, with ``lake_path``, the latest ``trade_date`` the lake
    holds for ``symbol`` (read at every poke; nothing stored means any record counts); else any record
    counts. Each poke asks for the newest record (``count=1``; one request, and one retry of a transient
    failure, ``poke_max_retries``) through the hook the connection's type registers
    (``shortint``: REST, ``futu_opend``: OpenD), opened for the poke and closed after it.

    XCom (``return_value``), only when done: ``{"symbol": "HK.00700", "trade_date": "2026-05-22"}``.

    Failure policy:

    * malformed ``symbol``/``after`` (-3), unknown symbol (-7), unsupported market/security (-8), refused
      token (401/403): ``AirflowFailException`` at once, no task retries (malformed input: no request);
    * no data (-10): not done, keep waiting;
    * -5, HTTP 429/5xx, timeouts, garbled bodies: one warning line, not done (the next poke is the retry).
      In deferrable mode the trigger gives up after ``max_failures`` consecutive failed polls
      (``AirflowException``, so the task's ``retries`` apply).

    :param symbol: "HK.00700" or "US.AAPL" (templated)
    :param after: ISO date ``YYYY-MM-DD`` (templated); None: use the lake, or accept any record
    :param lake_path: lake to read the reference date from when ``after`` is None (templated)
    :param table_format: the lake's format, ``"parquet"`` (default), ``"delta"`` or ``"iceberg"``
    :param catalog_conn_id: ``table_format="iceberg"``: the catalog connection (default ``iceberg_default``)
    :param shortint_conn_id: connection id, of type ``shortint`` or ``futu_opend``
    :param deferrable: wait in the triggerer (``ShortInterestNewRecordTrigger``) instead of a worker
    :param max_failures: deferrable mode: consecutive failed polls before the task fails
    :param poke_interval: Airflow's seconds between pokes; ``None``: ``$SHORTINT_POKE_INTERVAL``
        (default 900) of the process that polls, read when it polls: the triggerer once deferred, the
        worker in poke or reschedule mode
    """

    template_fields: Sequence[str] = ("symbol", "after", "lake_path", "shortint_conn_id")
    ui_color = "#d9ecf2"

    #: Attempts per poke beyond the first: small, since the next poke is a retry anyway.
    poke_max_retries = 1

    def __init__(
        self,
        *,
        symbol: str,
        after: str | dt.date | None = None,
        lake_path: str | os.PathLike[str] | None = None,
        shortint_conn_id: str = "shortint_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        max_failures: int = 10,
        table_format: str = "parquet",
        catalog_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        from airflow_provider_shortint.lake import TABLE_FORMATS
        from airflow_provider_shortint.triggers.poll import DEFAULT_POKE_INTERVAL

        if table_format not in TABLE_FORMATS:
            raise InvalidParameterError(f"table_format must be one of {TABLE_FORMATS}, got {table_format!r}")

        #: ``poke_interval=None``: the process that polls reads $SHORTINT_POKE_INTERVAL when it polls.
        self.poke_interval_from_setting = "poke_interval" in kwargs and kwargs["poke_interval"] is None
        if self.poke_interval_from_setting:
            kwargs["poke_interval"] = DEFAULT_POKE_INTERVAL  # replaced by the setting when the task runs
        super().__init__(**kwargs)
        self.symbol = symbol
        self.after = after
        self.lake_path = lake_path
        self.shortint_conn_id = shortint_conn_id
        self.deferrable = deferrable
        self.max_failures = positive_int(max_failures, "max_failures")
        self.table_format = table_format
        self.catalog_conn_id = catalog_conn_id
        # Static (non-templated) values are checked now, so a typo fails the DAG import, not a run.
        from airflow_provider_shortint.symbols import normalize_symbol
        from airflow_provider_shortint.validation import to_date

        if isinstance(symbol, str) and not is_template(symbol):
            normalize_symbol(symbol)
        if after is not None and not is_template(after):
            to_date(after, "after")

    # -- what to compare, and one check ----------------------------------------------------------------

    def target(self) -> Target:
        """The canonical symbol and the reference date: ``after``, else the lake's latest date for the
        symbol, else None. Bad input fails the task without a request."""
        from airflow_provider_shortint.symbols import normalize_symbol
        from airflow_provider_shortint.validation import to_date

        try:
            symbol, after = normalize_symbol(self.symbol), to_date(self.after, "after")
            if after is not None or not self.lake_path:
                return Target(symbol, after)
            from airflow_provider_shortint.lake import open_lake

            options = {"catalog_conn_id": self.catalog_conn_id} if self.catalog_conn_id is not None else {}
            # e.g. a relative path: bad input, not worth a retry
            lake = open_lake(self.lake_path, self.table_format, **options)
            return Target(symbol, lake.latest_dates([symbol]).get(symbol))
        except ShortInterestError as err:
            raise AirflowFailException(f"{self.task_id}: {err.message}") from None

    def _open_hook(self) -> ShortInterestBaseHook:
        """The hook the connection's type registers (REST or OpenD)."""
        from airflow_provider_shortint.hooks.base import hook_for

        return hook_for(self.shortint_conn_id, max_retries=self.poke_max_retries)

    def check(self, target: Target) -> PokeReturnValue:
        """One request for the newest record (its own hook, closed at once): done if newer than the
        reference."""
        symbol, reference = target
        try:
            hook = self._open_hook()
            try:
                latest = hook.get_latest(symbol)
            finally:
                hook.close()
        except ShortInterestError as err:
            if isinstance(err, NonRetryableError):
                raise AirflowFailException(f"{self.task_id}: {err.message}") from None
            self.log.warning(
                "%s: poke failed, the next poke retries: %s", symbol, " ".join(err.message.split())
            )
            return PokeReturnValue(False)
        if latest is None:
            self.log.info("%s: the API has no short interest data yet; waiting", symbol)
            return PokeReturnValue(False)
        newest: dt.date = latest["trade_date"]
        if reference is None or newest > reference:
            self.log.info("%s: new record %s (reference %s)", symbol, newest, reference or "none")
            return PokeReturnValue(True, {"symbol": symbol, "trade_date": newest.isoformat()})
        self.log.info("%s: newest record %s, waiting for one after %s", symbol, newest, reference)
        return PokeReturnValue(False)

    # -- sensor -------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        """Airflow's poke loop (which also runs the first poke of a deferrable sensor), its interval read
        from ``$SHORTINT_POKE_INTERVAL`` here when the sensor was given ``poke_interval=None``."""
        if self.poke_interval_from_setting:
            from airflow_provider_shortint.triggers.poll import configured_poke_interval

            try:
                self.poke_interval = configured_poke_interval()
            except ShortInterestError as err:
                raise AirflowFailException(f"{self.task_id}: {err.message}") from None
        return super().execute(context)

    def poke(self, context: Context) -> PokeReturnValue:
        """One check; in deferrable mode a check that is not done hands the waiting to the triggerer.

        The first poke runs in Airflow's own poke loop (``BaseSensorOperator.execute``), so ``soft_fail``,
        ``never_fail`` and ``silent_fail`` apply to it as to any poke; the trigger compares with the same
        reference date (the lake is read once before deferring).
        """
        target = self.target()
        result = self.check(target)
        if self.deferrable and not result.is_done:
            self._defer(target)
        return result

    def _defer(self, target: Target) -> None:
        from airflow_provider_shortint.triggers.short_interest import ShortInterestNewRecordTrigger

        reference = target.reference
        interval = None if self.poke_interval_from_setting else float(self.poke_interval)
        self.log.info(
            "%s: deferring; the triggerer polls every %s",
            target.symbol,
            "$SHORTINT_POKE_INTERVAL seconds" if interval is None else f"{interval:g} s",
        )
        self.defer(
            trigger=ShortInterestNewRecordTrigger(
                symbol=target.symbol,
                after=None if reference is None else reference.isoformat(),
                shortint_conn_id=self.shortint_conn_id,
                poke_interval=interval,
                max_failures=self.max_failures,
                deadline=time.time() + float(self.timeout),
            ),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, str]:
        """Resume after the trigger fired: the same XCom as a poke, or the trigger's error."""
        if not isinstance(event, dict):
            raise AirflowException(f"{self.task_id}: the trigger returned no event ({event!r})")
        status = event.get("status")
        if status == "success":
            self.log.info("%s: new record %s", event.get("symbol"), event.get("trade_date"))
            return {"symbol": str(event["symbol"]), "trade_date": str(event["trade_date"])}
        message = str(event.get("message") or f"the trigger ended with status {status!r}")
        if status == "timeout":
            raise AirflowSensorTimeout(message)
        if event.get("retryable") is False:
            raise AirflowFailException(message)
        raise AirflowException(message)
