"""A lake under an ObjectStoragePath (gs://, abfs://, ... any fsspec filesystem Airflow knows).

Object stores have no rename and no flock: a changed partition is built in memory and written to its
final key in one write, so readers see the old object or the new one. This generic store knows no
precondition its filesystem would honour, so its guard is SINGLE_WRITER (the lake takes a writer
lease and refuses a second writer); ``stores.s3.S3Store`` does compare-and-swap on S3.

Every read, listing and write bypasses or clears the filesystem's caches: a process that lives for
days must see files other processes replaced since (s3fs, gcsfs and adlfs cache listings forever).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_shortint.lake.location import RemoteLocation
from airflow_provider_shortint.lake.stores.base import Stored, WriteGuard, read_each, visible

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

# fsspec filesystems whose ``pipe_file(..., mode="create")`` is a real create-only precondition on the
# service (gcsfs: ifGenerationMatch=0; adlfs: no overwrite). fsspec's default implementation checks
# ``exists`` and then writes, which is no precondition, so every other filesystem gets no lease.
CREATE_ONLY_PROTOCOLS = ("gs", "gcs", "abfs", "abfss", "az")


class ObjectStore:
    """Files under an ObjectStoragePath, through its fsspec filesystem (no conditional writes)."""

    guard = WriteGuard.SINGLE_WRITER

    def __init__(self, location: RemoteLocation) -> None:
        self.location = location
        self.uri = location.uri
        self._base: ObjectStoragePath | None = location.path

    @property
    def base(self) -> ObjectStoragePath:
        if self._base is None:  # built on first use: building it resolves the connection
            from airflow.sdk import ObjectStoragePath

            self._base = ObjectStoragePath(self.uri, conn_id=self.location.conn_id)
        return self._base

    @property
    def fs(self) -> Any:
        return self.base.fs

    @property
    def root(self) -> str:
        """The root as the filesystem names it (``bucket/prefix`` for most stores)."""
        return str(self.fs._strip_protocol(str(self.base.path))).rstrip("/")

    def full(self, rel: str) -> str:
        return f"{self.uri}/{rel}"

    def local_root(self) -> str | None:
        return None

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def read(self, rel: str) -> Stored:
        path = self._path(rel)
        self._forget(path)
        try:
            data: bytes = self.fs.cat_file(path)
        except FileNotFoundError:
            return Stored(None)
        return Stored(data)

    def source(self, rel: str) -> bytes:
        stored = self.read(rel)
        if stored.data is None:
            raise FileNotFoundError(rel)
        return stored.data

    def read_many(self, rels: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        return read_each(self, rels)

    def write(self, rel: str, data: bytes, expected: Stored) -> None:
        path = self._path(rel)
        self.fs.pipe_file(path, data)
        self._forget(path)

    def put(self, rel: str, data: bytes) -> None:
        self.write(rel, data, Stored(None))

    def move(self, rel: str, target: str) -> None:
        """Copy, then delete: readers may see both for a moment (the copy's name matches no glob)."""
        data = self.read(rel).data
        if data is None:
            raise FileNotFoundError(rel)
        self.put(target, data)
        self.delete(rel)

    def prune(self, prefix: str) -> None:
        return None  # object stores have no folders to remove

    @property
    def can_create(self) -> bool:
        return self.location.protocol in CREATE_ONLY_PROTOCOLS

    def create(self, rel: str, data: bytes) -> None:
        """Write ``rel`` only if it does not exist (the service checks): ``FileExistsError`` otherwise."""
        if not self.can_create:
            raise NotImplementedError(f"{self.location.protocol}:// offers no create-only write")
        path = self._path(rel)
        try:
            self.fs.pipe_file(path, data, mode="create")
        finally:
            self._forget(path)

    def delete(self, rel: str) -> None:
        path = self._path(rel)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)
        self._forget(path)

    def list_files(self, prefix: str = "", hidden: bool = False) -> list[str]:
        start = prefix.strip("/")
        root = self.root if not start else f"{self.root}/{start}"
        self._forget()
        try:
            paths = self.fs.find(root)
        except FileNotFoundError:
            return []
        base = self.root.lstrip("/") + "/"
        rels = (
            str(path).lstrip("/")[len(base) :] for path in paths if str(path).lstrip("/").startswith(base)
        )
        return sorted(rel for rel in rels if hidden or visible(rel[len(start) :]))

    def _forget(self, path: str | None = None) -> None:
        """Drop cached listings (all of them without ``path``): the next call asks the store."""
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(path)
