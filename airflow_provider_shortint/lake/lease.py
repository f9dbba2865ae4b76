"""The writer lease of a store without conditional writes: one writer at a time, a second one refused.

Such a store cannot replace a partition "only if unchanged", so two writers could each overwrite the
other's rows. The writer takes a lease object (``_locks/writer.lease``: owner, host, pid, expiry)
before its first write and drops it at the end; a writer that finds another's live lease is refused
with :class:`LakeConcurrencyError` before it writes anything. After writing its lease the writer waits
``SETTLE_SECONDS`` and reads it back, so two writers starting at the same moment do not both proceed
unless their writes land within that window (the store offers nothing stronger; docs/LAKE.md).
A dead writer's lease expires after ``LEASE_SECONDS``.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from airflow_provider_shortint.lake.errors import LakeConcurrencyError
from airflow_provider_shortint.lake.layout import LOCK_DIR
from airflow_provider_shortint.lake.store import LakeStore, Stored

LEASE_FILE = f"{LOCK_DIR}/writer.lease"
LEASE_SECONDS = 600.0
SETTLE_SECONDS = 0.5


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
        return None  # not a lease this code wrote: treated as absent and overwritten


class WriterLease:
    """Context manager: hold the lake's single-writer lease for one upsert."""

    def __init__(self, store: LakeStore, sleep: Any = time.sleep) -> None:
        self.store = store
        self.owner = uuid.uuid4().hex
        self._sleep = sleep
        self._expires = 0.0

    def __enter__(self) -> WriterLease:
        self._refuse_if_held(_parse(self.store.read(LEASE_FILE).data))
        self._write()
        self._sleep(SETTLE_SECONDS)
        self._refuse_if_held(_parse(self.store.read(LEASE_FILE).data))
        return self

    def refresh(self) -> None:
        """Extend the lease when half of it has run out (call between partitions)."""
        if time.time() > self._expires - LEASE_SECONDS / 2:
            self._refuse_if_held(_parse(self.store.read(LEASE_FILE).data))
            self._write()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        holder = _parse(self.store.read(LEASE_FILE).data)
        if holder is not None and holder.owner == self.owner:
            self.store.delete(LEASE_FILE)

    def _write(self) -> None:
        self._expires = time.time() + LEASE_SECONDS
        holder = {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "expires": self._expires,
        }
        self.store.write(LEASE_FILE, json.dumps(holder).encode(), Stored(None))

    def _refuse_if_held(self, holder: _Holder | None) -> None:
        if holder is None or holder.owner == self.owner or holder.expires <= time.time():
            return
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.expires))
        raise LakeConcurrencyError(
            f"lake {self.store.uri} is on a store without conditional writes, so it takes one writer at a "
            f"time, and another writer holds it (host {holder.host}, pid {holder.pid}, lease until {until}): "
            "run one writer per lake (e.g. an Airflow pool with one slot), nothing was written; if that "
            f"writer died, wait for its lease to expire or delete {self.store.full(LEASE_FILE)}"
        )
