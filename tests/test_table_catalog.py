"""The Iceberg catalog from an Airflow connection (docs/TABLES.md): SQL (SQLite, Postgres) and REST,
an embedded SQLite catalog; names for Assets and OpenLineage; secrets never shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shortint.exceptions import InvalidParameterError
from airflow_provider_shortint.lake.formats import open_table
from airflow_provider_shortint.lake.formats.catalog import catalog_from_connection
from tests._fixtures_tables import D1, HK, contents, make_table

SECRET = "s3cr3t-pa55word"


def _conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> str:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "iceberg_catalog", **fields})
    )
    return conn_id


def test_sqlite_catalog_from_a_connection_end_to_end(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    conn_id = _conn(
        monkeypatch,
        "iceberg_sqlite",
        host=f"sqlite:///{tmp_path}/catalog.db",
        extra={"warehouse": f"{tmp_path}/w", "catalog_name": "lake"},
    )
    table = open_table("research.short_interest", "iceberg", catalog_conn_id=conn_id)
    assert table.asset_uri() == "iceberg://iceberg_sqlite/research.short_interest"
    table.upsert(make_table(HK, [D1]))
    assert contents(table.read()) == contents(make_table(HK, [D1]))
    assert table.lineage_dataset() == (f"sqlite:///{tmp_path}/catalog.db", "research.short_interest")
    assert any((tmp_path / "w").rglob("*.parquet"))


def test_embedded_catalog_from_a_connection_without_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    conn_id = _conn(monkeypatch, "iceberg_default", extra={"warehouse": str(tmp_path / "w")})
    table = open_table("shortint.short_interest", "iceberg")  # iceberg_default
    table.upsert(make_table(HK, [D1]))
    assert (tmp_path / "w" / "catalog.db").is_file()
    assert catalog_from_connection(conn_id).location == f"sqlite:///{tmp_path}/w/catalog.db"


def test_postgres_catalog_keeps_its_password_out_of_sight(monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = _conn(
        monkeypatch,
        "iceberg_pg",
        host="postgresql+psycopg2://db.example.com/catalog",
        port=5433,
        login="lake",
        password=SECRET,
        extra={"warehouse": "s3://bucket/warehouse", "aws_conn_id": "aws_lake"},
    )
    config = catalog_from_connection(conn_id)
    assert (config.kind, config.location) == ("sql", "postgresql://db.example.com:5433/catalog")
    assert config.properties["uri"] == f"postgresql+psycopg2://lake:{SECRET}@db.example.com:5433/catalog"
    assert config.properties["warehouse"] == "s3://bucket/warehouse" and config.aws_conn_id == "aws_lake"
    assert SECRET not in repr(config) and SECRET not in config.location
    table = open_table("a.b", "iceberg", catalog_conn_id=conn_id)
    assert SECRET not in repr(table) and SECRET not in table.uri
    assert table.lineage_dataset() == ("postgresql://db.example.com:5433/catalog", "a.b")


@pytest.mark.parametrize(
    ("login", "properties"),
    [(None, {"token": SECRET}), ("client-id", {"credential": f"client-id:{SECRET}"})],
)
def test_rest_catalog_token_or_client_credentials(
    monkeypatch: pytest.MonkeyPatch, login: str | None, properties: dict[str, str]
) -> None:
    fields: dict[str, Any] = {"host": "https://catalog.example.com/api/catalog", "password": SECRET}
    if login:
        fields["login"] = login
    conn_id = _conn(
        monkeypatch, "iceberg_rest", extra={"properties": {"scope": "PRINCIPAL_ROLE:ALL"}}, **fields
    )
    config = catalog_from_connection(conn_id)
    assert config.kind == "rest" and config.location == "https://catalog.example.com/api/catalog"
    assert {
        **properties,
        "uri": "https://catalog.example.com/api/catalog",
        "scope": "PRINCIPAL_ROLE:ALL",
    } == dict(config.properties)
    assert SECRET not in repr(config)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"extra": {}}, "names no catalog"),
        ({"host": "ftp://x/catalog", "extra": {"warehouse": "/w"}}, "must name a SQL catalog"),
        ({"host": "sqlite:////tmp/c.db"}, "needs the extra 'warehouse'"),
        ({"host": "sqlite:////tmp/c.db", "extra": {"warehouse": "relative/w"}}, "relative"),
        ({"host": "sqlite:////tmp/c.db", "extra": {"warehouse": "s3://aws_x@bucket/w"}}, "aws_conn_id"),
        ({"host": "sqlite:////tmp/c.db", "extra": {"warehouse": "/w", "colour": "blue"}}, "unknown extra"),
        (
            {"host": "sqlite:////tmp/c.db", "extra": {"warehouse": "/w", "catalog_name": "a b"}},
            "catalog_name",
        ),
        ({"host": "sqlite:////tmp/c.db", "extra": {"warehouse": "/w", "properties": [1]}}, "properties"),
        ({"extra": {"warehouse": "s3://bucket/w"}}, "absolute local folder"),
    ],
)
def test_bad_connections_are_one_clear_sentence(
    monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], message: str
) -> None:
    conn_id = _conn(monkeypatch, "iceberg_bad", password=SECRET, **fields)
    with pytest.raises(InvalidParameterError, match=message) as caught:
        catalog_from_connection(conn_id)
    assert SECRET not in str(caught.value)


def test_the_connection_type_gives_a_hook_whose_test_reaches_the_catalog(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``iceberg_catalog`` is registered: Airflow's Connection.get_hook gives IcebergCatalogHook, and the
    Test button's test_connection lists the catalog's namespaces without showing a secret."""
    from airflow.sdk import BaseHook

    from airflow_provider_shortint.get_provider_info import get_provider_info
    from airflow_provider_shortint.hooks.iceberg_catalog import IcebergCatalogHook

    types = {entry["connection-type"] for entry in get_provider_info()["connection-types"]}
    assert "iceberg_catalog" in types
    conn_id = _conn(monkeypatch, "iceberg_hooked", extra={"warehouse": str(tmp_path / "w")})
    open_table("shortint.short_interest", "iceberg", catalog_conn_id=conn_id).upsert(make_table(HK, [D1]))
    hook = BaseHook.get_connection(conn_id).get_hook()
    assert isinstance(hook, IcebergCatalogHook)
    assert hook.test_connection() == (
        True,
        f"Iceberg catalog sqlite:///{tmp_path}/w/catalog.db: 1 namespace(s)",
    )
    _conn(monkeypatch, "iceberg_broken", host="postgresql://db.invalid/x", password=SECRET)
    ok, message = IcebergCatalogHook("iceberg_broken").test_connection()
    assert not ok and "warehouse" in message and SECRET not in message
