"""The partitioned Parquet lake (DESIGN.md §6, §10): atomic, idempotent upserts keyed on (symbol, trade_date).

Layout: ``{lake}/market=HK/year=2026/part-0.parquet``, one file per market and calendar year, every
file in :func:`~airflow_provider_shortint.records.lake_schema`, rows sorted by (symbol, trade_date).
Modules:

- ``location``: ``lake_path`` -> local directory or object-storage location (syntax only, no I/O);
- ``layout``: the names inside a lake: partitions, staging, quarantine (the one place that knows them);
- ``arrow``: pure Arrow functions (conform, check, split into partitions, merge, Parquet in and out);
- ``stores``: the store interface and its write guard (``stores.base``) and the back ends:
  ``stores.local`` (flock + temp + fsync + ``os.replace``), ``stores.object`` (any fsspec store, single
  writer), ``stores.s3`` (compare-and-swap); ``stores.open_store`` picks one;
- ``lease``: the single-writer lease of stores without conditional writes;
- ``parquet_lake``: ``ParquetLake`` (upsert, stage + commit_staged, read, latest_dates);
- ``migrate``: moves a lake of the daily layout (``market=HK/dt=2026-05-15/...``) into a new folder;
- ``formats``: Delta Lake and Iceberg tables behind the same API (DESIGN.md §12).

:func:`open_lake` opens any of them by ``table_format``.

pyarrow is imported inside the functions that need it: the DAG processor imports operator modules on
every parse and must not pay for it. See docs/LAKE.md.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, TypeAlias

from airflow_provider_shortint.exceptions import (
    InvalidParameterError,
    LakeConcurrencyError,
    LakeConflictError,
    LakeError,
    LakeSchemaError,
    LakeWriteError,
)
from airflow_provider_shortint.lake.layout import LOCK_DIR, PART_FILE, PARTITION_COLUMNS
from airflow_provider_shortint.lake.parquet_lake import ParquetLake, StageResult, UpsertResult

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_shortint.lake.formats.base import TableLake

#: A lake of any table format: each has ``uri``, ``upsert``, ``read`` and ``latest_dates``.
Lake: TypeAlias = "ParquetLake | TableLake"
#: The values ``table_format`` takes.
TABLE_FORMATS = ("parquet", "delta", "iceberg")

__all__ = [
    "LOCK_DIR",
    "PARTITION_COLUMNS",
    "PART_FILE",
    "TABLE_FORMATS",
    "Lake",
    "LakeConcurrencyError",
    "LakeConflictError",
    "LakeError",
    "LakeSchemaError",
    "LakeWriteError",
    "ParquetLake",
    "StageResult",
    "UpsertResult",
    "open_lake",
]


def open_lake(
    path: str | os.PathLike[str] | ObjectStoragePath, table_format: str = "parquet", **options: Any
) -> Lake:
    """Open the lake at ``path`` in ``table_format``: the partitioned Parquet lake (default), or a Delta
    Lake or Iceberg table (``lake.formats.open_table``; ``options``: the Iceberg catalog's
    ``catalog_conn_id`` or ``warehouse``).

    Parquet and Delta: an absolute local path, a ``file://`` URL, or an object storage URL in Airflow's
    form ``s3://aws_conn_id@bucket/prefix`` (the connection id before '@'); Iceberg: ``namespace.table``.
    Only the syntax is checked here; nothing is read or created until the first upsert or read. Raises
    ``InvalidParameterError`` for relative paths, '..' segments, surrounding whitespace, a path that is
    a file, empty strings, non-paths, unknown schemes, an unknown format and options the format does not
    take.
    """
    if table_format == "parquet":
        if options:
            raise InvalidParameterError(
                f"the Parquet lake takes no options, got {sorted(options)} (catalog_conn_id and warehouse "
                "are for table_format 'iceberg')"
            )
        return ParquetLake(path)
    from airflow_provider_shortint.lake.formats import open_table

    return open_table(path, table_format, **options)
