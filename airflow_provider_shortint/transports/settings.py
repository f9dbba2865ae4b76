"""What every connection of this provider declares: its extras, each declared once (DESIGN.md §4, §8, §9).

An extra is one dataclass field made by :func:`extra`: name (the field's), default, conversion with its
validation, label and description. Everything else is derived from those declarations: the known set
(:meth:`TransportSettings.extras`), the reading of ``conn.extra_dejson``
(:meth:`TransportSettings.read_extras`) and the connection form Airflow's UI shows
(:func:`connection_type_info`, used by ``get_provider_info``).

:class:`TransportSettings` holds the extras every connection type takes (timeout, retries, request budget);
each door subclasses it with its own fields (``transports.rest.settings.RestSettings``,
``transports.opend.settings.FutuOpenDSettings``). A new extra is one more :func:`extra` field on the class
that reads it: the check, the default, the UI form field and its description all follow from it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_shortint.text import shown

if TYPE_CHECKING:
    from airflow_provider_shortint.exceptions import InvalidParameterError

_EXTRA = "shortint_extra"  # dataclass field metadata key holding the Extra declaration
_CONN_ID = re.compile(r"[A-Za-z0-9_.\-]{1,250}")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
# The request budget of connections without ``rate_limit_key``: one account, one budget (DESIGN §9).
DEFAULT_BUDGET_KEY = "shortint-account"


@dataclass(frozen=True)
class Extra:
    """How one connection extra is read (``convert`` raises ValueError/TypeError on a bad value) and shown."""

    convert: Callable[[Any], Any]
    rule: str  # what a valid value is, for the error message
    label: str
    description: str
    schema: Mapping[str, Any]  # JSON schema of the UI field (without "null": added, extras are optional)
    placeholder: str | None = None


def extra(
    default: Any,
    convert: Callable[[Any], Any],
    *,
    rule: str,
    label: str,
    description: str,
    schema: Mapping[str, Any],
    placeholder: str | None = None,
) -> Any:
    """A settings field that is read from the connection extra of the same name (absent/"" -> default)."""
    declaration = Extra(convert, rule, label, description, schema, placeholder)
    return field(default=default, metadata={_EXTRA: declaration})


def invalid(message: str) -> InvalidParameterError:
    # Imported here: Airflow calls get_provider_info() (which reads these declarations) while
    # ``import airflow`` is still running, so this module must not import airflow at import time.
    from airflow_provider_shortint.exceptions import InvalidParameterError

    return InvalidParameterError(message)


# -- conversions: each returns the typed value or raises ValueError/TypeError ----------------------------


def number(low: float, high: float, *, low_open: bool = True) -> Callable[[Any], float]:
    """A finite number in (low, high] (or [low, high]); "inf", NaN and booleans are refused."""

    def convert(value: Any) -> float:
        if isinstance(value, bool):
            raise TypeError("boolean")
        result = float(value)
        if not math.isfinite(result) or result > high or result < low or (low_open and result == low):
            raise ValueError("out of range")
        return result

    return convert


def integer(low: int, high: int) -> Callable[[Any], int]:
    """An integer in [low, high] ("5" and 5.0 accepted, 1.5 and booleans refused)."""

    def convert(value: Any) -> int:
        if isinstance(value, bool):
            raise TypeError("boolean")
        result = float(value)
        if not result.is_integer() or not low <= result <= high:
            raise ValueError("out of range")
        return int(result)

    return convert


def boolean(value: Any) -> bool:
    """true/false, 1/0, yes/no (any case) or a JSON boolean."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    table = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if text not in table:
        raise ValueError("not a boolean")
    return table[text]


def absolute_dir(value: Any) -> str:
    """An absolute path that is a directory or does not exist yet (created on first use)."""
    if not isinstance(value, str) or "\x00" in value or not os.path.isabs(value):
        raise ValueError("not an absolute path")
    if os.path.exists(value) and not os.path.isdir(value):
        raise ValueError("not a directory")
    return value


def conn_id(value: Any) -> str:
    """An Airflow connection id: letters, digits, '_', '.', '-'."""
    if not isinstance(value, str) or not _CONN_ID.fullmatch(value):
        raise ValueError("not a connection id")
    return value


