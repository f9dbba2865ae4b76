"""Where things live inside a lake: the one place that knows the partition path format (DESIGN.md §6).

``{lake}/market=HK/dt=2026-05-15/part-0.parquet``; names starting with '_' or '.' are never data.
"""

from __future__ import annotations

import datetime as dt
import re

PART_FILE = "part-0.parquet"
LOCK_DIR = "_locks"  # '_' prefix: pyarrow, Spark, Trino skip it; DuckDB's **/*.parquet never matches it
PARTITION_COLUMNS = ("market", "dt")
TEMP_PREFIX = f".{PART_FILE}."  # temp files: '.'-prefixed and ending in ".tmp", never "*.parquet"
TEMP_SUFFIX = ".tmp"

# A data file as readers see it: market=X/dt=YYYY-MM-DD/<name>.parquet, name not hidden ('.', '_').
_DATA_FILE = re.compile(r"market=([A-Za-z0-9]+)/dt=([0-9]{4}-[0-9]{2}-[0-9]{2})/[^/._][^/]*\.parquet")


def partition_name(market: str, trade_date: dt.date) -> str:
    """``market=HK/dt=2026-05-15``: the partition's folder relative to the lake root."""
    return f"market={market}/dt={trade_date.isoformat()}"


def partition_file(partition: str) -> str:
    """The data file of a partition, relative to the lake root."""
    return f"{partition}/{PART_FILE}"


def is_data_file(rel: str) -> bool:
    """Whether a path relative to the lake root is a data file readers take (not a lock or temp file)."""
    return _DATA_FILE.fullmatch(rel) is not None


def partition_values(rel: str) -> tuple[str, dt.date]:
    """(market, dt) of a data file's relative path."""
    match = _DATA_FILE.fullmatch(rel)
    if match is None:
        raise ValueError(f"{rel!r} is not a data file of the lake")
    return match.group(1), dt.date.fromisoformat(match.group(2))


def lock_name(partition: str) -> str:
    """``_locks/market=HK_dt=2026-05-15.lock``: a local partition's lock file."""
    return f"{LOCK_DIR}/{partition.replace('/', '_')}.lock"


def is_temp_name(name: str) -> bool:
    """A writer's temp file (a dead writer may leave one behind)."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)
