"""The Iceberg catalog of a table: from an Airflow connection (a SQL catalog on SQLite or Postgres, or a
REST catalog), or embedded (a SQLite catalog in a local warehouse folder, no connection at all).

The connection (conn type ``iceberg_catalog``, default id ``iceberg_default``):

- ``host``: the catalog: ``sqlite:////abs/catalog.db``, ``postgresql+psycopg2://host:5432/db`` (the
  SQL catalog; ``login``/``password`` are the database user) or ``https://catalog.example.com/api/catalog``
  (the REST catalog; ``password`` alone is a bearer token, ``login`` + ``password`` an OAuth2 client id
  and secret). Empty: an embedded SQLite catalog at ``{warehouse}/catalog.db``.
- extras: ``warehouse`` (where table data lives: an absolute folder, ``file://`` or ``s3://bucket/prefix``;
  required for a SQL catalog), ``catalog_name`` (default ``shortint``), ``aws_conn_id`` (the Airflow AWS
  connection of an ``s3://`` warehouse), ``properties`` (further pyiceberg catalog properties, strings).

Only syntax is checked here, and nothing secret is ever printed: :attr:`CatalogConfig.location` is the
catalog's URI without user or password, which also names the table for Assets and OpenLineage.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from airflow_provider_shortint.exceptions import InvalidParameterError
from airflow_provider_shortint.lake.location import LocalLocation, parse_location
from airflow_provider_shortint.text import register_secret, shown

DEFAULT_CATALOG_CONN_ID = "iceberg_default"
CATALOG_CONN_TYPE = "iceberg_catalog"
DEFAULT_CATALOG_NAME = "shortint"
#: The embedded catalog's database file inside its warehouse folder.
EMBEDDED_CATALOG_FILE = "catalog.db"
#: Attempts to open a SQL catalog whose tables other processes are creating at the same moment.
CATALOG_OPEN_ATTEMPTS = 5
_EXTRAS = ("warehouse", "catalog_name", "aws_conn_id", "properties")
_NAME = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")


@dataclass(frozen=True, repr=False)
class CatalogConfig:
    """How to reach one Iceberg catalog; ``properties`` may hold secrets and are never shown."""

    name: str
    kind: str  # "sql" or "rest"
    location: str  # the catalog's URI without credentials: the lineage namespace
    properties: Mapping[str, str] = field(default_factory=dict)
    aws_conn_id: str | None = None  # S3 warehouse credentials, resolved when the catalog is loaded
    warehouse: str | None = None
    folder: str | None = None  # an embedded catalog's local folder, created on first use

    def __repr__(self) -> str:
        return f"CatalogConfig(name={self.name!r}, kind={self.kind!r}, location={self.location!r})"

    def load(self) -> Any:
        """The pyiceberg catalog (``SqlCatalog`` or ``RestCatalog``); connects on first use."""
        properties = dict(self.properties)
        if self.folder is not None:
            os.makedirs(self.folder, exist_ok=True)
        if self.aws_conn_id is not None or (self.warehouse or "").startswith(("s3://", "s3a://")):
            from airflow_provider_shortint.lake.formats.aws import aws_access

            properties = {**aws_access(self.aws_conn_id).iceberg_properties(), **properties}
        if self.kind == "rest":
            from pyiceberg.catalog.rest import RestCatalog

            return RestCatalog(self.name, **properties)
        from pyiceberg.catalog.sql import SqlCatalog

        # Processes opening a new SQL catalog at once race to create its two tables: the losers see
        # "already exists" (or SQLite's "locked") and the next attempt finds the tables.
        for attempt in range(1, CATALOG_OPEN_ATTEMPTS + 1):
            try:
                return SqlCatalog(self.name, **properties)
            except Exception as err:
                text = str(err).lower()
                racing = type(err).__name__ == "OperationalError" and (
                    "already exists" in text or "locked" in text
                )
                if not racing or attempt == CATALOG_OPEN_ATTEMPTS:
                    raise
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")


def embedded_catalog(warehouse: object) -> CatalogConfig:
    """A SQLite catalog at ``{warehouse}/catalog.db`` with the tables' data under ``warehouse`` (an
    absolute local folder): one machine, no Airflow connection."""
    location = parse_location(warehouse, syntax_only=True) if isinstance(warehouse, str) else None
    if not isinstance(location, LocalLocation):
        raise InvalidParameterError(
            f"warehouse must be an absolute local folder for the embedded catalog, got {shown(warehouse)}: "
            "for object storage name a catalog connection (catalog_conn_id)"
        )
    database = os.path.join(location.root, EMBEDDED_CATALOG_FILE)
    uri = f"sqlite:///{database}"
    return CatalogConfig(
        name=DEFAULT_CATALOG_NAME,
        kind="sql",
        location=uri,
        properties={"uri": uri, "warehouse": location.uri, "init_catalog_tables": "true"},
        warehouse=location.uri,
        folder=location.root,
    )


def catalog_from_connection(conn_id: object) -> CatalogConfig:
    """The catalog the Airflow connection ``conn_id`` describes (see the module docstring)."""
    if not isinstance(conn_id, str) or not conn_id.strip():
        raise InvalidParameterError(f"catalog_conn_id must be a connection id, got {shown(conn_id)}")
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    for secret in (conn.password,):
        register_secret(secret)
    extra = conn.extra_dejson or {}
    unknown = sorted(set(extra) - set(_EXTRAS))
    if unknown:
        raise InvalidParameterError(
            f"connection {conn_id!r}: unknown extra(s) {unknown}; an Iceberg catalog takes {list(_EXTRAS)}"
        )
    name = extra.get("catalog_name") or DEFAULT_CATALOG_NAME
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidParameterError(
            f"connection {conn_id!r}: catalog_name must be 1-64 letters, digits, '_' or '-', "
            f"got {shown(name)}"
        )
    more = extra.get("properties") or {}
    if isinstance(more, str):
        try:
            more = json.loads(more)
        except ValueError:
            more = None
    if not isinstance(more, dict) or not all(isinstance(v, str) for v in more.values()):
        raise InvalidParameterError(
            f"connection {conn_id!r}: the extra 'properties' must be an object of strings"
        )
    aws_conn_id = extra.get("aws_conn_id") or None
    if aws_conn_id is not None and not isinstance(aws_conn_id, str):
        raise InvalidParameterError(f"connection {conn_id!r}: aws_conn_id must be a connection id")
    warehouse = extra.get("warehouse") or None
    host = (conn.host or "").strip()
    if not host:
        if warehouse is None:
            raise InvalidParameterError(
                f"connection {conn_id!r} names no catalog (host) and no warehouse: give host "
                "(sqlite:////abs/catalog.db, postgresql://..., https://...) or a local warehouse folder"
            )
        embedded = embedded_catalog(warehouse)
        return CatalogConfig(
            name,
            "sql",
            embedded.location,
            {**embedded.properties, **more},
            aws_conn_id,
            embedded.warehouse,
            embedded.folder,
        )
    warehouse_uri = _warehouse_uri(warehouse, conn_id) if warehouse is not None else None
    parts = urlsplit(host)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        properties: dict[str, str] = {"uri": _with_port(host, conn.port)}
        if conn.login and conn.password:
            properties["credential"] = f"{conn.login}:{conn.password}"
        elif conn.password:
            properties["token"] = conn.password
        if warehouse_uri is not None:
            properties["warehouse"] = warehouse_uri
        location = _printable(_with_port(host, conn.port))
        return CatalogConfig(name, "rest", location, {**properties, **more}, aws_conn_id, warehouse_uri)
    if scheme.partition("+")[0] in _SQL_SCHEMES:
        if warehouse_uri is None:
            raise InvalidParameterError(
                f"connection {conn_id!r}: a SQL catalog needs the extra 'warehouse' (where table data lives)"
            )
        uri = _with_credentials(_with_port(host, conn.port), conn.login, conn.password)
        properties = {"uri": uri, "warehouse": warehouse_uri, "init_catalog_tables": "true"}
        location = _printable(_with_port(host, conn.port))
        return CatalogConfig(name, "sql", location, {**properties, **more}, aws_conn_id, warehouse_uri)
    raise InvalidParameterError(
        f"connection {conn_id!r}: host must name a SQL catalog (sqlite:///..., postgresql://...) or a REST "
        f"catalog (https://...), got a {scheme or 'scheme-less'} URI"
    )


def _warehouse_uri(warehouse: object, conn_id: str) -> str:
    """``file:///abs`` or ``s3://bucket/prefix`` (a connection id before '@' is refused: see aws_conn_id)."""
    if not isinstance(warehouse, str):
        raise InvalidParameterError(f"connection {conn_id!r}: warehouse must be a string")
    location = parse_location(warehouse, syntax_only=True)
    if isinstance(location, LocalLocation):
        return location.uri
    if location.conn_id:
        raise InvalidParameterError(
            f"connection {conn_id!r}: give the warehouse without a connection id ({location.uri}) and "
            "name the AWS connection in the extra 'aws_conn_id'"
        )
    return location.uri


def _with_port(host: str, port: int | None) -> str:
    parts = urlsplit(host)
    if not port or parts.port is not None or not parts.hostname:
        return host
    netloc = f"{parts.netloc}:{int(port)}"
    return urlunsplit(parts._replace(netloc=netloc))


def _with_credentials(uri: str, login: str | None, password: str | None) -> str:
    """A SQLAlchemy URL with the connection's database user in it (the URL is never shown)."""
    parts = urlsplit(uri)
    if not login or not parts.hostname:
        return uri
    user = quote(login, safe="")
    if password:
        user += ":" + quote(password, safe="")
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def _printable(uri: str) -> str:
    """``uri`` without user, password, query or fragment, and without a SQLAlchemy driver suffix."""
    parts = urlsplit(uri)
    scheme = parts.scheme.partition("+")[0].lower()
    host = parts.netloc.rpartition("@")[2]
    if not host:  # sqlite:////abs/catalog.db: urlunsplit would drop the empty authority
        return f"{scheme}://{parts.path}"
    return urlunsplit((scheme, host, parts.path.rstrip("/"), "", ""))
