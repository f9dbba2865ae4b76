"""Checks of task arguments (dates, templates, positive integers) made before any request is spent."""

from __future__ import annotations

import datetime as dt
import operator

from airflow_provider_shortint.exceptions import InvalidParameterError
from airflow_provider_shortint.text import shown


def to_date(value: object, name: str) -> dt.date | None:
    """Accept None, a date/datetime or an ISO ``YYYY-MM-DD`` string (templated values arrive as strings)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
        try:
            return dt.datetime.fromisoformat(text).date()
        except ValueError:
            pass
    raise InvalidParameterError(f"{name} must be an ISO date like '2026-05-15', got {shown(value, 60)}")


def is_template(value: object) -> bool:
    """True for a Jinja string, which can only be checked once Airflow has rendered it."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def integral(value: object) -> int | None:
    """``value`` as an ``int`` when it is of an integral type (``operator.index``: ``numpy.int64`` too),
    else None: booleans, floats and strings are not integers here."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def positive_int(value: object, name: str) -> int:
    """An ``int`` >= 1, e.g. a batch size or a failure bound: any integral type (``operator.index``:
    ``numpy.int64`` too); booleans, floats and strings refused."""
    number = integral(value)
    if number is None or number < 1:
        raise InvalidParameterError(f"{name} must be a positive integer, got {shown(value, 60)}")
    return number
