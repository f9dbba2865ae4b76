"""S3 access of a table from an Airflow AWS connection: the credentials and endpoint a Delta table takes
as ``storage_options`` and an Iceberg warehouse as ``s3.*`` catalog properties.

The same connection as the Parquet lake's ``s3://conn_id@bucket/key``: the amazon provider's
``AwsBaseHook`` resolves it (keys, role, profile or the machine's credentials) and masks the secrets in
task logs. Nothing here is printed: a repr shows the connection id and the endpoint only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_provider_shortint.lake.formats.base import require
from airflow_provider_shortint.text import register_secret

#: The connection ``s3://bucket/key`` (no id before '@') uses, as Airflow's ObjectStoragePath does.
DEFAULT_AWS_CONN_ID = "aws_default"
_DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True, repr=False)
class AwsAccess:
    """Resolved S3 credentials, region and endpoint of one Airflow AWS connection (secrets inside)."""

    conn_id: str
    access_key: str | None
    secret_key: str | None
    token: str | None
    region: str
    endpoint: str | None

    def __repr__(self) -> str:
        return f"AwsAccess(conn_id={self.conn_id!r}, region={self.region!r}, endpoint={self.endpoint!r})"

    def delta_options(self) -> dict[str, str]:
        """``storage_options`` of delta-rs (object_store's AWS keys)."""
        options = {"AWS_REGION": self.region}
        if self.access_key and self.secret_key:
            options["AWS_ACCESS_KEY_ID"] = self.access_key
            options["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        if self.token:
            options["AWS_SESSION_TOKEN"] = self.token
        if self.endpoint:
            options["AWS_ENDPOINT_URL"] = self.endpoint
            if self.endpoint.startswith("http://"):
                options["AWS_ALLOW_HTTP"] = "true"
        return options

    def iceberg_properties(self) -> dict[str, str]:
        """pyiceberg's ``s3.*`` FileIO properties."""
        properties = {"s3.region": self.region}
        if self.access_key and self.secret_key:
            properties["s3.access-key-id"] = self.access_key
            properties["s3.secret-access-key"] = self.secret_key
        if self.token:
            properties["s3.session-token"] = self.token
        if self.endpoint:
            properties["s3.endpoint"] = self.endpoint
        return properties


def aws_access(conn_id: str | None) -> AwsAccess:
    """The S3 access of the Airflow AWS connection ``conn_id`` (``aws_default`` when None)."""
    require("airflow.providers.amazon", "s3", "a table on S3")
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    name = conn_id or DEFAULT_AWS_CONN_ID
    hook = AwsBaseHook(aws_conn_id=name, client_type="s3")
    credentials = hook.get_credentials()
    for secret in (credentials.secret_key, credentials.token):
        register_secret(secret)
    config = hook.conn_config
    endpoint = config.endpoint_url or None
    region = hook.conn_region_name or _DEFAULT_REGION
    return AwsAccess(
        name, credentials.access_key, credentials.secret_key, credentials.token, region, endpoint
    )


def filesystem_for(uri: str, aws_conn_id: str | None) -> tuple[Any, str, str]:
    """(pyarrow filesystem, path of ``uri`` in it, prefix that turns such a path back into a URI) for a
    local path, ``file://`` or ``s3://`` URI; (None, "", "") for anything else. Maintenance lists and
    checks files through it."""
    from urllib.parse import urlsplit

    from pyarrow import fs as pafs

    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return pafs.LocalFileSystem(), parts.path, "file://" if parts.scheme else ""
    if parts.scheme in ("s3", "s3a"):
        access = aws_access(aws_conn_id)
        endpoint = urlsplit(access.endpoint) if access.endpoint else None
        filesystem = pafs.S3FileSystem(
            access_key=access.access_key,
            secret_key=access.secret_key,
            session_token=access.token,
            region=access.region,
            endpoint_override=endpoint.netloc if endpoint else None,
            scheme=endpoint.scheme if endpoint else "https",
        )
        return filesystem, f"{parts.netloc}{parts.path}", f"{parts.scheme}://"
    return None, "", ""
