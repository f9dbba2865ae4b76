"""A lake in a local (or POSIX network) directory: flock per partition, temp file + fsync + os.replace."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import time
from collections.abc import Iterator, Sequence

from airflow_provider_shortint.exceptions import LakeWriteError
from airflow_provider_shortint.lake.layout import (
    LOCK_DIR,
    TEMP_PREFIX,
    TEMP_SUFFIX,
    is_data_file,
    is_temp_name,
    lock_name,
)
from airflow_provider_shortint.lake.stores.base import Stored, WriteGuard, read_each

log = logging.getLogger(__name__)

# How long a writer waits for a partition's lock before it gives up with LakeWriteError (a stopped
# writer or a hung NFS server must not block every later writer for ever); LocalStore.lock_timeout
# overrides it per store. The wait is logged once after LOCK_LOG_AFTER_SECONDS.
LOCK_TIMEOUT_SECONDS = 600.0
LOCK_LOG_AFTER_SECONDS = 1.0
LOCK_POLL_SECONDS = (0.005, 0.2)  # first and longest sleep between two non-blocking attempts


class LocalStore:
    """Files under ``root``; writers serialise per partition with ``fcntl.flock`` on ``_locks/*.lock``."""

    guard = WriteGuard.LOCK

    def __init__(self, root: str) -> None:
        self.root = root
        self.uri = root
        self.lock_timeout = LOCK_TIMEOUT_SECONDS
        self.lock_log_after = LOCK_LOG_AFTER_SECONDS

    def full(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}"

    def local_root(self) -> str | None:
        return self.root

    @contextlib.contextmanager
    def lock(self, partition: str) -> Iterator[None]:
        """Hold the partition's exclusive flock (released when the fd closes, also if the process dies).

        Polls with ``LOCK_NB``: logs once when the wait passes ``lock_log_after`` seconds and raises
        :class:`LakeWriteError` naming the lake and partition after ``lock_timeout`` seconds.
        """
        os.makedirs(os.path.join(self.root, LOCK_DIR), exist_ok=True)
        fd = os.open(self.full(lock_name(partition)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            self._acquire(fd, partition)
            yield
        finally:
            os.close(fd)

    def _acquire(self, fd: int, partition: str) -> None:
        import fcntl

        start = time.monotonic()
        pause, longest = LOCK_POLL_SECONDS
        logged = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if logged:
                    log.info("lake %s: got the lock of %s", self.uri, partition)
                return
            except BlockingIOError:
                pass
            waited = time.monotonic() - start
            if waited >= self.lock_timeout:
                error = LakeWriteError(
                    f"lake {self.uri}: writing partition {partition} failed: another writer"
                    f"{_holder_text(fd)} held its lock {self.full(lock_name(partition))} for over "
                    f"{self.lock_timeout:g} s (a stopped process or a hung network file system?); "
                    "nothing was written to it"
                )
                error.errno = errno.ETIMEDOUT
                raise error
            if not logged and waited >= self.lock_log_after:
                log.warning(
                    "lake %s: waiting for the lock of partition %s, held by another writer%s (giving up "
                    "after %g s)",
                    self.uri,
                    partition,
                    _holder_text(fd),
                    self.lock_timeout,
                )
                logged = True
            time.sleep(min(pause, max(self.lock_timeout - waited, 0.0)))
            pause = min(pause * 2, longest)

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


def _holder_text(fd: int) -> str:
    """`` (pid N)`` for the process holding ``fd``'s file's flock, from /proc/locks (Linux); else ""."""
    try:
        info = os.fstat(fd)
        inode = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == inode and fields[4].isdigit():
                    return f" (pid {fields[4]})"
    except OSError:
        pass
    return ""


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
