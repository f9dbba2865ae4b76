"""The lake among files it did not write: foreign folders and files, unreadable files, symbolic links.

The lake owns its folder. Reads skip what it did not write (and say so); every write first moves the
foreign files that readers would take (anything in a market folder that is not a partition's
``part-0.parquet``, any other ``*.parquet``) to ``_quarantine/``, renamed so that no ``*.parquet`` glob
matches them, so after the lake has written, the documented readers (DuckDB's and polars' glob,
pyarrow.dataset) count every row once. No write follows a symbolic link out of the lake.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shortint.lake import LakeSchemaError, LakeWriteError, open_lake
from airflow_provider_shortint.records import rows_to_table

D1, D2, D3 = dt.date(2025, 12, 31), dt.date(2026, 5, 14), dt.date(2026, 5, 15)
HK = [f"HK.{i:05d}" for i in range(1, 6)]
US = ["US.AAPL", "US.MSFT"]


def table(symbols: list[str], days: list[dt.date], price: float = 1.0) -> Any:
    rows = [
        {"symbol": s, "trade_date": d, "timestamp": 1, "close_price": price, "shares_short": 5}
        for d in days
        for s in symbols
    ]
    return rows_to_table(rows)


def counts(root: Path) -> dict[str, int]:
    """Rows each documented reader sees, read as docs/LAKE.md writes them."""
    import duckdb
    import polars as pl
    import pyarrow.dataset as ds

    glob = f"{root}/**/*.parquet"
    (duck,) = (
        duckdb.connect()
        .execute(f"select count(*) from read_parquet('{glob}', hive_partitioning=true)")
        .fetchone()
    )  # type: ignore[misc]
    polars = pl.scan_parquet(glob, hive_partitioning=True).select(pl.len()).collect().item()
    arrow = ds.dataset(str(root), format="parquet", partitioning="hive").count_rows()
    return {"duckdb": int(duck), "polars": int(polars), "pyarrow": int(arrow)}


def tree(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "_locks" not in p.parts
    )


# ------------------------------------------------------------------------------------------------
# Foreign folders and files
# ------------------------------------------------------------------------------------------------


def test_a_foreign_part_file_is_quarantined_by_the_next_write(tmp_path: Path) -> None:
    """Issue 19: a part-1.parquet with the same keys gave 11 rows for 10 keys through DuckDB's glob."""
    root = tmp_path / "lake"
    lake = open_lake(root)
    lake.upsert(table([f"HK.{i:05d}" for i in range(1, 11)], [D3]))
    own = root / "market=HK/year=2026/part-0.parquet"
    foreign = own.with_name("part-1.parquet")
    shutil.copy(own, foreign)
    assert counts(root) == {"duckdb": 20, "polars": 20, "pyarrow": 20}  # what the lake cannot prevent
    assert lake.read().num_rows == 10  # the lake itself never reads it

    result = lake.upsert(table(US, [D3]))  # any write, here of another market
    assert result.quarantined == ("market=HK/year=2026/part-1.parquet",)
    assert not foreign.exists()
    (moved,) = (root / "_quarantine/market=HK/year=2026").iterdir()
    assert moved.name.startswith("part-1.parquet.") and moved.name.endswith(".quarantined")
    assert moved.read_bytes() == own.read_bytes()  # kept whole, for whoever put it there
    assert counts(root) == {"duckdb": 12, "polars": 12, "pyarrow": 12}
    assert lake.upsert(table(US, [D3])).quarantined == ()  # nothing left to move: a re-run changes nothing


def test_foreign_folders_stop_no_read_and_no_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sandbox: Any, use_conn: Any
) -> None:
    """An impossible date, a malformed year, an unregistered market, notes beside the data: reads,
    latest_dates and the operator work for every market, and its write moves them out of the way."""
    from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator

    root = tmp_path / "lake"
    use_conn(sandbox.url)
    symbols = ["HK.00700", "US.AAPL"]
    load = ShortInterestToParquetOperator(
        task_id="t", symbols=symbols, lake_path=str(root), since="2026-01-01"
    )
    load.execute(context={})  # type: ignore[arg-type]
    lake = open_lake(root)
    rows = lake.read().num_rows
    copy = root / "market=HK/year=2026/part-0.parquet"
    planted = [
        "market=HK/dt=2026-02-30/part-0.parquet",  # a date that does not exist
        "market=US/year=20x6/part-0.parquet",
        "market=SH/year=2026/part-0.parquet",  # a market the registry does not know
        "market=HK/year=2026/backup.parquet",
        "market=HK/notes/readme.txt",
        "stray.parquet",
    ]
    for rel in planted:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(copy, root / rel)

    with caplog.at_level(logging.WARNING):
        assert lake.read().num_rows == rows
        assert lake.latest_dates() == {"HK.00700": D3, "US.AAPL": D3}
        assert lake.latest_dates(symbols) == {"HK.00700": D3, "US.AAPL": D3}
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "skipping 6 file(s) the lake did not write" in warned and "dt=2026-02-30" in warned

    new_hk, new_us = sandbox.publish("HK"), sandbox.publish("US")
    summary = ShortInterestToParquetOperator(task_id="t2", symbols=symbols, lake_path=str(root)).execute(
        context={}  # type: ignore[arg-type]
    )
    assert summary["rows_written"] == 2 and summary["latest_trade_date"] == {
        "HK": str(new_hk),
        "US": str(new_us),
    }
    assert summary["quarantined"] == sorted(planted)
    assert [rel for rel in tree(root) if not rel.startswith("_")] == [
        "market=HK/year=2026/part-0.parquet",
        "market=US/year=2026/part-0.parquet",
    ]
    assert not (root / "market=HK/dt=2026-02-30").exists()  # emptied foreign folders are removed
    assert counts(root) == {"duckdb": rows + 2, "polars": rows + 2, "pyarrow": rows + 2}


