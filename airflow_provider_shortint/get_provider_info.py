"""Provider metadata that Airflow reads through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_shortint import __version__

if TYPE_CHECKING:
    from airflow_provider_shortint.transports.settings import TransportSettings


def connection_settings() -> list[type[TransportSettings]]:
    """Settings class of every connection type this provider registers (add a new type here)."""
    from airflow_provider_shortint.transports.opend.settings import FutuOpenDSettings
    from airflow_provider_shortint.transports.rest.settings import RestSettings

    return [RestSettings, FutuOpenDSettings]


def get_provider_info() -> dict[str, Any]:
    """Hooks, operators, sensors, triggers and the connection types of this package."""
    from airflow_provider_shortint.transports.settings import connection_type_info

    return {
        "package-name": "airflow-provider-shortint",
        "name": "Short Interest",
        "description": "HK and US short interest into partitioned Parquet: hook, operator, sensor, trigger.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Short Interest",
                "external-doc-url": "https://github.com/airflow-provider-shortint/airflow-provider-shortint",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Short Interest",
                "python-modules": [
                    "airflow_provider_shortint.hooks.short_interest",
                    "airflow_provider_shortint.hooks.futu_opend",
                    "airflow_provider_shortint.hooks.iceberg_catalog",
                ],
            }
        ],
        "operators": [
            {
                "integration-name": "Short Interest",
                "python-modules": ["airflow_provider_shortint.operators.short_interest"],
            }
        ],
        "sensors": [
            {
                "integration-name": "Short Interest",
                "python-modules": ["airflow_provider_shortint.sensors.short_interest"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Short Interest",
                "python-modules": ["airflow_provider_shortint.triggers.short_interest"],
            }
        ],
        # One entry per connection type of a door, derived from its settings class (extras declared once
        # there), and the Iceberg catalog of table_format="iceberg".
        "connection-types": [
            *(connection_type_info(settings) for settings in connection_settings()),
            iceberg_catalog_info(),
        ],
    }


def iceberg_catalog_info() -> dict[str, Any]:
    """The ``iceberg_catalog`` connection type: the catalog's URI in host, its extras (lake/formats)."""
    return {
        "connection-type": "iceberg_catalog",
        "hook-class-name": "airflow_provider_shortint.hooks.iceberg_catalog.IcebergCatalogHook",
        "hook-name": "Iceberg catalog (short interest)",
        "ui-field-behaviour": {
            "hidden-fields": ["schema"],
            "relabeling": {
                "host": "Catalog URI",
                "login": "User / client id",
                "password": "Password / token",
            },
            "placeholders": {
                "host": "sqlite:////data/iceberg/catalog.db, postgresql+psycopg2://db/iceberg or https://...",
            },
        },
        "conn-fields": {
            "warehouse": {
                "label": "Warehouse",
                "schema": {"type": ["string", "null"]},
                "description": "Where table data lives: an absolute folder, file:// or s3://bucket/prefix.",
            },
            "catalog_name": {
                "label": "Catalog name",
                "schema": {"type": ["string", "null"]},
                "description": "The catalog's name (default shortint).",
            },
            "aws_conn_id": {
                "label": "AWS connection",
                "schema": {"type": ["string", "null"]},
                "description": "The Airflow AWS connection of an s3:// warehouse.",
            },
            "properties": {
                "label": "Catalog properties",
                "schema": {"type": ["object", "null"]},
                "description": "Further pyiceberg catalog properties (strings).",
            },
        },
    }
