"""S3 (and S3-compatible stores) with compare-and-swap partition writes (DESIGN.md §10).

Everything goes through one boto3 client built from the Airflow ``aws`` connection by the Amazon
provider's ``S3Hook`` (credentials, region, ``endpoint_url``), with public S3 calls only:

- ``read`` is one ``GetObject``: bytes and ETag. ``write`` is one ``PutObject`` with ``If-Match: <ETag
  read>`` (``If-None-Match: *`` when the partition did not exist): S3 answers 412 (409 when two
  conditional writes race) if another writer replaced it, and :class:`WriteConflict` tells the lake to
  re-read and re-merge. A PutObject is always a single request, never a multipart upload.
- ``source`` is a read-only file over ranged ``GetObject``s: the first fetches the last 64 KiB (the
  footer; a small file whole), the next ones only the column chunks a reader asks for, each with
  ``If-Match`` on the first ETag, so one read sees one version (else :class:`StaleRead`).
- Listings call ``ListObjectsV2`` every time; nothing is cached, so a reader that lives for days reads
  what other processes wrote since.
"""

from __future__ import annotations

import errno
import io
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from airflow_provider_shortint.lake.location import RemoteLocation
from airflow_provider_shortint.lake.stores.base import StaleRead, Stored, WriteConflict, WriteGuard, visible

MAX_PUT = 5 * 2**30  # S3's limit for one PutObject
TAIL_BYTES = 64 * 1024  # the first ranged read of a source: the footer of any lake file, small files whole
_CONFLICT_CODES = ("PreconditionFailed", "ConditionalRequestConflict")
_MISSING_CODES = ("NoSuchKey", "404", "NotFound")
_PARALLEL_READS = 16


class S3Store:
    """An ``s3://`` lake through the connection's boto3 client, with conditional writes."""

    guard = WriteGuard.COMPARE_AND_SWAP

    def __init__(self, location: RemoteLocation) -> None:
        self.location = location
        self.uri = location.uri
        self.bucket = location.bucket
        self.prefix = f"{location.key}/" if location.key else ""
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The boto3 S3 client of the lake's Airflow connection (built on first use)."""
        if self._client is None:
            import botocore.config
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook

            # The connection's botocore settings, with a connection pool as large as the parallel reads
            # (boto3's default of 10 would drop connections, with a warning each, at every wide read).
            config = S3Hook(aws_conn_id=self.location.conn_id).config
            wide = max(_PARALLEL_READS, config.max_pool_connections)
            pool = botocore.config.Config(max_pool_connections=wide)
            hook = S3Hook(aws_conn_id=self.location.conn_id, config=config.merge(pool))
            self._client = hook.get_conn()
        return self._client

    def full(self, rel: str) -> str:
        return f"{self.uri}/{rel}" if rel else self.uri

    def local_root(self) -> str | None:
        return None

    def key(self, rel: str) -> str:
        return self.prefix + rel

    # -- reading -------------------------------------------------------------------------------------

    def read(self, rel: str) -> Stored:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(rel))
        except Exception as err:
            if _code(err) in _MISSING_CODES:
                return Stored(None)
            raise _os_error(err, self.full(rel)) from err
        body = response["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return Stored(data, response.get("ETag"))

    def source(self, rel: str) -> RangedObject:
        return RangedObject(self, rel)

    def read_many(self, rels: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        with ThreadPoolExecutor(max_workers=_PARALLEL_READS) as pool:
            for start in range(0, len(rels), _PARALLEL_READS):
                chunk = list(rels[start : start + _PARALLEL_READS])
                for rel, stored in zip(chunk, pool.map(self.read, chunk), strict=True):
                    if stored.data is not None:
                        yield rel, stored.data

    def list_files(self, prefix: str = "", hidden: bool = False) -> list[str]:
        """``ListObjectsV2`` pages; without ``hidden``, one delimited listing of the top level first, so
        '_'/'.' folders (staging, quarantine) are never listed key by key."""
        start = prefix.strip("/")
        base = f"{start}/" if start else ""
        if hidden:
            return sorted(self._list(base, delimited=False)[0])
        files, folders = self._list(base, delimited=True)
        found = [rel for rel in files if visible(rel[len(base) :])]
        for folder in folders:
            if visible(folder[len(base) :]):
                below = self._list(folder, delimited=False)[0]
                found.extend(rel for rel in below if visible(rel[len(base) :]))
        return sorted(found)

    def _list(self, rel_prefix: str, delimited: bool) -> tuple[list[str], list[str]]:
        files: list[str] = []
        folders: list[str] = []
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.key(rel_prefix)}
        if delimited:
            arguments["Delimiter"] = "/"
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**arguments):
                files.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", ()))
                folders.extend(item["Prefix"][len(self.prefix) :] for item in page.get("CommonPrefixes", ()))
        except Exception as err:
            if _code(err) == "NoSuchBucket":
                return [], []
            raise _os_error(err, self.full(rel_prefix)) from err
        return files, folders

    # -- writing -------------------------------------------------------------------------------------

    def write(self, rel: str, data: bytes, expected: Stored) -> None:
        """One conditional PutObject; :class:`WriteConflict` if the object is not ``expected`` any more."""
        if expected.data is None:
            condition = {"IfNoneMatch": "*"}
        elif expected.version:
            condition = {"IfMatch": expected.version}
        else:
            raise ValueError(f"{self.full(rel)} was read without an ETag: cannot replace it conditionally")
        try:
            self._put(rel, data, **condition)
        except Exception as err:
            code = _code(err)
            if code in _CONFLICT_CODES or _status(err) in (409, 412):
                raise WriteConflict(f"{self.full(rel)} changed since it was read") from err
            if code in _MISSING_CODES and expected.data is not None:  # If-Match on a deleted key
                raise WriteConflict(f"{self.full(rel)} was deleted since it was read") from err
            raise

    def put(self, rel: str, data: bytes) -> None:
        self._put(rel, data)

    def _put(self, rel: str, data: bytes, **condition: str) -> None:
        if len(data) >= MAX_PUT:
            raise ValueError(f"{self.full(rel)}: a file of {len(data)} bytes exceeds one S3 PUT")
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=data, **condition)
        except Exception as err:
            if condition and (_code(err) in _CONFLICT_CODES + _MISSING_CODES or _status(err) in (409, 412)):
                raise
            raise _os_error(err, self.full(rel)) from err

    def delete(self, rel: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(rel))
        except Exception as err:
            if _code(err) not in _MISSING_CODES:
                raise _os_error(err, self.full(rel)) from err

    def move(self, rel: str, target: str) -> None:
        """CopyObject, then DeleteObject: a reader may see the file at both places in between, never
        at neither (the copy's name matches no reader's glob)."""
        try:
            source = {"Bucket": self.bucket, "Key": self.key(rel)}
            self.client.copy_object(Bucket=self.bucket, Key=self.key(target), CopySource=source)
        except Exception as err:
            if _code(err) in _MISSING_CODES:
                raise FileNotFoundError(errno.ENOENT, "no such file", self.full(rel)) from err
            raise _os_error(err, self.full(rel)) from err
        self.delete(rel)

    def prune(self, prefix: str) -> None:
        return None  # no folders on S3


