"""Errors of the lake: bad tables, failed writes, writers that could not be kept apart."""

from __future__ import annotations


class LakeSchemaError(ValueError):
    """A table or stored file that is not in the lake schema and cannot be cast to it losslessly."""


class LakeWriteError(OSError):
    """A partition could not be written (disk full, permission, network): names the lake and partition."""


class LakeConflictError(RuntimeError):
    """Other writers replaced a partition every time this writer tried to, past the retry bound."""


class LakeConcurrencyError(RuntimeError):
    """A second writer on a store that cannot keep concurrent writers apart: refused, nothing written."""
