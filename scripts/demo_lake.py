"""What `make demo` reads back and prints: the lake per market, what a step added, the report's files.

Kept apart from scripts/demo.py (which drives the sandbox and Airflow) so each stays small. Reads the
lake itself (pyarrow for the Parquet lake, deltalake for a Delta table), never through the provider, so
the summary checks what really landed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class StepFailed(Exception):
    """A demo step failed or left the lake other than expected; the message says which."""


def _dataset(lake: Path) -> Any:
    import pyarrow as pa
    import pyarrow.dataset as ds

    if (lake / "_delta_log").is_dir():  # a Delta table: its own reader picks the live files
        from deltalake import DeltaTable

        return ds.dataset(DeltaTable(str(lake)).to_pyarrow_table())
    partitioning = ds.partitioning(pa.schema([("market", pa.string()), ("year", pa.int32())]), flavor="hive")
    return ds.dataset(str(lake), format="parquet", partitioning=partitioning, exclude_invalid_files=True)


def _files(lake: Path, market: str) -> int:
    """Data files of ``market``: the yearly files of the Parquet lake, or the live files of a Delta table."""
    if (lake / "_delta_log").is_dir():
        from deltalake import DeltaTable

        return sum(1 for uri in DeltaTable(str(lake)).file_uris() if f"market={market}" in uri)
    return len(list((lake / f"market={market}").glob("year=*/*.parquet")))


def lake_summary(lake: Path) -> dict[str, dict[str, Any]]:
    """Rows, symbols, date range, files and trading dates per market, read back from the lake itself."""
    if not lake.exists():
        return {}
    frame = _dataset(lake).to_table(columns=["symbol", "trade_date", "market"]).to_pandas()
    duplicates = int(frame.duplicated(["symbol", "trade_date"]).sum())
    if duplicates:
        raise StepFailed(f"the lake holds {duplicates} duplicate (symbol, trade_date) row(s)")
    result: dict[str, dict[str, Any]] = {}
    for market, rows in frame.groupby(frame["market"].astype(str)):
        result[str(market)] = {
            "rows": len(rows),
            "symbols": rows["symbol"].nunique(),
            "first": str(rows["trade_date"].min()),
            "last": str(rows["trade_date"].max()),
            "files": _files(lake, str(market)),
            "dates": {str(day) for day in rows["trade_date"].unique()},
        }
    return result


def added(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per market of ``after``: rows added since ``before`` and the trading dates that are new."""
    return {
        market: {
            "rows": info["rows"] - before.get(market, {}).get("rows", 0),
            "dates": sorted(info["dates"] - before.get(market, {}).get("dates", set())),
        }
        for market, info in sorted(after.items())
    }


def rows_on(lake: Path, market: str, dates: list[str]) -> dict[str, Any]:
    """For the rows of ``market`` on ``dates``: how many, the columns that are null in every one of them,
    and the smallest ``timestamp`` (milliseconds whatever the transport)."""
    import datetime as dt

    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    wanted = [dt.date.fromisoformat(day) for day in dates]
    table = _dataset(lake).to_table(
        filter=(ds.field("market") == market) & ds.field("trade_date").isin(wanted)
    )
    nulls = [
        name
        for name in table.column_names
        if table.num_rows and table.column(name).null_count == table.num_rows
    ]
    smallest = pc.min(table.column("timestamp")).as_py() if table.num_rows else None
    return {"rows": table.num_rows, "all_null": nulls, "min_timestamp": smallest}


def newest_report(reports: Path) -> dict[str, Path] | None:
    """The files of the newest report folder, or None if the report DAG wrote none."""
    folders = sorted(p for p in reports.glob("*") if (p / "top_movers.md").exists())
    if not folders:
        return None
    folder = folders[-1]
    return {
        "csv": folder / "top_movers.csv",
        "markdown": folder / "top_movers.md",
        "chart": folder / "short_interest_history.png",
    }


def print_summary(
    lake_path: Path,
    lake: dict[str, dict[str, Any]],
    report: dict[str, Path],
    opend: list[str],
    elapsed: float,
) -> None:
    """The closing summary: the lake per market, the report's files and top rows, the OpenD step's lines."""
    print()
    print(f"What landed in {rel(lake_path)}:")
    print(f"  {'market':<7}{'rows':>7}{'symbols':>9}  {'first':<11} {'last':<11}{'files':>7}")
    for market, info in sorted(lake.items()):
        print(
            f"  {market:<7}{info['rows']:>7}{info['symbols']:>9}  {info['first']:<11} {info['last']:<11}"
            f"{info['files']:>7}"
        )
    print()
    print("Report:")
    for kind, path in report.items():
        size = path.stat().st_size if path.exists() else 0
        print(f"  {kind:<9}{rel(path)}  ({size:,} bytes)")
    table = [line for line in report["markdown"].read_text().splitlines() if line.startswith("|")]
    if table:
        print()
        print("Top movers (first rows of the Markdown table):")
        for line in table[:8]:
            print(f"  {line}")
    if opend:
        print()
        for line in opend:
            print(line)
    print()
    print(f"demo finished in {elapsed:.0f} s")


def describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "no rows"
    return f"{info['rows']} rows, {info['symbols']} symbols, {info['first']} .. {info['last']}"


def rel(path: Path) -> str:
    try:
        return f"./{path.relative_to(REPO)}"
    except ValueError:
        return str(path)
