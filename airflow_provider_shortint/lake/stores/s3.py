"""S3 (and S3-compatible stores) with compare-and-swap partition writes (DESIGN.md §10).

``read`` returns a file's bytes and its ETag from one GET; ``write`` is one ``PutObject`` with
``If-Match: <ETag read>`` (or ``If-None-Match: *`` when the partition did not exist), so a partition is
replaced only if it is still the version that was read; S3 answers 412 (or 409 when two conditional
writes race) otherwise, and :class:`WriteConflict` tells the lake to re-read and re-merge. Reads and
listings go to the API directly, never through s3fs's listing cache or its open-file ETag checks, so a
reader that lives for days never trips over a replaced file (``FileExpired``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

from airflow_provider_shortint.lake.layout import is_data_file
from airflow_provider_shortint.lake.stores.base import Stored, WriteConflict, WriteGuard
from airflow_provider_shortint.lake.stores.object import ObjectStore

MAX_PUT = 5 * 2**30  # S3's limit for one PutObject; above it s3fs would switch to a multipart upload
_CONFLICT_CODES = ("PreconditionFailed", "ConditionalRequestConflict")
_PARALLEL_READS = 16


class S3Store(ObjectStore):
    """An ``s3://`` lake through the connection's s3fs filesystem, with conditional writes."""

    guard = WriteGuard.COMPARE_AND_SWAP

    def _bucket_key(self, rel: str) -> tuple[str, str]:
        bucket, _, key = self._path(rel).partition("/")
        return bucket, key

    def _sync(self, coroutine: Any) -> Any:
        from fsspec.asyn import sync

        fs = self.fs
        return sync(fs.loop, lambda: coroutine)

    async def _get(self, rel: str) -> Stored:
        bucket, key = self._bucket_key(rel)
        try:
            response = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return Stored(None)
        body = response["Body"]
        try:
            data: bytes = await body.read()
        finally:
            body.close()
        return Stored(data, response.get("ETag"))

    def read(self, rel: str) -> Stored:
        stored: Stored = self._sync(self._get(rel))
        return stored

    def read_many(self, rels: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        for start in range(0, len(rels), _PARALLEL_READS):
            chunk = list(rels[start : start + _PARALLEL_READS])

            async def fetch(names: list[str] = chunk) -> list[Stored]:
                return list(await asyncio.gather(*(self._get(rel) for rel in names)))

            for rel, stored in zip(chunk, self._sync(fetch()), strict=True):
                if stored.data is not None:
                    yield rel, stored.data

    def write(self, rel: str, data: bytes, expected: Stored) -> None:
        """One conditional PutObject; :class:`WriteConflict` if the object is not ``expected`` any more."""
        if len(data) >= MAX_PUT:
            raise ValueError(f"{self.full(rel)}: a partition file of {len(data)} bytes exceeds one S3 PUT")
        if expected.data is None:
            condition = {"IfNoneMatch": "*"}
        elif expected.version:
            condition = {"IfMatch": expected.version}
        else:
            raise ValueError(f"{self.full(rel)} was read without an ETag: cannot replace it conditionally")
        try:
            # chunksize above the file size: s3fs sends one put_object (never a multipart upload).
            self.fs.pipe_file(self._path(rel), data, chunksize=MAX_PUT, **condition)
        except (OSError, ValueError) as err:
            if _is_conflict(err, expected):
                raise WriteConflict(f"{self.full(rel)} changed since it was read") from err
            raise

    def list_data_files(self) -> list[str]:
        bucket, prefix = self._bucket_key("")
        found: list[str] = []

        async def list_all() -> None:
            token: dict[str, str] = {}
            while True:
                page = await self.fs._call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, **token)
                found.extend(item["Key"][len(prefix) :] for item in page.get("Contents", ()))
                if not page.get("IsTruncated"):
                    return
                token = {"ContinuationToken": page["NextContinuationToken"]}

        try:
            self._sync(list_all())
        except FileNotFoundError:
            return []
        return sorted(rel for rel in found if is_data_file(rel))


def _is_conflict(err: BaseException, expected: Stored) -> bool:
    """Whether a failed conditional PUT means "someone else wrote first" (412, 409 or the key vanished)."""
    response = getattr(err.__cause__, "response", None)
    if not isinstance(response, dict):
        return isinstance(err, FileExistsError)
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "NoSuchKey":  # If-Match on a key another writer deleted
        return expected.data is not None
    return code in _CONFLICT_CODES or status in (409, 412)
