"""Exceptions raised by the provider, one per row of the API's error table (DESIGN.md §2)."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_shortint.text import redact


class ShortInterestError(AirflowException):
    """Base of every provider error; carries the API's ``ret_code``, ``error_code`` and ``message``.

    Registered secrets (``text.register_secret``: the API token) are masked in ``message``, whatever
    built it (a server echoing the token, a symbol list, a URL).
    """

    default_error_code: str | None = None
    default_ret_code: int | None = None

    def __init__(
        self,
        message: str,
        *,
        ret_code: int | None = None,
        error_code: str | None = None,
        symbol: str | None = None,
        status: int | None = None,
    ) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.ret_code = ret_code if ret_code is not None else self.default_ret_code
        self.error_code = error_code if error_code is not None else self.default_error_code
        self.symbol = symbol
        self.status = status

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments must survive pickling (Airflow pickles exceptions between processes).
        return (
            _rebuild,
            (type(self), self.message, self.ret_code, self.error_code, self.symbol, self.status),
        )


def _rebuild(
    cls: type[ShortInterestError],
    message: str,
    ret_code: int | None,
    error_code: str | None,
    symbol: str | None,
    status: int | None,
) -> ShortInterestError:
    return cls(message, ret_code=ret_code, error_code=error_code, symbol=symbol, status=status)


class NonRetryableError(ShortInterestError, AirflowFailException):
    """An error another attempt cannot fix (bad input, unknown symbol, refused token).

    Being an ``AirflowFailException``, it fails a task at once instead of spending its retries.
    """


class InvalidParameterError(NonRetryableError, ValueError):
    """ret_code -3: a malformed symbol, count or other parameter; never retried."""

    default_error_code = "invalid_parameter"
    default_ret_code = -3


class InvalidSymbolError(NonRetryableError):
    """ret_code -7: the symbol is well-formed but no such security exists."""

    default_error_code = "invalid_symbol"
    default_ret_code = -7


class UnsupportedSecurityError(NonRetryableError):
    """ret_code -8: a market or category the API does not cover (only HK/US stocks and ETFs)."""

    default_error_code = "unsupported"
    default_ret_code = -8


class RejectedSymbolsError(NonRetryableError):
    """The API rejected some symbols of a load (-7, -8, -3); ``failures`` maps each to the reason.

    Raised after the other symbols were committed, so nothing fetched is lost.
    """

    default_error_code = "rejected_symbols"

    def __init__(self, message: str, failures: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.failures = {symbol: redact(reason) for symbol, reason in (failures or {}).items()}

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message, self.failures))


class ShortInterestServerError(ShortInterestError):
    """ret_code -5, HTTP 429/5xx, timeouts or connection errors that outlasted every retry."""

    default_error_code = "internal_error"


class ShortInterestResponseError(ShortInterestError):
    """A body that is not the documented JSON envelope, or an unknown ``ret_code``."""

    default_error_code = "malformed_response"


class ShortInterestConnectionError(NonRetryableError):
    """The connection cannot work as configured: host name not resolved, TLS handshake failed, plain
    HTTP answered on an https URL. Not retried (another attempt cannot succeed); the message names the
    root cause."""

    default_error_code = "connection_misconfigured"


class ShortInterestAuthError(NonRetryableError):
    """HTTP 401/403: the connection's API token is missing or was refused."""

    default_error_code = "unauthorized"


# ret_code -> exception class for the codes that end a request without retry.
ERRORS_BY_RET_CODE: dict[int, type[ShortInterestError]] = {
    -3: InvalidParameterError,
    -7: InvalidSymbolError,
    -8: UnsupportedSecurityError,
}


# -- the lake (airflow_provider_shortint.lake; docs/LAKE.md) --------------------------------------------
# A bad table is also a ValueError and a failed write an OSError (with its errno), as Python code expects.


class LakeError(ShortInterestError):
    """Base of the lake's errors: a bad table, a failed write, writers that could not be kept apart."""

    default_error_code = "lake_error"


class LakeSchemaError(LakeError, ValueError):
    """A table or stored file that is not in the lake schema and cannot be cast to it losslessly."""


class LakeWriteError(LakeError, OSError):
    """A partition could not be written (disk full, permission, network, lock not obtained in time)."""


class LakeConflictError(LakeError):
    """Other writers replaced a partition every time this writer tried to, past the retry bound."""


class TableFormatNotInstalledError(NonRetryableError):
    """``table_format="delta"`` or ``"iceberg"`` without its extra (``[delta]``, ``[iceberg]``) installed."""

    default_error_code = "table_format_not_installed"


class LakeConcurrencyError(LakeError):
    """A second writer on a store that cannot keep concurrent writers apart: refused, nothing written."""
