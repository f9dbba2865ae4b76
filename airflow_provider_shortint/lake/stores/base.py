"""The interface between the lake and where its files live, and how a store keeps writers apart.

A store says through ``guard`` how concurrent writers are kept from losing each other's rows:

- ``LOCK``: an exclusive per-partition lock (``LockingStore.lock``); read-merge-write happens under it.
- ``COMPARE_AND_SWAP``: ``write`` replaces a file only if it is still the version ``read`` returned,
  else raises :class:`WriteConflict`; the lake re-reads, re-merges and tries again.
- ``SINGLE_WRITER``: neither; the lake holds a writer lease, taken with a create-only write
  (``CreateOnlyStore``), and refuses a second writer; without create-only writes it refuses to write.

Paths are relative to the lake root, '/'-separated. Nothing here knows the lake's layout.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


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


class StaleRead(Exception):
    """A file changed between two ranged reads of it: the reader starts that file again."""


@runtime_checkable
class LakeStore(Protocol):
    """What the lake needs from a storage back end."""

    uri: str  # printable location, no credentials
    guard: WriteGuard

    def full(self, rel: str) -> str:
        """Printable location of a path relative to the lake root."""

    def read(self, rel: str) -> Stored:
        """The current bytes and version of one file (never from a cache)."""

    def source(self, rel: str) -> Any:
        """What pyarrow reads one file from (a path, a ranged file object or bytes), fresh; raises
        ``FileNotFoundError`` when the file is gone. Ranged sources read only the footer and the
        column chunks asked for, all of one version of the file (else :class:`StaleRead`)."""

    def read_many(self, rels: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        """Current bytes of files, for readers; files gone meanwhile are skipped."""

    def write(self, rel: str, data: bytes, expected: Stored) -> None:
        """Replace one data file atomically; a COMPARE_AND_SWAP store only if ``expected`` is current."""

    def put(self, rel: str, data: bytes) -> None:
        """Write a file only this writer writes (a staged file), atomically, without a guard."""

    def delete(self, rel: str) -> None:
        """Remove one file (missing is fine)."""

    def move(self, rel: str, target: str) -> None:
        """Move one file to ``target`` (inside the lake); readers see it at one of the two places."""

    def list_files(self, prefix: str = "", hidden: bool = False) -> list[str]:
        """Every file under ``prefix`` (relative to the root), sorted, never from a cache; without
        ``hidden``, names starting with '_' or '.' below ``prefix`` are skipped (not descended into)."""

    def prune(self, prefix: str) -> None:
        """Remove the empty folders under ``prefix`` (stores without folders do nothing)."""

    def local_root(self) -> str | None:
        """The root as a local path when the store is a local directory."""


@runtime_checkable
class LockingStore(LakeStore, Protocol):
    """A store with ``guard == LOCK``: an exclusive lock per partition, and temp files to clean."""

    def lock(self, partition: str) -> AbstractContextManager[None]:
        """Hold the partition's exclusive lock (released when the holder exits or dies)."""

    def remove_stale_temps(self, partition: str, older_than: float = 0.0) -> None:
        """Delete temp files dead writers left in the partition (the caller holds its lock), or in a
        folder no lock covers, those older than ``older_than`` seconds."""


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


def visible(rel: str) -> bool:
    """Whether no segment of ``rel`` starts with '_' or '.'."""
    return not any(segment[:1] in ("_", ".") for segment in rel.split("/") if segment)
