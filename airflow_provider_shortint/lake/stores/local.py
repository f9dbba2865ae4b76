"""A lake in a local (or POSIX network) directory: flock per partition, temp file + fsync + os.replace.

Every write goes through directory file descriptors opened one folder at a time with ``O_NOFOLLOW``
below the lake root: a folder inside the lake that is a symbolic link (``market=HK -> /elsewhere``) is
refused with ``LakeWriteError`` naming it, and a link swapped in while a writer works cannot redirect
the write either (the writer holds the folder it opened). The root itself may be a link (the user chose
it). Readers follow links inside the lake: reading elsewhere writes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
import time
from collections.abc import Iterator, Sequence

from airflow_provider_shortint.exceptions import LakeWriteError
from airflow_provider_shortint.lake.layout import LOCK_DIR, TEMP_PREFIX, TEMP_SUFFIX, is_temp_name, lock_name
from airflow_provider_shortint.lake.stores.base import Stored, WriteGuard, read_each

log = logging.getLogger(__name__)

# How long a writer waits for a partition's lock before it gives up with LakeWriteError (a stopped
# writer or a hung NFS server must not block every later writer for ever); LocalStore.lock_timeout
# overrides it per store. The wait is logged once after LOCK_LOG_AFTER_SECONDS.
LOCK_TIMEOUT_SECONDS = 600.0
LOCK_LOG_AFTER_SECONDS = 1.0
LOCK_POLL_SECONDS = (0.005, 0.2)  # first and longest sleep between two non-blocking attempts
#: Folders of the lake's own levels (market=X, and its partitions) are read through symbolic links;
#: deeper links are not followed by a listing. A listing descends at most MAX_DEPTH folders.
FOLLOWED_LINK_DEPTH = 2
MAX_DEPTH = 16
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class LocalStore:
    """Files under ``root``; writers serialise per partition with ``fcntl.flock`` on ``_locks/*.lock``."""

    guard = WriteGuard.LOCK

    def __init__(self, root: str) -> None:
        self.root = root
        self.uri = root
        self.lock_timeout = LOCK_TIMEOUT_SECONDS
        self.lock_log_after = LOCK_LOG_AFTER_SECONDS

    def full(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def local_root(self) -> str | None:
        return self.root

    # -- folders, one descriptor at a time -----------------------------------------------------------

    @contextlib.contextmanager
    def _folder(self, rel_dir: str, create: bool) -> Iterator[int | None]:
        """A descriptor of the folder ``rel_dir`` (None when it is missing and ``create`` is False).

        Each folder below the root is opened with ``O_NOFOLLOW``: a symbolic link (or a file) where a
        folder should be raises LakeWriteError naming it; ``create`` makes missing folders (and syncs
        the new entries to disk).
        """
        try:
            fd = os.open(self.root, _DIR_FLAGS)
        except FileNotFoundError:
            if not create:
                yield None
                return
            _make_root(self.root)
            fd = os.open(self.root, _DIR_FLAGS)
        opened = [fd]
        try:
            walked = ""
            for name in [part for part in rel_dir.split("/") if part]:
                walked = f"{walked}/{name}" if walked else name
                child = self._child(opened[-1], name, walked, create)
                if child is None:
                    yield None
                    return
                opened.append(child)
            yield opened[-1]
        finally:
            for descriptor in opened:
                os.close(descriptor)

    def _child(self, parent: int, name: str, walked: str, create: bool) -> int | None:
        for _ in range(3):  # a folder made or removed by another writer meanwhile: look again
            try:
                return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    return None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=parent)
                    os.fsync(parent)
            except OSError as err:
                if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise self._not_a_folder(parent, name, walked) from err
        raise LakeWriteError(f"lake {self.uri}: the folder {walked} kept changing while opening it")

    def _not_a_folder(self, parent: int, name: str, walked: str) -> LakeWriteError:
        try:
            info = os.lstat(name, dir_fd=parent)
        except OSError:
            info = None
        if info is not None and stat.S_ISLNK(info.st_mode):
            try:
                target = f" (to {os.readlink(name, dir_fd=parent)})"
            except OSError:
                target = ""
            error = LakeWriteError(
                f"lake {self.uri}: {walked} is a symbolic link{target}; the lake writes only into "
                "folders of its own, so that no write lands outside it: replace the link by a folder "
                "(or point lake_path at the linked folder); nothing was written there"
            )
        else:
            error = LakeWriteError(
                f"lake {self.uri}: {walked} is a file where the lake keeps a folder: move it out of the "
                "lake; nothing was written there"
            )
        error.errno = errno.ELOOP if info is not None and stat.S_ISLNK(info.st_mode) else errno.ENOTDIR
        return error

    # -- locks ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, partition: str) -> Iterator[None]:
        """Hold the partition's exclusive flock (released when the fd closes, also if the process dies).

        Polls with ``LOCK_NB``: logs once when the wait passes ``lock_log_after`` seconds and raises
        :class:`LakeWriteError` naming the lake and partition after ``lock_timeout`` seconds.
        """
        name = lock_name(partition)
        with self._folder(LOCK_DIR, create=True) as folder:
            assert folder is not None
            fd = os.open(
                os.path.basename(name),
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                0o666,
                dir_fd=folder,
            )
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

    def remove_stale_temps(self, partition: str, older_than: float = 0.0) -> None:
        """Delete the temp files of dead writers in the folder ``partition``: all of them (the caller
        holds the partition's lock, so no live writer has one there), or, for a folder no lock covers
        (staging), those last modified more than ``older_than`` seconds ago."""
        with self._folder(partition, create=False) as folder:
            if folder is None:
                return
            now = time.time()
            for name in os.listdir(folder):
                if not is_temp_name(name):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if (
                        older_than
                        and now - os.stat(name, dir_fd=folder, follow_symlinks=False).st_mtime < older_than
                    ):
                        continue
                    os.unlink(name, dir_fd=folder)
                    log.info("removed a stale temp file %s/%s", self.full(partition), name)

    # -- files ---------------------------------------------------------------------------------------

    def read(self, rel: str) -> Stored:
        folder_rel, name = _split(rel)
        with self._folder(folder_rel, create=False) as folder:
            if folder is None:
                return Stored(None)
            try:
                fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=folder)
            except FileNotFoundError:
                return Stored(None)
            with os.fdopen(fd, "rb") as handle:
                return Stored(handle.read())

    def source(self, rel: str) -> str:
        path = self.full(rel)
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        return path

    def read_many(self, rels: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        return read_each(self, rels)

    def write(self, rel: str, data: bytes, expected: Stored) -> None:
        """Temp file in the same folder, flush + fsync, os.replace, fsync the folder (under the lock)."""
        folder_rel, name = _split(rel)
        with self._folder(folder_rel, create=True) as folder:
            assert folder is not None
            temp = f"{TEMP_PREFIX}{os.getpid()}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(temp, flags, 0o666, dir_fd=folder)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=folder)
                raise
            os.fsync(folder)

    def put(self, rel: str, data: bytes) -> None:
        self.write(rel, data, Stored(None))

    def delete(self, rel: str) -> None:
        folder_rel, name = _split(rel)
        with self._folder(folder_rel, create=False) as folder:
            if folder is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=folder)

    def move(self, rel: str, target: str) -> None:
        """One rename (atomic: readers see the file at one place or the other), both folders synced."""
        source_rel, name = _split(rel)
        target_rel, target_name = _split(target)
        with (
            self._folder(source_rel, create=False) as source,
            self._folder(target_rel, create=True) as destination,
        ):
            if source is None:
                raise FileNotFoundError(errno.ENOENT, "no such file", self.full(rel))
            assert destination is not None
            os.rename(name, target_name, src_dir_fd=source, dst_dir_fd=destination)
            os.fsync(destination)
            os.fsync(source)

    def prune(self, prefix: str) -> None:
        """Remove the empty folders under ``prefix``, deepest first (``prefix`` too when it empties)."""
        top = self.full(prefix)
        if not os.path.isdir(top) or os.path.islink(top):
            return
        for current, _, _ in sorted(os.walk(top), key=lambda item: -len(item[0])):
            with contextlib.suppress(OSError):
                os.rmdir(current)

    def list_files(self, prefix: str = "", hidden: bool = False) -> list[str]:
        found: list[str] = []
        start = prefix.strip("/")
        self._walk(self.full(start), start, hidden, found)
        return sorted(found)

    def _walk(self, folder: str, rel: str, hidden: bool, found: list[str]) -> None:
        depth = rel.count("/") + 1 if rel else 0
        if depth > MAX_DEPTH:
            log.warning("lake %s: not listing below %s (deeper than %d folders)", self.uri, rel, MAX_DEPTH)
            return
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if not hidden and entry.name[:1] in ("_", "."):
                continue
            child = f"{rel}/{entry.name}" if rel else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    self._walk(entry.path, child, hidden, found)
                elif entry.is_symlink() and entry.is_dir():
                    if depth < FOLLOWED_LINK_DEPTH:
                        self._walk(entry.path, child, hidden, found)
                elif entry.is_file():
                    found.append(child)
            except OSError:
                continue  # vanished or unreadable meanwhile: not listed


def _split(rel: str) -> tuple[str, str]:
    folder, _, name = rel.rpartition("/")
    return folder, name


def _make_root(root: str) -> None:
    """Create the lake root and its missing parents, each new entry synced to disk."""
    missing: list[str] = []
    current = root
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    os.makedirs(root, exist_ok=True)
    for created in reversed(missing):
        _fsync_dir(os.path.dirname(created))


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


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, _DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