class RangedObject(io.RawIOBase):
    """A read-only, seekable file over one version of one S3 object, fetched by ranged GETs.

    The first GET asks for the last ``TAIL_BYTES`` (a file that small comes whole) and pins the ETag;
    every later GET carries ``If-Match`` on it, and a 412 raises :class:`StaleRead`.
    """

    def __init__(self, store: S3Store, rel: str) -> None:
        super().__init__()
        self.store = store
        self.rel = rel
        self.requests = 0
        try:
            response = store.client.get_object(
                Bucket=store.bucket, Key=store.key(rel), Range=f"bytes=-{TAIL_BYTES}"
            )
        except Exception as err:
            if _code(err) in _MISSING_CODES:
                raise FileNotFoundError(errno.ENOENT, "no such file", store.full(rel)) from err
            if _code(err) == "InvalidRange":  # an empty object
                self.etag, self.size, self.tail, self.tail_start = None, 0, b"", 0
                self.position = 0
                return
            raise _os_error(err, store.full(rel)) from err
        self.requests = 1
        body = response["Body"]
        try:
            self.tail = body.read()
        finally:
            body.close()
        self.etag = response.get("ETag")
        total = str(response.get("ContentRange", "")).rpartition("/")[2]
        self.size = int(total) if total.isdigit() else len(self.tail)
        self.tail_start = self.size - len(self.tail)
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self.position = offset
        elif whence == io.SEEK_CUR:
            self.position += offset
        else:
            self.position = self.size + offset
        return self.position

    def read(self, size: int | None = -1) -> bytes:
        start = self.position
        end = self.size if size is None or size < 0 else min(self.size, start + size)
        if end <= start:
            return b""
        if start >= self.tail_start:
            data = self.tail[start - self.tail_start : end - self.tail_start]
        else:
            data = self._fetch(start, end)
        self.position = start + len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _fetch(self, start: int, end: int) -> bytes:
        store = self.store
        arguments: dict[str, Any] = {"Bucket": store.bucket, "Key": store.key(self.rel)}
        arguments["Range"] = f"bytes={start}-{end - 1}"
        if self.etag:
            arguments["IfMatch"] = self.etag
        self.requests += 1
        try:
            response = store.client.get_object(**arguments)
        except Exception as err:
            if _code(err) in _CONFLICT_CODES + _MISSING_CODES or _status(err) == 412:
                raise StaleRead(f"{store.full(self.rel)} changed while it was read") from err
            raise _os_error(err, store.full(self.rel)) from err
        body = response["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data


def _code(err: BaseException) -> str | None:
    response = getattr(err, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return None if code is None else str(code)


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if isinstance(status, int) else None


def _os_error(err: BaseException, where: str) -> BaseException:
    """A failed S3 call as the OSError the lake reports (``LakeWriteError`` keeps its errno)."""
    if isinstance(err, OSError):
        return err
    code = _code(err)
    number = {
        "AccessDenied": errno.EACCES,
        "NoSuchBucket": errno.ENOENT,
        "SlowDown": errno.EBUSY,
        "EntityTooLarge": errno.EFBIG,
    }.get(code or "", errno.EIO)
    kind: type[OSError] = PermissionError if number == errno.EACCES else OSError
    return kind(number, f"{code or type(err).__name__}: {err}", where)