def label_text(value: Any) -> str:
    """A short name: 1..200 printable characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= 200 or CONTROL_CHARACTERS.search(value):
        raise ValueError("not a name")
    return value


# -- the extras every connection type shares ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TransportSettings:
    """Timeout, retries and the request budget: the extras of every connection type of this provider."""

    #: conn_type these settings belong to, and how Airflow's connection form shows it (subclasses set).
    conn_type: ClassVar[str] = ""
    hook_class_name: ClassVar[str] = ""
    hook_name: ClassVar[str] = ""
    ui_hidden_fields: ClassVar[tuple[str, ...]] = ()
    ui_relabeling: ClassVar[Mapping[str, str]] = {}
    ui_placeholders: ClassVar[Mapping[str, str]] = {}

    timeout: float = extra(
        30.0,
        number(0, 3600),
        rule="a number of seconds above 0 and at most 3600",
        label="Timeout (s)",
        description="Longest wait for one whole response, connect to last byte (default 30).",
        schema={"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
        placeholder="30",
    )
    max_retries: int = extra(
        5,
        integer(0, 100),
        rule="an integer from 0 to 100",
        label="Max retries",
        description="Retries of a transient failure (-5, 429, 5xx, timeout), default 5.",
        schema={"type": "integer", "minimum": 0, "maximum": 100},
    )
    backoff_base: float = extra(
        1.0,
        number(0, 3600, low_open=False),
        rule="a number of seconds from 0 to 3600",
        label="Backoff base (s)",
        description="First retry waits about this long, doubling each time (default 1).",
        schema={"type": "number", "minimum": 0, "maximum": 3600},
    )
    rate_limit_calls: int = extra(
        30,
        integer(1, 1_000_000),
        rule="an integer from 1 to 1000000",
        label="Rate limit: calls",
        description="Requests allowed per period (default 30).",
        schema={"type": "integer", "minimum": 1, "maximum": 1_000_000},
    )
    rate_limit_period: float = extra(
        30.0,
        number(0, 86400),
        rule="a number of seconds above 0 and at most 86400",
        label="Rate limit: period (s)",
        description="Length of the rate-limit window in seconds (default 30).",
        schema={"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
    )
    rate_limit_state_dir: str | None = extra(
        None,
        absolute_dir,
        rule="an absolute path of a directory",
        label="Shared rate-limit directory",
        description="Folder for a lock file that shares one API budget among all processes of this "
        "machine (unset: per process).",
        schema={"type": "string"},
    )
    rate_limit_redis_conn_id: str | None = extra(
        None,
        conn_id,
        rule="an Airflow connection id",
        label="Shared rate-limit Redis connection",
        description="Id of a redis connection that keeps the budget for every machine (takes precedence "
        "over the directory).",
        schema={"type": "string"},
    )
    rate_limit_key: str | None = extra(
        None,
        label_text,
        rule="1 to 200 printable characters",
        label="Rate-limit budget name",
        description="Names the account's request budget: connections with the same name share one "
        "budget whatever their transport; unset, every connection shares the single default budget "
        f"{DEFAULT_BUDGET_KEY!r}. Give each account its own name.",
        schema={"type": "string"},
    )

    @classmethod
    def extras(cls) -> dict[str, Extra]:
        """Every extra these settings read, by name, in declaration order."""
        return {f.name: f.metadata[_EXTRA] for f in dataclasses.fields(cls) if _EXTRA in f.metadata}

    @classmethod
    def read_extras(cls, conn: Any, label: str | None = None) -> dict[str, Any]:
        """The declared extras of ``conn``, converted and validated; one clear error names a bad one.

        ``label`` names the connection in messages (default ``connection '<conn_id>'``; the hook's
        ``connection_label`` says "this connection" while it tests a temporary one). Unknown extras are
        logged and ignored (a typo should not break a running deployment).
        """
        where = label or connection_label(conn)
        raw_extras = conn.extra_dejson or {}
        if not isinstance(raw_extras, Mapping):
            raise invalid(f"{where}: extra is not a JSON object")
        declared = cls.extras()
        values: dict[str, Any] = {}
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for name, declaration in declared.items():
            raw = raw_extras.get(name)
            if raw is None or raw == "":
                values[name] = defaults[name]
                continue
            value = _converted(declaration.convert, raw)
            if value is _INVALID:  # raised here, not in an except block: nothing is chained to it
                raise invalid(
                    f"{where}: extra {name!r} has an invalid value {shown(raw, 60)}: "
                    f"expected {declaration.rule}"
                )
            values[name] = value
        unknown = sorted(set(raw_extras) - set(declared))
        if unknown:
            logging.getLogger(__name__).warning("%s: ignoring unknown extras %s", where, unknown)
        return values

    def budget_key(self) -> str:
        """Name of the request budget: ``rate_limit_key`` if set, else one default budget for the account
        (DESIGN §9: the 30 / 30 s belong to the account, whichever transport or endpoint spends them)."""
        return self.rate_limit_key or DEFAULT_BUDGET_KEY


_INVALID = object()


def _converted(convert: Callable[[Any], Any], raw: Any) -> Any:
    """``convert(raw)``, or ``_INVALID`` when it refuses the value."""
    try:
        return convert(raw)
    except (TypeError, ValueError, OverflowError):
        return _INVALID


def connection_label(conn: Any) -> str:
    """How messages name a connection: ``connection '<conn_id>'``."""
    return f"connection {getattr(conn, 'conn_id', None)!r}"


def connection_type_info(settings: type[TransportSettings]) -> dict[str, Any]:
    """The ``connection-types`` entry of ``get_provider_info()`` for one settings class: the UI form's
    extra fields (``conn-fields``) and ``ui-field-behaviour``, derived from the declarations."""
    declared = settings.extras()
    placeholders = dict(settings.ui_placeholders)
    placeholders.update({n: e.placeholder for n, e in declared.items() if e.placeholder is not None})
    conn_fields = {}
    for name, declaration in declared.items():
        schema = dict(declaration.schema)
        schema["type"] = [schema["type"], "null"]
        conn_fields[name] = {
            "label": declaration.label,
            "schema": schema,
            "description": declaration.description,
        }
    return {
        "connection-type": settings.conn_type,
        "hook-class-name": settings.hook_class_name,
        "hook-name": settings.hook_name,
        "ui-field-behaviour": {
            "hidden-fields": list(settings.ui_hidden_fields),
            "relabeling": dict(settings.ui_relabeling),
            "placeholders": placeholders,
        },
        "conn-fields": conn_fields,
    }
