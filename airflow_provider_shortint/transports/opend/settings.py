"""The ``futu_opend`` connection (DESIGN.md §8): OpenD's address, encryption, and the shared budget extras.

Declared once here; ``get_provider_info`` derives the connection form from it. Imports neither airflow
nor futu (Airflow reads these declarations while ``import airflow`` is still running).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from airflow_provider_shortint.text import shown
from airflow_provider_shortint.transports.settings import (
    TransportSettings,
    boolean,
    connection_label,
    extra,
    integer,
    invalid,
    label_text,
    number,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11111
#: futu-api ends a request left unanswered for 12 s whatever it is told (its query-timeout tick): the
#: provider's own bound (the relay's, docs/OPEND.md "Bounds") can only be shorter.
SDK_MAX_TIMEOUT = 12.0
#: The SDK's page range (Qot_GetShortInterest: num 1..50).
OPEND_MAX_COUNT = 50


def key_file(value: Any) -> str:
    """An absolute path of an existing file (the RSA private key configured in OpenD)."""
    if not isinstance(value, str) or "\x00" in value or not os.path.isabs(value):
        raise ValueError("not an absolute path")
    if not os.path.isfile(value):
        raise ValueError("no such file")
    return value


@dataclass(frozen=True, kw_only=True)
class FutuOpenDSettings(TransportSettings):
    """What the OpenD hook takes from a ``futu_opend`` connection, validated."""

    conn_type: ClassVar[str] = "futu_opend"
    hook_class_name: ClassVar[str] = "airflow_provider_shortint.hooks.futu_opend.FutuOpenDHook"
    hook_name: ClassVar[str] = "Futu OpenD"
    ui_hidden_fields: ClassVar[tuple[str, ...]] = ("schema", "login", "password")
    ui_relabeling: ClassVar[Mapping[str, str]] = {"host": "OpenD host", "port": "OpenD port"}
    ui_placeholders: ClassVar[Mapping[str, str]] = {"host": DEFAULT_HOST, "port": str(DEFAULT_PORT)}

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    timeout: float = extra(
        12.0,
        number(0, SDK_MAX_TIMEOUT),
        rule=f"a number of seconds above 0 and at most {SDK_MAX_TIMEOUT:g} (futu-api's own ceiling)",
        label="Timeout (s)",
        description="Longest wait to connect (name, TCP, InitConnect) and for OpenD's answer to one "
        "request (default 12, at most 12).",
        schema={"type": "number", "exclusiveMinimum": 0, "maximum": SDK_MAX_TIMEOUT},
        placeholder="12",
    )
    is_encrypt: bool = extra(
        False,
        boolean,
        rule="true or false",
        label="Encrypt",
        description="Encrypt the protocol with the RSA key configured in OpenD (default false).",
        schema={"type": "boolean", "default": False},
    )
    rsa_private_key: str | None = extra(
        None,
        key_file,
        rule="the absolute path of an existing file",
        label="RSA private key file",
        description="Path of the RSA private key file that OpenD is configured with (needed to encrypt).",
        schema={"type": "string"},
    )
    security_firm: str | None = extra(
        None,
        label_text,
        rule="a futu-api SecurityFirm name such as FUTUSECURITIES",
        label="Security firm",
        description="futu-api SecurityFirm of the account (optional, e.g. FUTUSECURITIES, FUTUINC).",
        schema={"type": "string"},
    )

    @classmethod
    def from_connection(cls, conn: Any, label: str | None = None) -> FutuOpenDSettings:
        """Host (default 127.0.0.1), port (default 11111) and extras of a ``futu_opend`` connection;
        ``label`` names it in messages (default "connection 'id'")."""
        name = label or connection_label(conn)
        host = conn.host.strip() if isinstance(conn.host, str) else ""
        if "@" in host:  # user info may hold a password: never echo what precedes the last "@"
            raise invalid(
                f"{name} host {shown('***@' + host.rpartition('@')[2], 80)} must not "
                "carry a user name or password (OpenD takes none): give only the gateway's host name "
                "or address"
            )
        if "://" in host or "/" in host or " " in host:
            raise invalid(
                f"{name} host {shown(host, 80)} must be a bare host name or address "
                "of the OpenD gateway (e.g. 127.0.0.1), without scheme or path"
            )
        port = DEFAULT_PORT
        if conn.port not in (None, ""):
            try:
                port = integer(1, 65535)(conn.port)
            except (TypeError, ValueError):
                raise invalid(f"{name} port must be 1 to 65535, got {shown(conn.port, 20)}") from None
        settings = cls(host=host or DEFAULT_HOST, port=port, **cls.read_extras(conn, name))
        if settings.is_encrypt and not settings.rsa_private_key:
            raise invalid(
                f"{name} sets is_encrypt but no rsa_private_key: give the path of the RSA "
                "private key file configured in OpenD"
            )
        return settings
