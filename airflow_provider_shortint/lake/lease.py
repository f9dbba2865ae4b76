"""The writer lease of a store without conditional replace: one writer at a time, a second one refused.

Such a store cannot replace a partition "only if unchanged", so two writers could each overwrite the
other's rows. The writer takes a lease object (``_locks/writer.lease``: owner, host, pid, expiry) with
a create-only write before its first write and deletes it at the end: of two writers racing for it the
store lets exactly one create it, and the other is refused with :class:`LakeConcurrencyError` before
it writes anything. A dead writer's lease expires after ``LEASE_SECONDS``; the next writer deletes it
and creates its own. A store that offers no create-only write cannot keep writers apart at all: the
lake refuses to write to it (DESIGN.md §10, docs/LAKE.md).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from airflow_provider_shortint.exceptions import LakeConcurrencyError
from airflow_provider_shortint.lake.layout import LOCK_DIR
from airflow_provider_shortint.lake.stores.base import CreateOnlyStore, LakeStore, Stored, WriteGuard

log = logging.getLogger(__name__)

LEASE_FILE = f"{LOCK_DIR}/writer.lease"
LEASE_SECONDS = 600.0


@dataclass(frozen=True)
class _Holder:
    owner: str
    host: str
    pid: int
    expires: float


def _parse(data: bytes | None) -> _Holder | None:
    if not data:
        return None
    try:
        raw: Any = json.loads(data)
        return _Holder(str(raw["owner"]), str(raw["host"]), int(raw["pid"]), float(raw["expires"]))
    except (ValueError, KeyError, TypeError):
        return None  # not a lease this code wrote: treated as expired and replaced


def refuse_unguarded(store: LakeStore) -> None:
    """Raise LakeConcurrencyError if ``store`` can keep concurrent writers apart in no way at all."""
    if store.guard is not WriteGuard.SINGLE_WRITER:
        return
    if not isinstance(store, CreateOnlyStore) or not store.can_create:
        raise LakeConcurrencyError(
            f"lake {store.uri} is on a store that offers neither conditional nor create-only writes, "
            "so concurrent writers could silently lose each other's rows: the lake does not write "
            "there (nothing was written); use S3 (compare-and-swap), a local or NFS directory "
            "(locks), or gs:// / abfs:// (create-only writer lease)"
        )


class WriterLease:
    """Context manager: hold the lake's single-writer lease for one upsert."""

    def __init__(self, store: LakeStore) -> None:
        self.store = store
        self.owner = uuid.uuid4().hex
        self._expires = 0.0

    def __enter__(self) -> WriterLease:
        store = self.store
        refuse_unguarded(store)
        assert isinstance(store, CreateOnlyStore)
        for _ in range(2):  # the second round follows the removal of an expired lease
            try:
                store.create(LEASE_FILE, self._content())
                return self
            except Exception as err:  # FileExistsError, or the service's own "precondition failed"
                last: Exception = err
                seen = store.read(LEASE_FILE).data
                if seen is None:
                    if isinstance(err, FileExistsError):
                        continue  # its holder just deleted it: try again
                    raise  # the create failed for another reason than an existing lease
                holder = _parse(seen)
                self._refuse_if_held(holder)
                if store.read(LEASE_FILE).data != seen:  # replaced meanwhile: someone else took it
                    self._refuse_if_held(_parse(store.read(LEASE_FILE).data), force=True)
                log.warning("lake %s: removing the expired writer lease %r", store.uri, holder)
                store.delete(LEASE_FILE)
        raise LakeConcurrencyError(
            f"lake {store.uri}: could not take the writer lease {store.full(LEASE_FILE)}: another writer "
            "took it at the same moment; nothing was written"
        ) from last

    def refresh(self) -> None:
        """Extend the lease when half of it has run out (call between partitions)."""
        if time.time() > self._expires - LEASE_SECONDS / 2:
            self._refuse_if_held(
                _parse(self.store.read(LEASE_FILE).data), force=True, done="it stopped before this partition"
            )
            self.store.write(LEASE_FILE, self._content(), Stored(None))

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        holder = _parse(self.store.read(LEASE_FILE).data)
        if holder is not None and holder.owner == self.owner:
            self.store.delete(LEASE_FILE)

    def _content(self) -> bytes:
        self._expires = time.time() + LEASE_SECONDS
        holder = {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "expires": self._expires,
        }
        return json.dumps(holder).encode()

    def _refuse_if_held(
        self, holder: _Holder | None, force: bool = False, done: str = "nothing was written"
    ) -> None:
        """Raise when another writer holds the lease (``force``: even if it has expired)."""
        if holder is None or holder.owner == self.owner or (holder.expires <= time.time() and not force):
            return
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.expires))
        raise LakeConcurrencyError(
            f"lake {self.store.uri} is on a store without conditional writes, so it takes one writer at a "
            f"time, and another writer holds it (host {holder.host}, pid {holder.pid}, lease until {until}): "
            f"run one writer per lake (e.g. an Airflow pool with one slot); {done}; if that "
            f"writer died, wait for its lease to expire or delete {self.store.full(LEASE_FILE)}"
        )