def test_files_outside_the_market_folders_that_are_not_parquet_are_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "lake"
    lake = open_lake(root)
    lake.upsert(table(HK, [D3]))
    (root / "README.md").write_text("our lake")
    with caplog.at_level(logging.WARNING):
        assert lake.upsert(table(HK, [D2])).quarantined == ()
    assert (root / "README.md").read_text() == "our lake"
    assert any("README.md" in r.getMessage() and "left alone" in r.getMessage() for r in caplog.records)


def test_hidden_names_are_never_data_nor_foreign(tmp_path: Path) -> None:
    """'_' and '.' names (ours: _locks, _staging, _quarantine, temp files; anyone's: _SUCCESS, .cache)."""
    root = tmp_path / "lake"
    lake = open_lake(root)
    lake.upsert(table(HK, [D3]))
    for rel in ("_SUCCESS", ".cache/x.parquet", "market=HK/_tmp/part-0.parquet", "market=HK/.hidden.parquet"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "market=HK/year=2026/part-0.parquet", root / rel)
    assert lake.upsert(table(HK, [D2])).quarantined == ()
    assert (root / "_SUCCESS").exists() and (root / "market=HK/_tmp/part-0.parquet").exists()


# ------------------------------------------------------------------------------------------------
# Unreadable files
# ------------------------------------------------------------------------------------------------


def test_an_unreadable_stored_file_gives_one_error_naming_it_on_read_and_on_upsert(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    lake = open_lake(root)
    lake.upsert(table(HK + US, [D1, D3]))
    broken = root / "market=HK/year=2026/part-0.parquet"
    broken.write_bytes(b"PAR1 not really")
    messages = []
    for attempt in (
        lambda: lake.read(),
        lambda: lake.latest_dates(),
        lambda: lake.latest_dates(["HK.00001"]),
        lambda: lake.upsert(table(HK, [D3], price=2.0)),
    ):
        with pytest.raises(LakeSchemaError) as info:
            attempt()
        messages.append(str(info.value))
    assert len(set(messages)) == 1, messages
    assert messages[0].startswith(f"stored file {broken} is not readable Parquet")
    assert broken.read_bytes() == b"PAR1 not really"  # never overwritten by a failed upsert
    assert lake.upsert(table(US, [D3], price=2.0)).rows_written == 2  # other partitions still work
    assert lake.latest_dates(["US.AAPL"]) == {"US.AAPL": D3}


# ------------------------------------------------------------------------------------------------
# Symbolic links
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("link", ["market=HK", "market=HK/year=2026", "_locks", "_staging"])
def test_a_symlinked_folder_never_takes_a_write_out_of_the_lake(tmp_path: Path, link: str) -> None:
    root, outside = tmp_path / "lake", tmp_path / "outside"
    lake = open_lake(root)
    lake.upsert(table(HK, [D3]))
    lake.upsert(table(US, [D3]))
    if link == "_staging":
        (root / "_staging").mkdir()
    shutil.move(root / link, outside)  # the folder moves out; a link to it takes its place
    os.symlink(outside, root / link)
    before = {str(p.relative_to(outside)): p.read_bytes() for p in outside.rglob("*") if p.is_file()}

    with pytest.raises(LakeWriteError) as info:
        if link == "_staging":
            lake.stage(table(HK, [D2], price=2.0), run="r", name="n")
        else:
            lake.upsert(table(HK, [D2], price=2.0))
    message = str(info.value)
    assert f"{link} is a symbolic link (to {outside})" in message and "nothing was written" in message
    after = {str(p.relative_to(outside)): p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    assert after == before  # nothing landed outside the lake
    assert os.path.islink(root / link)
    if link.startswith("market="):
        assert lake.read().num_rows == len(HK) + len(US)  # readers follow the link: the rows are there
        assert lake.upsert(table(US, [D2])).rows_written == len(US)  # other partitions still take writes


def test_a_symlinked_data_file_is_replaced_by_a_file_of_the_lake(tmp_path: Path) -> None:
    """Replacing a partition renames a new file over the link: the link's target is never written."""
    root, outside = tmp_path / "lake", tmp_path / "elsewhere.parquet"
    lake = open_lake(root)
    lake.upsert(table(HK, [D3]))
    data = root / "market=HK/year=2026/part-0.parquet"
    shutil.move(data, outside)
    os.symlink(outside, data)
    kept = outside.read_bytes()
    assert lake.upsert(table(HK, [D2])).rows_written == len(HK)
    assert not data.is_symlink() and outside.read_bytes() == kept
    assert lake.read().num_rows == 2 * len(HK)
