"""The README's reading snippets run as written: each Python block after the marker comment runs with
only the documented path replaced by a lake (or Delta table) this test wrote, and reads its rows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests._fixtures_tables import D1, D2, D3, HK, US, make_table

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- tests/test_docs.py runs this block -->"
LAKE_PATH = "/data/lake/short_interest"
TABLE_PATH = "/data/tables/short_interest"


def readme_blocks() -> list[str]:
    """The Python blocks of the README that follow the marker, in order."""
    text = README.read_text(encoding="utf-8")
    pattern = re.escape(MARKER) + r"\s*```python\n(.*?)```"
    return re.findall(pattern, text, flags=re.DOTALL)


def run(block: str, replacements: dict[str, str]) -> dict[str, Any]:
    for documented, real in replacements.items():
        assert documented in block, f"the README block no longer reads {documented}"
        block = block.replace(documented, real)
    namespace: dict[str, Any] = {}
    exec(compile(block, str(README), "exec"), namespace)
    return namespace


def test_the_readme_has_the_two_reading_blocks() -> None:
    blocks = readme_blocks()
    assert len(blocks) == 2
    assert LAKE_PATH in blocks[0] and TABLE_PATH in blocks[1]


def test_lake_reading_block_runs_as_written(tmp_path: Path) -> None:
    from airflow_provider_shortint.lake import open_lake

    lake = tmp_path / "lake"
    open_lake(str(lake)).upsert(make_table(HK + US, [D1, D2, D3]))
    found = run(readme_blocks()[0], {LAKE_PATH: str(lake)})

    latest = found["latest"]
    assert [(market, symbol) for market, symbol, _, _ in latest] == sorted(
        (symbol[:2], symbol) for symbol in HK + US
    )
    assert all(newest == D3 and records == 3 for _, _, newest, records in latest)
    history = found["history"]
    assert history.columns == ["trade_date", "aggregated_short", "aggregated_short_ratio"]
    assert history["trade_date"].to_list() == [D1, D2, D3]


def test_delta_reading_block_runs_as_written(tmp_path: Path) -> None:
    from airflow_provider_shortint.lake.formats import open_table

    path = tmp_path / "delta"
    table = open_table(str(path), "delta")
    table.upsert(make_table(HK, [D1, D2]))  # version 1 (0: the table created empty)
    table.upsert(make_table(HK + US, [D3]))
    found = run(readme_blocks()[1], {TABLE_PATH: str(path)})

    assert found["frame"].height == len(HK) * 2 + len(HK + US)
    assert found["first"].height == len(HK) * 2
    assert found["latest"] == [(symbol, D3) for symbol in sorted(HK + US)]
