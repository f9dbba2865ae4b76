"""The interface between the lake and where its files live, and how a store keeps writers apart.

A store says through ``guard`` how concurrent writers are kept from losing each other's rows:

- ``LOCK``: an exclusive per-partition lock (``LockingStore.lock``); read-merge-write happens under it.
- ``COMPARE_AND_SWAP``: ``write`` replaces a file only if it is still the version ``read`` returned,
  else raises :class:`WriteConflict`; the lake re-reads, re-merges and tries again.
- ``SINGLE_WRITER``: neither; the lake holds a writer lease, taken with a create-only write
  (``CreateOnlyStore``), and refuses a second writer; without create-only writes it refuses to write.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class WriteGuard(enum.Enum):
    """How a store keeps concurrent writers from losing rows."""

    LOCK = "lock"
    COMPARE_AND_SWAP = "compare-and-swap"
    SINGLE_WRITER = "single-writer"


@dataclass(frozen=True)
class Stored:
    """One file as read: its bytes (None when absent) and the store's version of it (ETag, ...)."""

    data: bytes | None
    version: str | None = None


class WriteConflict(Exception):
    """A conditional write found another version than the one read (someone replaced the file)."""


@runtime_checkable
class LakeStore(Protocol):
    """What the lake needs from a storage back end."""

    uri: str  # printable location, no credentials
    guard: WriteGuard

    def full(self, rel: str) -> str:
        """Printable location of a path relative to the lake root."""

    def read(self, rel: str) -> Stored:
        """The current bytes and version of one file (never from a cache)."""

    def read_many(self, rels: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        """Current bytes of data files, for readers; files gone meanwhile are skipped."""

    def write(self, rel: str, data: bytes, expected: Stored) -> None:
        """Replace one file atomically; a COMPARE_AND_SWAP store only if ``expected`` is still current."""

    def delete(self, rel: str) -> None:
        """Remove one file (missing is fine)."""

    def list_data_files(self) -> list[str]:
        """Relative paths of every data file (market=*/dt=*/*.parquet), sorted, never from a cache."""

    def local_root(self) -> str | None:
        """The root as a local path when the store is a local directory (readers may map files)."""


@runtime_checkable
class LockingStore(LakeStore, Protocol):
    """A store with ``guard == LOCK``: an exclusive lock per partition, and temp files to clean."""

    def lock(self, partition: str) -> AbstractContextManager[None]:
        """Hold the partition's exclusive lock (released when the holder exits or dies)."""

    def remove_stale_temps(self, partition: str) -> None:
        """Delete temp files dead writers left in the partition (the caller holds its lock)."""


@runtime_checkable
class CreateOnlyStore(LakeStore, Protocol):
    """A store that may offer an atomic create-only write (the single-writer lease needs one)."""

    @property
    def can_create(self) -> bool:
        """Whether ``create`` is atomic on this store (no exists-then-write emulation)."""

    def create(self, rel: str, data: bytes) -> None:
        """Write ``rel`` only if it does not exist yet, atomically; else raise ``FileExistsError``."""


def read_each(store: LakeStore, rels: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    """``read_many`` one file after the other (for stores without a faster way)."""
    for rel in rels:
        data = store.read(rel).data
        if data is not None:
            yield rel, data
