"""Airflow Assets that stand for the lake's market folders, so DAGs can be scheduled on new data."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_shortint.exceptions import InvalidParameterError
from airflow_provider_shortint.markets import MARKETS

if TYPE_CHECKING:
    from airflow.sdk import Asset


def lake_uri(lake_path: str | os.PathLike[str]) -> str:
    """The lake's URL without credentials or connection id: ``/data/lake`` -> ``file:///data/lake``.

    String work only (it runs when a DAG is parsed); ``open_lake`` checks the rest when a task runs.
    """
    text = os.fspath(lake_path).strip().rstrip("/")
    if "://" not in text:
        if not os.path.isabs(text):
            what = "is empty" if not text else f"{text!r} is relative"
            raise InvalidParameterError(
                f"lake_path {what}: give an absolute path, a file:// URL or an object storage URL"
            )
        return "file://" + os.path.normpath(text)
    parts = urlsplit(text)
    host = parts.hostname or ""
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def lake_assets(lake_path: str | os.PathLike[str]) -> dict[str, Asset]:
    """One Asset per market folder of the lake: ``{"HK": Asset(".../market=HK"), "US": ...}``."""
    from airflow.sdk import Asset

    root = lake_uri(lake_path)
    return {market: Asset(f"{root}/market={market}") for market in MARKETS}
