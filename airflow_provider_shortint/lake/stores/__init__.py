"""Where a lake's files live: the store interface (``base``) and its back ends, one module each.

``local`` (a directory: flock per partition), ``object`` (any fsspec store Airflow knows: a single-writer
lease) and ``s3`` (compare-and-swap with conditional writes). :func:`open_store` picks one for a parsed
location; a back end is imported only when chosen.
"""

from __future__ import annotations

from airflow_provider_shortint.lake.location import LocalLocation, Location
from airflow_provider_shortint.lake.stores.base import LakeStore

#: Protocols served by the compare-and-swap S3 store.
S3_PROTOCOLS = ("s3", "s3a")


def open_store(location: Location) -> LakeStore:
    """The store for a parsed location (nothing is connected to yet): a local directory, S3 with
    compare-and-swap, or any other object store with a single-writer lease."""
    if isinstance(location, LocalLocation):
        from airflow_provider_shortint.lake.stores.local import LocalStore

        return LocalStore(location.root)
    if location.protocol in S3_PROTOCOLS:
        from airflow_provider_shortint.lake.stores.s3 import S3Store

        return S3Store(location)
    from airflow_provider_shortint.lake.stores.object import ObjectStore

    return ObjectStore(location)
