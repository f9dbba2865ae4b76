"""Where things live inside a lake: the one place that knows its names (DESIGN.md §6, docs/LAKE.md).

``{lake}/market=HK/year=2026/part-0.parquet``: one file per market and calendar year, rows sorted by
(symbol, trade_date), row groups of ``ROW_GROUP_ROWS`` rows. A key (symbol, trade_date) always lives in
the same file, so no write ever moves a row from one file to another (a reader globbing ``*.parquet``
would see it twice or not at all in between). Names starting with '_' or '.' are never data:
``_locks/``, ``_staging/``, ``_quarantine/`` and temp files.

The daily layout of earlier lakes (``market=HK/dt=2026-05-15/part-0.parquet``) is read, never written:
``lake.migrate`` moves such a lake into this layout.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass

from airflow_provider_shortint.markets import MARKETS

PART_FILE = "part-0.parquet"
PARTITION_COLUMNS = ("market", "year")  # hive keys in the path, never columns of the files
LEGACY_PARTITION_COLUMNS = ("market", "dt")  # the daily layout's keys
#: Rows per row group: a filter on one symbol reads one group per file (files are sorted by symbol).
ROW_GROUP_ROWS = 131_072
#: Columns stored with dictionary encoding (few distinct values per file); the measures are not.
DICTIONARY_COLUMNS = ("symbol", "trade_date", "timestamp")

LOCK_DIR = "_locks"  # local lakes: one empty lock file per partition
STAGING_DIR = "_staging"  # rows fetched and made durable, waiting for their commit
QUARANTINE_DIR = "_quarantine"  # files the lake did not write, moved out of the readers' way
TEMP_PREFIX = f".{PART_FILE}."  # temp files: '.'-prefixed and ending in ".tmp", never "*.parquet"
TEMP_SUFFIX = ".tmp"
STAGED_SUFFIX = ".stage"  # staged rows (Parquet bytes): no "*.parquet" glob matches them
QUARANTINED_SUFFIX = ".quarantined"

_YEAR = re.compile(r"year=([0-9]{4})")
_DAY = re.compile(r"dt=([0-9]{4}-[0-9]{2}-[0-9]{2})")
_MARKET = re.compile(r"market=([A-Za-z0-9]+)")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_NAME = 120


@dataclass(frozen=True, order=True)
class Partition:
    """One data file of the lake: a market and a calendar year (``legacy``: one day of the daily layout)."""

    market: str
    first: dt.date  # first trade_date the file may hold
    last: dt.date  # last trade_date the file may hold
    legacy: bool = False

    @property
    def name(self) -> str:
        """``market=HK/year=2026`` (legacy: ``market=HK/dt=2026-05-15``), relative to the lake root."""
        if self.legacy:
            return f"market={self.market}/dt={self.first.isoformat()}"
        return f"market={self.market}/year={self.first.year:04d}"

    @property
    def file(self) -> str:
        """The partition's data file, relative to the lake root."""
        return f"{self.name}/{PART_FILE}"

    @property
    def year(self) -> int:
        return self.first.year


def year_partition(market: str, year: int) -> Partition:
    """The partition of ``market`` holding the trade dates of ``year``."""
    return Partition(market, dt.date(year, 1, 1), dt.date(year, 12, 31))


def partition_of(market: str, trade_date: dt.date) -> Partition:
    """The partition a row of ``market`` on ``trade_date`` belongs to."""
    return year_partition(market, trade_date.year)


def parse_data_file(rel: str) -> Partition | None:
    """The partition whose data file ``rel`` is (yearly, or legacy daily), else None (not a data file).

    A data file is ``market=<registered market>/year=<0001..9999>/part-0.parquet`` or, in the daily
    layout, ``market=<registered market>/dt=<a real date>/part-0.parquet``; ``dt=2026-02-30``,
    ``year=20x6``, ``part-1.parquet`` or ``market=SH`` are not.
    """
    parts = rel.split("/")
    if len(parts) != 3 or parts[2] != PART_FILE:
        return None
    market = _MARKET.fullmatch(parts[0])
    if market is None or market.group(1) not in MARKETS:
        return None
    year = _YEAR.fullmatch(parts[1])
    if year is not None:
        value = int(year.group(1))
        return year_partition(market.group(1), value) if value >= 1 else None
    day = _DAY.fullmatch(parts[1])
    if day is None:
        return None
    try:
        date = dt.date.fromisoformat(day.group(1))
    except ValueError:  # dt=2026-02-30: a foreign folder, not a partition
        return None
    return Partition(market.group(1), date, date, legacy=True)


def market_folder(rel: str) -> str | None:
    """The registered market whose folder ``rel`` lies in (``market=HK/...``), else None."""
    match = _MARKET.fullmatch(rel.split("/", 1)[0])
    return match.group(1) if match is not None and match.group(1) in MARKETS else None


def is_hidden(rel: str) -> bool:
    """Whether any segment of ``rel`` starts with '_' or '.': never data, skipped by hive readers."""
    return any(segment[:1] in ("_", ".") for segment in rel.split("/") if segment)


def lock_name(partition: str) -> str:
    """``_locks/market=HK_year=2026.lock``: the lock file of the partition named ``partition``."""
    return f"{LOCK_DIR}/{partition.replace('/', '_')}.lock"


def is_temp_name(name: str) -> bool:
    """A writer's temp file (a dead writer may leave one behind)."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def safe_name(text: str) -> str:
    """``text`` as one file-name segment: ``[A-Za-z0-9._-]`` only, at most ``MAX_NAME`` characters.

    A text that had to change gets a short hash of the original, so two different texts never share a
    name (``manual__2026-05-16T01:00:00+00:00`` -> ``manual__2026-05-16T01_00_00_00_00-1c9d2f0a``).
    """
    cleaned = _SAFE.sub("_", text).lstrip("._") or "_"
    if cleaned == text and len(text) <= MAX_NAME:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[: MAX_NAME - 9]}-{digest}"


def staging_folder(run: str) -> str:
    """``_staging/<run>``: where the rows of one staging run wait for their commit."""
    return f"{STAGING_DIR}/{safe_name(run)}"


def staged_file(run: str, name: str) -> str:
    """``_staging/<run>/<name>.stage``: one writer's rows of every partition they fall in (the footer
    names the partitions of each row group)."""
    return f"{staging_folder(run)}/{safe_name(name)}{STAGED_SUFFIX}"


def parse_staged_file(rel: str, run: str) -> str | None:
    """The name of a staged file of ``run``, else None."""
    prefix = staging_folder(run) + "/"
    if not rel.startswith(prefix) or not rel.endswith(STAGED_SUFFIX):
        return None
    name = rel[len(prefix) :]
    return None if "/" in name else name[: -len(STAGED_SUFFIX)]


def quarantine_name(rel: str, stamp: str) -> str:
    """``_quarantine/<rel>.<stamp>.quarantined``: where a foreign file goes; no ``*.parquet`` glob
    matches it and hive readers skip the '_' folder."""
    return f"{QUARANTINE_DIR}/{rel}.{stamp}{QUARANTINED_SUFFIX}"
