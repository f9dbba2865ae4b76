"""The hook a connection's type registers: ``shortint`` -> REST, ``futu_opend`` -> OpenD (DESIGN.md §8).

Operators, sensors and triggers take one ``shortint_conn_id`` whatever the transport; they ask this
module for the hook instead of naming a class. Hook modules are imported only when a hook is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from airflow_provider_shortint.exceptions import InvalidParameterError

if TYPE_CHECKING:
    from airflow_provider_shortint.hooks.base import ShortInterestBaseHook

#: conn_type -> (module, class, the hook's conn id keyword).
HOOKS_BY_CONN_TYPE: dict[str, tuple[str, str, str]] = {
    "shortint": ("airflow_provider_shortint.hooks.short_interest", "ShortInterestHook", "shortint_conn_id"),
    "futu_opend": ("airflow_provider_shortint.hooks.futu_opend", "FutuOpenDHook", "futu_opend_conn_id"),
}


def hook_for_connection(conn_id: str, **kwargs: Any) -> ShortInterestBaseHook:
    """A hook for ``conn_id`` of the class its conn_type registers; ``kwargs`` go to the hook.

    Both hooks accept ``max_retries``, ``backoff_max``, ``rate_limiter`` and ``sleep``.
    Raises ``InvalidParameterError`` for a connection type this provider does not serve.
    """
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    return _build(conn_id, conn.conn_type, kwargs)


async def ahook_for_connection(conn_id: str, **kwargs: Any) -> ShortInterestBaseHook:
    """Async twin for triggers: the connection read with ``aget_connection``, the hook's settings loaded.

    The returned hook never reads the connection synchronously, so its blocking calls can run in an
    executor thread without touching the event loop's connection lookup.
    """
    from airflow.sdk import BaseHook

    conn = await BaseHook.aget_connection(conn_id)
    hook = _build(conn_id, conn.conn_type, kwargs)
    await hook.aload_settings()
    return hook


def _entry(conn_type: str | None, conn_id: str | None) -> tuple[str, str, str]:
    entry = HOOKS_BY_CONN_TYPE.get(conn_type or "")
    if entry is None:
        where = f"connection {conn_id!r} has" if conn_id else "got"
        raise InvalidParameterError(
            f"{where} conn_type {conn_type!r}; the short interest provider serves "
            f"{' and '.join(map(repr, HOOKS_BY_CONN_TYPE))} connections"
        )
    return entry


def _build(conn_id: str, conn_type: str | None, kwargs: dict[str, Any]) -> ShortInterestBaseHook:
    module_name, class_name, keyword = _entry(conn_type, conn_id)
    hook_class = getattr(importlib.import_module(module_name), class_name)
    hook: ShortInterestBaseHook = hook_class(**{keyword: conn_id}, **kwargs)
    return hook
