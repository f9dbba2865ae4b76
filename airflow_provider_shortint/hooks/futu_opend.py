"""FutuOpenDHook: the public methods of ``ShortInterestHook`` over the OpenD gateway (DESIGN.md §8),
through futu-api's ``OpenQuoteContext.get_short_interest`` (extra ``[futu]``; imported on first request).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from airflow_provider_shortint.hooks.base import ShortInterestBaseHook
from airflow_provider_shortint.transports.opend.settings import OPEND_MAX_COUNT, FutuOpenDSettings
from airflow_provider_shortint.transports.paging import RawPage, checked_next_key, validate_count

if TYPE_CHECKING:
    import pandas as pd

    from airflow_provider_shortint.transports.opend.transport import OpenDTransport


class FutuOpenDHook(ShortInterestBaseHook):
    """Pages, types, retries and budgets short interest requests to OpenD; one context per hook."""

    conn_name_attr = "futu_opend_conn_id"
    default_conn_name = "futu_opend_default"
    conn_type = "futu_opend"
    hook_name = "Futu OpenD"
    max_count = OPEND_MAX_COUNT

    def __init__(self, futu_opend_conn_id: str = default_conn_name, **options: Any) -> None:
        super().__init__(futu_opend_conn_id, **options)
        self.futu_opend_conn_id = futu_opend_conn_id
        self._transport: OpenDTransport | None = None

    # -- connection ---------------------------------------------------------------------------------------

    def read_settings(self, conn: Any) -> FutuOpenDSettings:
        return FutuOpenDSettings.from_connection(conn, label=self.connection_label)

    @property
    def settings(self) -> FutuOpenDSettings:
        """Validated connection settings, read once per hook."""
        return cast("FutuOpenDSettings", self.load_settings())

    @property
    def transport(self) -> OpenDTransport:
        if self._transport is None:
            from airflow_provider_shortint.transports.opend.transport import OpenDTransport

            self._transport = OpenDTransport(self.settings, label=lambda: self.connection_label)
        return self._transport

    def get_conn(self) -> Any:
        """The hook's one ``futu.OpenQuoteContext``, connected on first use (closed by :meth:`close`)."""
        return self.transport.context()

    def close(self) -> None:
        """Close the context: its sockets and the threads started for it are gone when this returns."""
        if self._transport is not None:
            self._transport.close()

    def describe_endpoint(self) -> str:
        return f"OpenD at {self.settings.host}:{self.settings.port}"

    # -- one request --------------------------------------------------------------------------------------

    def fetch_raw_page(self, symbol: str, count: int, next_key: str | None) -> RawPage:
        """One budgeted, retried SDK call for validated arguments; items in the REST item shape."""
        from airflow_provider_shortint.transports.opend.transport import frames_to_page

        us_df, hk_df = self._frames(symbol, count, next_key)
        return frames_to_page(symbol, us_df, hk_df)

    def _frames(
        self, symbol: str, count: int | None, next_key: str | None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        return self.retry_policy.call(symbol, lambda: self._attempt(symbol, count, next_key))

    def _attempt(
        self, symbol: str, count: int | None, next_key: str | None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        transport = self.transport
        with self.budget_slot():
            frames: tuple[pd.DataFrame, pd.DataFrame] = transport.get_short_interest(symbol, count, next_key)
            return frames

    # -- SDK parity and connection test ------------------------------------------------------------------

    def get_short_interest(
        self, code: str, next_key: str | None = None, num: int | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The SDK's own ``(us_df, hk_df)`` (its columns, ``timestamp`` in seconds, attrs["next_key"] "-1"
        at the end), validated, budgeted and retried; raises instead of returning an error code."""
        from airflow_provider_shortint.symbols import normalize_symbol

        symbol = normalize_symbol(code)
        count = None if num is None else validate_count(num, "num", self.max_count)  # None: OpenD's 10
        return self._frames(symbol, count, checked_next_key(next_key))
