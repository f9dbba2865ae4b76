"""The ``shortint`` connection (DESIGN.md §4): the API's base URL, its token, TLS, and the shared extras."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from airflow_provider_shortint.text import shown
from airflow_provider_shortint.transports.settings import (
    CONTROL_CHARACTERS,
    TransportSettings,
    boolean,
    extra,
    integer,
    invalid,
)

#: The REST endpoint's largest page (``count`` 1..90).
REST_MAX_COUNT = 90


@dataclass(frozen=True, kw_only=True)
class RestSettings(TransportSettings):
    """What the REST hook takes from a ``shortint`` connection, validated."""

    conn_type: ClassVar[str] = "shortint"
    hook_class_name: ClassVar[str] = "airflow_provider_shortint.hooks.short_interest.ShortInterestHook"
    hook_name: ClassVar[str] = "Short Interest"
    ui_hidden_fields: ClassVar[tuple[str, ...]] = ("schema", "login")
    ui_relabeling: ClassVar[Mapping[str, str]] = {"host": "Base URL", "password": "API token"}
    ui_placeholders: ClassVar[Mapping[str, str]] = {
        "host": "https://openapi.example.com",
        "password": "optional bearer token",
    }

    base_url: str
    token: str | None = field(default=None, repr=False)
    verify_ssl: bool = extra(
        True,
        boolean,
        rule="true or false",
        label="Verify SSL",
        description="Verify the server's TLS certificate (default true).",
        schema={"type": "boolean", "default": True},
    )

    @classmethod
    def from_connection(cls, conn: Any) -> RestSettings:
        """Read host/port/password/extras of an Airflow connection; a bad value raises one clear error
        that never contains the token or credentials."""
        conn_name = getattr(conn, "conn_id", None)
        return cls(
            base_url=base_url_of(conn_name, conn.host, conn.port),
            token=token_of(conn_name, conn.password),
            **cls.read_extras(conn),
        )


def base_url_of(conn_name: str | None, host: object, port: object) -> str:
    """``scheme://host[:port][/path]`` from a connection's host (scheme defaults to https) and port."""
    text = (host if isinstance(host, str) else "").strip()
    where = f"connection {conn_name!r} host"
    if not text:
        raise invalid(
            f"connection {conn_name!r} has no host: set it to the API's base URL, e.g. https://api.example.com"
        )
    if "://" not in text:
        text = f"https://{text}"
    try:
        parts = urlsplit(text)
        url_port = parts.port
    except ValueError:
        raise invalid(f"{where} is not a valid http(s) URL (bad port?)") from None
    if "@" in parts.netloc:  # user:password@ — never echoed, never sent
        netloc = parts.netloc.rpartition("@")[2]
        raise invalid(
            f"{where} holds credentials ({parts.scheme}://***@{netloc}): remove them from the URL "
            "and put the API token in the password field"
        )
    if CONTROL_CHARACTERS.search(text) or " " in text:
        raise invalid(f"{where} contains spaces or control characters")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(f"{where} {shown(text, 80)} is not an http(s) URL")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise invalid(
            f"{where} {shown(text, 80)} has a query string or fragment; give the base URL only "
            "(scheme, host, port, path)"
        )
    netloc = parts.netloc
    if port not in (None, ""):
        try:
            number = integer(1, 65535)(port)
        except (TypeError, ValueError):
            raise invalid(
                f"connection {conn_name!r} port must be 1 to 65535, got {shown(port, 20)}"
            ) from None
        if url_port is None:
            netloc = f"{netloc}:{number}"
    return f"{parts.scheme}://{netloc}{parts.path}".rstrip("/")


def token_of(conn_name: str | None, password: object) -> str | None:
    """The API token, or None; one that cannot go into an HTTP header is refused without showing it."""
    if not password:
        return None
    if not isinstance(password, str):
        raise invalid(f"connection {conn_name!r} password (API token) is not text")
    if CONTROL_CHARACTERS.search(password):
        raise invalid(
            f"connection {conn_name!r} password (API token) contains a line break or control character "
            "(often a copy-paste slip); remove it (the token is not shown)"
        )
    try:
        password.encode("latin-1")
    except UnicodeEncodeError:
        raise invalid(
            f"connection {conn_name!r} password (API token) has characters outside Latin-1, which an "
            "HTTP header cannot carry (the token is not shown)"
        ) from None
    return password
