"""Errors of the lake, defined in :mod:`airflow_provider_shortint.exceptions` (DESIGN.md §2).

Re-exported here so ``from airflow_provider_shortint.lake.errors import LakeWriteError`` keeps working.
"""

from __future__ import annotations

from airflow_provider_shortint.exceptions import (
    LakeConcurrencyError,
    LakeConflictError,
    LakeError,
    LakeSchemaError,
    LakeWriteError,
)

__all__ = ["LakeConcurrencyError", "LakeConflictError", "LakeError", "LakeSchemaError", "LakeWriteError"]
