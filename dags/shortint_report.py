"""shortint_report: top movers in short interest and a history chart, whenever the lake changes.

Scheduled on the lake's Assets (``lake_assets($SHORTINT_LAKE_PATH)``: one per market folder, the same
URIs the loading operators emit), any of them: a new HK date or a new US date each start a run.

Writes, under ``{report_dir}/{as_of}/`` (``as_of`` = newest trade date in the lake):

* ``top_movers.csv`` and ``top_movers.md``: per market, the symbols whose short-interest measure
  moved most between their latest record (on the market's newest date) and the one before
  (HK: ``aggregated_short_ratio``; US: ``short_percent``), largest absolute change first;
* ``short_interest_history.png``: the measure's history for a few symbols per market (the bellwether
  and the top movers, or ``chart_symbols``), drawn with matplotlib's Agg backend
  (``pip install 'airflow-provider-shortint[report]'``). Without matplotlib the task writes the tables,
  skips the chart with a warning and returns ``"chart": None``.

The lake is read with pyarrow (``open_lake(path, table_format).read(columns)``), so any lake the operator
writes works: the Parquet lake on a disk or an object store, a Delta or an Iceberg table. The task logs
the paths and returns them.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from airflow.sdk import AssetAny, Param, dag, task

from airflow_provider_shortint.examples.settings import (
    BELLWETHER,
    default_lake_path,
    default_report_dir,
    table_format,
)
from airflow_provider_shortint.lineage import lake_assets
from airflow_provider_shortint.markets import MARKETS

if TYPE_CHECKING:
    import pandas as pd

CHARTED_MOVERS = 3
LAKE_PATH = default_lake_path()
TABLE_FORMAT = table_format()


@dag(
    dag_id="shortint_report",
    schedule=AssetAny(*dict.fromkeys(lake_assets(LAKE_PATH, TABLE_FORMAT).values())),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["shortint", "example"],
    doc_md=__doc__,
    params={
        "lake_path": Param(
            LAKE_PATH,
            type="string",
            minLength=1,
            description="Lake to read (default: the scheduled one).",
        ),
        "report_dir": Param(
            default_report_dir(),
            type="string",
            minLength=1,
            description="Local report folder ($SHORTINT_REPORT_DIR or {AIRFLOW_HOME}/shortint_reports).",
        ),
        "top_n": Param(10, type="integer", minimum=1, description="Movers listed per market."),
        "chart_symbols": Param(
            None,
            type=["null", "string", "array"],
            description="Symbols to chart; empty: each market's bellwether and its top movers.",
        ),
    },
)
def shortint_report() -> None:
    @task
    def write_report(params: dict[str, Any]) -> dict[str, Any]:
        """Read the lake, write the movers table (CSV + Markdown) and the chart; return their paths."""
        import importlib.util
        import logging
        import os

        import pandas as pd

        from airflow_provider_shortint.lake import open_lake
        from airflow_provider_shortint.symbols import parse_symbols

        # Decided before anything is written: without matplotlib the tables still come, the chart not.
        can_chart = importlib.util.find_spec("matplotlib") is not None
        if not can_chart:
            logging.getLogger(__name__).warning(
                "matplotlib is not installed: writing the tables without the chart "
                "(pip install 'airflow-provider-shortint[report]')"
            )
        lake = open_lake(params["lake_path"], TABLE_FORMAT)
        metrics = sorted({market.short_metric for market in MARKETS.values()})
        columns = ["symbol", "trade_date", *metrics, "market"]
        frame = lake.read(columns=columns).to_pandas()
        if frame.empty:
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(f"the lake {lake.uri} holds no data yet: nothing to report")
        frame["market"] = frame["market"].astype(str)
        frame["trade_date"] = pd.to_datetime(frame["trade_date"])
        as_of = frame["trade_date"].max().date().isoformat()

        movers = top_movers(frame, int(params["top_n"]))
        if params.get("chart_symbols"):
            charted = parse_symbols(params["chart_symbols"])
        else:
            charted = []
            for market in MARKETS:
                leaders = movers.loc[movers["market"] == market, "symbol"].head(CHARTED_MOVERS).tolist()
                for symbol in [BELLWETHER[market], *leaders]:
                    if symbol not in charted and (frame["symbol"] == symbol).any():
                        charted.append(symbol)

        folder = os.path.join(os.path.abspath(os.path.expanduser(params["report_dir"])), as_of)
        os.makedirs(folder, exist_ok=True)
        csv_path = os.path.join(folder, "top_movers.csv")
        markdown_path = os.path.join(folder, "top_movers.md")
        chart_path = os.path.join(folder, "short_interest_history.png") if can_chart else None
        _write_atomic(csv_path, movers.to_csv(index=False, float_format="%.6g").encode())
        _write_atomic(markdown_path, movers_markdown(movers, as_of, lake.uri).encode())
        print(f"top movers ({len(movers)} row(s)): {csv_path} and {markdown_path}")
        if chart_path is not None:
            _write_atomic(chart_path, history_chart(frame, charted, as_of))
            print(f"history chart of {', '.join(charted)}: {chart_path}")
        else:
            charted = []
        paths = {"csv": csv_path, "markdown": markdown_path, "chart": chart_path}
        return {"as_of": as_of, "lake": lake.uri, "movers": len(movers), "charted": charted, **paths}

    write_report()


def top_movers(frame: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """Per market: latest vs previous record of each symbol seen on the market's newest date."""
    import pandas as pd

    out: list[pd.DataFrame] = []
    for market in MARKETS:
        metric = MARKETS[market].short_metric
        rows = frame.loc[frame["market"] == market, ["symbol", "trade_date", metric]].dropna(subset=[metric])
        if rows.empty:
            continue
        rows = rows.sort_values(["symbol", "trade_date"])
        rows["previous_date"] = rows.groupby("symbol")["trade_date"].shift(1)
        rows["previous"] = rows.groupby("symbol")[metric].shift(1)
        latest = rows[(rows["trade_date"] == rows["trade_date"].max()) & rows["previous"].notna()].copy()
        latest["change"] = latest[metric] - latest["previous"]
        latest = latest.assign(market=market, metric=metric, latest=latest[metric])
        latest = latest.reindex(latest["change"].abs().sort_values(ascending=False).index).head(top_n)
        out.append(latest)
    columns = ["market", "symbol", "trade_date", "previous_date", "metric", "previous", "latest", "change"]
    if not out:
        return pd.DataFrame(columns=columns)
    result = pd.concat(out, ignore_index=True)[columns]
    for name in ("trade_date", "previous_date"):
        result[name] = pd.to_datetime(result[name]).dt.date.astype(str)
    return result


