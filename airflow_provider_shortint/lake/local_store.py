"""A lake in a local (or POSIX network) directory: flock per partition, temp file + fsync + os.replace."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator, Sequence

from airflow_provider_shortint.lake.layout import (
    LOCK_DIR,
    TEMP_PREFIX,
    TEMP_SUFFIX,
    is_data_file,
    is_temp_name,
    lock_name,
)
from airflow_provider_shortint.lake.store import Stored, WriteGuard, read_each

log = logging.getLogger(__name__)


class LocalStore:
    """Files under ``root``; writers serialise per partition with ``fcntl.flock`` on ``_locks/*.lock``."""

    guard = WriteGuard.LOCK

    def __init__(self, root: str) -> None:
        self.root = root
        self.uri = root

    def full(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}"

    def local_root(self) -> str | None:
        return self.root

    @contextlib.contextmanager
    def lock(self, partition: str) -> Iterator[None]:
        """Hold the partition's exclusive flock (released when the fd closes, also if the process dies)."""
        import fcntl

        os.makedirs(os.path.join(self.root, LOCK_DIR), exist_ok=True)
        fd = os.open(self.full(lock_name(partition)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def remove_stale_temps(self, partition: str) -> None:
        folder = self.full(partition)
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in names:
            if is_temp_name(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
                    log.info("removed a stale temp file %s/%s", folder, name)

    def read(self, rel: str) -> Stored:
        try:
            with open(self.full(rel), "rb") as handle:
                return Stored(handle.read())
        except FileNotFoundError:
            return Stored(None)

    def read_many(self, rels: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        return read_each(self, rels)

    def write(self, rel: str, data: bytes, expected: Stored) -> None:
        """Temp file in the same folder, flush + fsync, os.replace, fsync the folder (under the lock)."""
        final = self.full(rel)
        folder = os.path.dirname(final)
        self._make_dirs(folder)
        temp = os.path.join(folder, f"{TEMP_PREFIX}{os.getpid()}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        _fsync_dir(folder)

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.full(rel))

    def _make_dirs(self, folder: str) -> None:
        missing: list[str] = []
        current = folder
        while not os.path.isdir(current):
            missing.append(current)
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
        if not missing:
            return
        os.makedirs(folder, exist_ok=True)
        for created in reversed(missing):  # make the new directory entries durable too
            _fsync_dir(os.path.dirname(created))

    def list_data_files(self) -> list[str]:
        found: list[str] = []
        for market in _names(self.root):
            if not market.startswith("market="):
                continue
            for day in _names(os.path.join(self.root, market)):
                found.extend(
                    f"{market}/{day}/{name}" for name in _names(os.path.join(self.root, market, day))
                )
        return sorted(rel for rel in found if is_data_file(rel))


def _names(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
