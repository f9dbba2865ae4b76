"""Table formats beside the Parquet lake (DESIGN.md §12): a Delta Lake or an Iceberg table behind the
lake API (``upsert``, ``read``, ``latest_dates``), plus reading as of a version and maintenance.

- ``base``: the lake API of a table, the one upsert algorithm (read the keys' stored rows from one
  version, commit only what differs, conditioned on that version; re-read and retry when another writer
  committed first), :class:`TableVersion`, :class:`MaintenanceResult`;
- ``delta``: :class:`DeltaTableLake` (deltalake, extra ``[delta]``), a local path or ``s3://conn@bucket/key``;
- ``iceberg``: :class:`IcebergTableLake` (pyiceberg, extra ``[iceberg]``), ``namespace.table`` in a catalog;
- ``catalog``: the Iceberg catalog from an Airflow connection (SQL or REST) or an embedded SQLite one;
- ``aws``: S3 credentials and endpoint from an Airflow AWS connection, for both formats.

:func:`open_table` picks one. Importing this package imports neither deltalake nor pyiceberg: the DAG
processor parses DAGs that name a table format without paying for them. See docs/TABLES.md.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow_provider_shortint.exceptions import InvalidParameterError
from airflow_provider_shortint.lake.formats.base import (
    DEFAULT_RETENTION,
    MaintenanceResult,
    TableLake,
    TableVersion,
)

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

#: The values of ``table_format`` this package serves ("parquet" is the lake of ``lake.parquet_lake``).
TABLE_FORMATS = ("delta", "iceberg")


def open_table(
    path: str | os.PathLike[str] | ObjectStoragePath, table_format: str, **options: Any
) -> TableLake:
    """The table ``path`` names in ``table_format``; nothing is read or created until the first call.

    - ``"delta"``: ``path`` is a local folder, ``file://`` URL or ``s3://conn_id@bucket/key``; no options.
    - ``"iceberg"``: ``path`` is ``"namespace.table"``; options ``catalog_conn_id`` (an Airflow
      connection naming the catalog, default ``iceberg_default``) or ``warehouse`` (an absolute local
      folder holding an embedded SQLite catalog and the data), not both.

    Bad input (unknown format or option, malformed path or name) raises ``InvalidParameterError``; a
    missing extra raises an error naming it.
    """
    _check(table_format, options)
    if table_format == "delta":
        from airflow_provider_shortint.lake.formats.delta import DeltaTableLake

        return DeltaTableLake(path)
    from airflow_provider_shortint.lake.formats.iceberg import IcebergTableLake

    return IcebergTableLake(path, **options)


def table_asset_uri(path: object, table_format: str, **options: Any) -> str:
    """The Asset URI of the table ``open_table(path, table_format, **options)`` opens, from syntax alone
    (no extra imported, no connection read: safe while a DAG is parsed). Delta: ``file:///abs/path`` or
    ``s3://bucket/key``; Iceberg: ``iceberg://<catalog_conn_id>/<namespace.table>`` or
    ``iceberg:/<warehouse>/<namespace.table>``. Equal to ``open_table(...).asset_uri()``."""
    _check(table_format, options)
    if table_format == "delta":
        from airflow_provider_shortint.lake.formats.delta import delta_asset_uri

        return delta_asset_uri(path)
    from airflow_provider_shortint.lake.formats.iceberg import iceberg_asset_uri

    return iceberg_asset_uri(path, **options)


def _check(table_format: object, options: dict[str, Any]) -> None:
    if not isinstance(table_format, str) or table_format not in TABLE_FORMATS:
        raise InvalidParameterError(
            f"table_format must be one of {list(TABLE_FORMATS)} here (or 'parquet' for the Parquet lake), "
            f"got {table_format!r}"
        )
    allowed = set() if table_format == "delta" else {"catalog_conn_id", "warehouse"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        takes = "no options" if not allowed else f"the options {sorted(allowed)}"
        raise InvalidParameterError(f"a {table_format} table takes {takes}, got {unknown}")


__all__ = [
    "DEFAULT_RETENTION",
    "TABLE_FORMATS",
    "MaintenanceResult",
    "TableLake",
    "TableVersion",
    "open_table",
    "table_asset_uri",
]
