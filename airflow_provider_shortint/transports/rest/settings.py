"""The ``shortint`` connection (DESIGN.md §4): the API's base URL, its token, TLS, and the shared extras."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import SplitResult, urlsplit

from airflow_provider_shortint.text import Secret, shown
from airflow_provider_shortint.transports.settings import (
    CONTROL_CHARACTERS,
    TransportSettings,
    boolean,
    connection_label,
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
    #: The API token (the connection's password); ``repr``/``asdict`` show ``***``, ``reveal()`` gives it.
    token: Secret | None = field(default=None, repr=False)
    verify_ssl: bool = extra(
        True,
        boolean,
        rule="true or false",
        label="Verify SSL",
        description="Verify the server's TLS certificate (default true).",
        schema={"type": "boolean", "default": True},
    )

    @classmethod
    def from_connection(cls, conn: Any, label: str | None = None) -> RestSettings:
        """Read host/port/password/extras of an Airflow connection; a bad value raises one clear error
        that never contains the token or credentials. ``label`` names the connection in messages
        (default ``connection '<conn_id>'``)."""
        where = label or connection_label(conn)
        return cls(
            base_url=base_url_of(where, conn.host, conn.port),
            token=token_of(where, conn.password),
            **cls.read_extras(conn, where),
        )


def base_url_of(where: str, host: object, port: object) -> str:
    """``scheme://host[:port][/path]`` from a connection's host (scheme defaults to https) and port;
    ``where`` names the connection in messages (``connection 'x'`` or ``this connection``)."""
    text = (host if isinstance(host, str) else "").strip()
    field_name = f"{where}: host"
    if not text:
        raise invalid(f"{where} has no host: set it to the API's base URL, e.g. https://api.example.com")
    if "://" not in text:
        text = f"https://{text}"
    parts, url_port = _split(text)
    if parts is None:
        raise invalid(f"{field_name} is not a valid http(s) URL (bad port?)")
    if "@" in parts.netloc:  # user:password@ — never echoed, never sent
        netloc = parts.netloc.rpartition("@")[2]
        raise invalid(
            f"{field_name} holds credentials ({parts.scheme}://***@{netloc}): remove them from the URL "
            "and put the API token in the password field"
        )
    if CONTROL_CHARACTERS.search(text) or " " in text:
        raise invalid(f"{field_name} contains spaces or control characters")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(f"{field_name} {shown(text, 80)} is not an http(s) URL")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise invalid(
            f"{field_name} {shown(text, 80)} has a query string or fragment; give the base URL only "
            "(scheme, host, port, path)"
        )
    netloc = parts.netloc
    if port not in (None, ""):
        number = _port_number(port)
        if number is None:
            raise invalid(f"{where}: port must be 1 to 65535, got {shown(port, 20)}")
        if url_port is None:
            netloc = f"{netloc}:{number}"
    return f"{parts.scheme}://{netloc}{parts.path}".rstrip("/")


def _split(url: str) -> tuple[SplitResult | None, int | None]:
    """``urlsplit(url)`` and its port, or (None, None) when either cannot be read."""
    try:
        parts = urlsplit(url)
        return parts, parts.port
    except ValueError:
        return None, None


def _port_number(port: object) -> int | None:
    try:
        return integer(1, 65535)(port)
    except (TypeError, ValueError, OverflowError):
        return None


#: What a token may hold: visible ASCII and spaces. Bearer tokens are ASCII (RFC 6750), and the HTTP
#: client sends header values as UTF-8, so a token with other characters would reach the server as
#: other bytes than the ones typed.
_TOKEN_TEXT = re.compile(r"[\x20-\x7e]+")


def token_of(where: str, password: object) -> Secret | None:
    """The API token, or None; one that cannot go into an HTTP header is refused with one sentence that
    never shows it (and no exception in the chain holds it: nothing is raised while checking)."""
    if not password:
        return None
    if not isinstance(password, str):
        raise invalid(f"{where}: password (API token) is not text")
    if CONTROL_CHARACTERS.search(password):
        raise invalid(
            f"{where}: password (API token) contains a line break or control character "
            "(often a copy-paste slip); remove it (the token is not shown)"
        )
    if not _TOKEN_TEXT.fullmatch(password):
        raise invalid(
            f"{where}: password (API token) has characters outside ASCII, which an HTTP Authorization "
            "header cannot carry as typed; check the token (it is not shown)"
        )
    return Secret(password)
