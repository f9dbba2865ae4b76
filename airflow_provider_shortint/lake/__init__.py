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
- ``parquet_lake``: ``ParquetLake`` (upsert, stage + commit_staged, read, latest_dates) and ``open_lake``;
- ``migrate``: moves a lake of the daily layout (``market=HK/dt=2026-05-15/...``) into a new folder.

pyarrow is imported inside the functions that need it: the DAG processor imports operator modules on
every parse and must not pay for it. See docs/LAKE.md.
"""

from __future__ import annotations

from airflow_provider_shortint.exceptions import (
    LakeConcurrencyError,
    LakeConflictError,
    LakeError,
    LakeSchemaError,
    LakeWriteError,
)
from airflow_provider_shortint.lake.layout import LOCK_DIR, PART_FILE, PARTITION_COLUMNS
from airflow_provider_shortint.lake.parquet_lake import ParquetLake, StageResult, UpsertResult, open_lake

__all__ = [
    "LOCK_DIR",
    "PARTITION_COLUMNS",
    "PART_FILE",
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
