"""What a load reads and writes, named for Airflow and OpenLineage: the lake's Assets (one per market
folder) and the OpenLineage datasets of a load: the API per market in, the lake per market out (extra
``[openlineage]``).

Names follow the OpenLineage naming spec and match what the OpenLineage provider derives from the lake's
Assets: a local lake is namespace ``file``, name ``/abs/lake/market=HK``; an object-store lake is
``s3://bucket``, ``key/market=HK``. The API is namespace = its base URL without credentials (REST) or
``futu-opend://host:port`` (OpenD), name ``short-interest/HK``. Only ``build_lineage`` imports
OpenLineage, and only when the OpenLineage provider asks for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_shortint.lake.location import lake_uri
from airflow_provider_shortint.markets import MARKETS
from airflow_provider_shortint.transports.opend.settings import DEFAULT_PORT, FutuOpenDSettings

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Asset

#: Prefix of the API's dataset names: ``short-interest/HK``.
API_DATASET = "short-interest"
#: Connection type of the OpenD gateway (vendor SDK) and the port OpenD listens on by default.
OPEND_CONN_TYPE = FutuOpenDSettings.conn_type
OPEND_DEFAULT_PORT = DEFAULT_PORT


def lake_assets(lake_path: object, table_format: str = "parquet", **options: Any) -> dict[str, Asset]:
    """The Assets a load of each market writes: for the Parquet lake one per market folder
    (``{"HK": Asset("file:///data/lake/market=HK"), ...}``, named after
    :func:`~airflow_provider_shortint.lake.location.lake_uri`: one URI however the lake is spelled); for a
    Delta or Iceberg table the table itself, the same Asset for every market. Syntax only (DAG parse)."""
    from airflow.sdk import Asset

    if table_format != "parquet":
        from airflow_provider_shortint.lake.formats import table_asset_uri

        table = Asset(table_asset_uri(lake_path, table_format, **options))
        return dict.fromkeys(MARKETS, table)
    root = lake_uri(lake_path)
    return {market: Asset(f"{root}/market={market}") for market in MARKETS}


def api_namespace(conn: Any) -> str:
    """Where the data comes from, for an Airflow connection: never credentials, query or token.

    ``shortint``: the base URL (``https://openapi.example.com``, a bare host means https);
    ``futu_opend``: ``futu-opend://host:port``.
    """
    host = (getattr(conn, "host", None) or "").strip()
    port = getattr(conn, "port", None)
    if getattr(conn, "conn_type", None) == OPEND_CONN_TYPE:
        name = urlsplit(host if "://" in host else f"//{host}").hostname or "localhost"
        return f"futu-opend://{name}:{int(port or OPEND_DEFAULT_PORT)}"
    parts = urlsplit(host if "://" in host else f"https://{host}")
    netloc = parts.hostname or ""
    if parts.port is not None or port:
        netloc = f"{netloc}:{parts.port or int(port or 0)}"
    return f"{parts.scheme}://{netloc}{parts.path}".rstrip("/")


def api_dataset_name(market: str) -> str:
    """``short-interest/HK``: one API dataset per market."""
    return f"{API_DATASET}/{market}"


def lake_dataset(lake_path: object, market: str) -> tuple[str, str]:
    """``(namespace, name)`` of one market folder of the lake, per the OpenLineage naming spec."""
    parts = urlsplit(f"{lake_uri(lake_path)}/market={market}")
    if parts.scheme == "file":
        return ("file://" + parts.netloc if parts.netloc else "file"), parts.path
    return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/")


def build_lineage(
    *,
    source: str | None,
    lake_path: str,
    markets: Sequence[str],
    rows_written: Mapping[str, int],
    files_written: Mapping[str, int],
    table: tuple[str, str] | None = None,
) -> OperatorLineage[Any, Any]:
    """Inputs: the API per market read; outputs: the lake per market, schema and what this run wrote (a
    Delta or Iceberg ``table``, given as its ``(namespace, name)``: one output for every market)."""
    import pyarrow as pa
    from airflow.providers.common.compat.openlineage.facet import (
        InputDataset,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
        SchemaDatasetFacet,
        SchemaDatasetFacetFields,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_shortint.records import lake_schema

    fields: list[pa.Field] = list(lake_schema())
    if table is not None:
        from airflow_provider_shortint.lake.formats.base import table_schema

        fields = list(table_schema())
    schema = SchemaDatasetFacet(
        fields=[
            SchemaDatasetFacetFields(name=field.name, type=str(field.type), ordinal_position=position)
            for position, field in enumerate(fields, start=1)
        ]
    )
    inputs = [] if source is None else [InputDataset(source, api_dataset_name(m)) for m in markets]
    if table is not None:  # one dataset: the table, with what the run wrote in every market
        written = [(*table, sum(rows_written.values()), sum(files_written.values()))]
    else:
        written = [
            (*lake_dataset(lake_path, m), rows_written.get(m, 0), files_written.get(m, 0)) for m in markets
        ]
    outputs = []
    for namespace, name, rows, files in written:
        statistics = OutputStatisticsOutputDatasetFacet(rowCount=rows, fileCount=files)
        outputs.append(
            OutputDataset(
                namespace,
                name,
                facets={"schema": schema},
                outputFacets={"outputStatistics": statistics},
            )
        )
    return OperatorLineage(inputs=inputs, outputs=outputs)
