"""Move a lake of the daily layout (``market=HK/dt=2026-05-15/part-0.parquet``) into a new folder in
the yearly layout (``market=HK/year=2026/part-0.parquet``).

    python -m airflow_provider_shortint.lake.migrate SOURCE TARGET

The source is only read: its readers see it whole and unchanged during the move. The target receives
one market-year at a time (memory: one year of one market), each yearly file written once, through the
lake's own upsert (atomic, idempotent: running the move again writes nothing that is already there and
adds what the source gained since). When it is done, point ``lake_path`` (``SHORTINT_LAKE_PATH``) and
the readers at the target; docs/LAKE.md says how, and what readers see meanwhile.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_provider_shortint.exceptions import InvalidParameterError
from airflow_provider_shortint.lake.layout import Partition, year_partition
from airflow_provider_shortint.lake.location import LocalLocation, RemoteLocation, parse_location
from airflow_provider_shortint.lake.parquet_lake import ParquetLake

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MigrationResult:
    """What one move did: daily files read, yearly partitions written and unchanged, rows written."""

    daily_files: int
    rows_read: int
    rows_written: int
    partitions_written: tuple[str, ...]
    partitions_unchanged: int


def migrate_daily_lake(source: object, target: object) -> MigrationResult:
    """Copy every row of the daily-layout lake at ``source`` into the yearly-layout lake at ``target``.

    ``target`` must be another folder, neither inside ``source`` nor containing it (a reader of one
    would read the other's files too), and not itself a daily-layout lake. Raises
    ``InvalidParameterError`` before reading anything otherwise.
    """
    _check_apart(source, target)
    old, new = ParquetLake(source), ParquetLake(target)  # type: ignore[arg-type]
    contents = old._contents()
    if not contents.legacy:
        raise InvalidParameterError(
            f"lake_path {old.uri} holds no partition of the daily layout: nothing to move"
        )
    if new._contents().daily:
        raise InvalidParameterError(f"the target {new.uri} is itself a lake of the daily layout")
    groups: dict[Partition, list[Partition]] = {}
    for daily in contents.legacy:
        groups.setdefault(year_partition(daily.market, daily.first.year), []).append(daily)
    rows_read = rows_written = unchanged = 0
    written: list[str] = []
    for partition in sorted(groups):
        rows = _year_rows(old, groups[partition])
        rows_read += rows.num_rows
        result = new.upsert(rows)
        rows_written += result.rows_written
        written.extend(result.partitions_written)
        unchanged += result.partitions_unchanged
        log.info(
            "%s: %d daily file(s), %d row(s) -> %s/%s (%d written)",
            partition.name,
            len(groups[partition]),
            rows.num_rows,
            new.uri,
            partition.file,
            result.rows_written,
        )
    return MigrationResult(len(contents.legacy), rows_read, rows_written, tuple(sorted(written)), unchanged)


def _year_rows(lake: ParquetLake, days: list[Partition]) -> pa.Table:
    """The rows of one market-year of daily files, each file's rows checked to belong to its date."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from airflow_provider_shortint.exceptions import LakeSchemaError

    tables = []
    for day in days:
        rows = lake._rows(day.file, list(_columns()))
        if rows is None:
            continue
        stray = pc.sum(pc.not_equal(rows.column("trade_date"), pa.scalar(day.first, pa.date32()))).as_py()
        if stray:
            raise LakeSchemaError(
                f"{lake._store.full(day.file)} holds {stray} row(s) of another trade_date than its folder's"
            )
        tables.append(rows)
    return pa.concat_tables(tables)


def _columns() -> tuple[str, ...]:
    from airflow_provider_shortint.records import COLUMNS

    return COLUMNS


def _check_apart(source: object, target: object) -> None:
    """Refuse a target that is the source, lies inside it or contains it."""
    one, two = parse_location(source), parse_location(target)
    if isinstance(one, LocalLocation) and isinstance(two, LocalLocation):
        a, b = os.path.realpath(one.root), os.path.realpath(two.root)
        nested = a == b or b.startswith(a + os.sep) or a.startswith(b + os.sep)
    elif isinstance(one, RemoteLocation) and isinstance(two, RemoteLocation):
        a, b = f"{one.protocol}://{one.bucket}/{one.key}", f"{two.protocol}://{two.bucket}/{two.key}"
        nested = (
            one.protocol == two.protocol
            and one.bucket == two.bucket
            and (
                one.key == two.key
                or not one.key
                or not two.key
                or two.key.startswith(one.key + "/")
                or one.key.startswith(two.key + "/")
            )
        )
    else:
        nested = False
    if nested:
        raise InvalidParameterError(
            f"the target {two.uri} must be a folder apart from the source {one.uri} (neither inside the "
            "other): a reader of one would read the other's files too"
        )


def main(argv: list[str] | None = None) -> int:
    """The command line: ``python -m airflow_provider_shortint.lake.migrate SOURCE TARGET``."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_shortint.lake.migrate",
        description="Copy a lake of the daily layout into a new folder in the yearly layout "
        "(the source is only read). See docs/LAKE.md.",
    )
    parser.add_argument("source", help="the daily-layout lake (path, file:// or s3://conn@bucket/prefix)")
    parser.add_argument("target", help="a new folder for the yearly-layout lake")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = migrate_daily_lake(arguments.source, arguments.target)
    except InvalidParameterError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    print(
        f"{result.daily_files} daily file(s), {result.rows_read} row(s) read; "
        f"{len(result.partitions_written)} yearly partition(s) written ({result.rows_written} row(s)), "
        f"{result.partitions_unchanged} unchanged. Point lake_path and the readers at {arguments.target}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