def movers_markdown(movers: pd.DataFrame, as_of: str, lake_uri: str) -> str:
    """The movers as a GitHub-flavoured Markdown document (no tabulate dependency)."""
    lines = [f"# Short interest: top movers (as of {as_of})", "", f"Lake: `{lake_uri}`", ""]
    if movers.empty:
        return "\n".join([*lines, "No symbol has two records yet.", ""])
    header = ["market", "symbol", "date", "previous date", "metric", "previous", "latest", "change"]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 5 + ["---:"] * 3) + "|"]
    for row in movers.itertuples(index=False):
        lines.append(
            f"| {row.market} | {row.symbol} | {row.trade_date} | {row.previous_date} | {row.metric} "
            f"| {row.previous:.4g} | {row.latest:.4g} | {row.change:+.4g} |"
        )
    return "\n".join([*lines, ""])


def history_chart(frame: pd.DataFrame, symbols: list[str], as_of: str) -> bytes:
    """PNG bytes: one panel per market, the short-interest measure of ``symbols`` over time."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    markets = [m for m in MARKETS if any(s.startswith(f"{m}.") for s in symbols)] or list(MARKETS)
    figure = Figure(figsize=(10, 3.6 * len(markets)), layout="constrained")
    axes = figure.subplots(len(markets), 1, squeeze=False)[:, 0]
    for ax, market in zip(axes, markets, strict=True):
        metric = MARKETS[market].short_metric
        for symbol in [s for s in symbols if s.startswith(f"{market}.")]:
            rows = frame[frame["symbol"] == symbol].dropna(subset=[metric]).sort_values("trade_date")
            ax.plot(rows["trade_date"], rows[metric], label=symbol, linewidth=1.2)
        ax.set_title(f"{market}: {metric}")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(loc="upper left", fontsize="small")
    figure.suptitle(f"Short interest history (as of {as_of})")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _write_atomic(path: str, data: bytes) -> None:
    """Readers see the old file or the new one, never half a file."""
    import os

    temp = f"{path}.{os.getpid()}.tmp"
    with open(temp, "wb") as handle:
        handle.write(data)
    os.replace(temp, path)


shortint_report()
