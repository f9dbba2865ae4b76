"""IcebergCatalogHook: the Iceberg catalog of ``table_format="iceberg"`` lakes, from an ``iceberg_catalog``
connection (a SQL catalog on SQLite or Postgres, or a REST catalog; see lake/formats/catalog.py).

Registered so that Airflow's connection form knows the type and its Test button can reach the catalog;
the lake reads the connection itself (``lake.formats.catalog.catalog_from_connection``).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from airflow_provider_shortint.lake.formats.catalog import (
    CATALOG_CONN_TYPE,
    DEFAULT_CATALOG_CONN_ID,
    catalog_from_connection,
)


class IcebergCatalogHook(BaseHook):
    """The pyiceberg catalog an ``iceberg_catalog`` connection names (imported on first use)."""

    conn_name_attr = "catalog_conn_id"
    default_conn_name = DEFAULT_CATALOG_CONN_ID
    conn_type = CATALOG_CONN_TYPE
    hook_name = "Iceberg catalog (short interest)"

    def __init__(self, catalog_conn_id: str = DEFAULT_CATALOG_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.catalog_conn_id = catalog_conn_id

    def get_conn(self) -> Any:
        """The pyiceberg ``Catalog`` (``SqlCatalog`` or ``RestCatalog``), connected."""
        return catalog_from_connection(self.catalog_conn_id).load()

    def test_connection(self) -> tuple[bool, str]:
        """List the catalog's namespaces once: ``(ok, message)``, the message naming no secret."""
        from airflow_provider_shortint.exceptions import ShortInterestError
        from airflow_provider_shortint.text import clip

        try:
            config = catalog_from_connection(self.catalog_conn_id)
            namespaces = config.load().list_namespaces()
        except ShortInterestError as err:
            return False, f"{type(err).__name__}: {err.message}"
        except Exception as err:
            return False, f"{type(err).__name__}: {clip(str(err), 300)}"
        return True, f"Iceberg catalog {config.location}: {len(namespaces)} namespace(s)"
