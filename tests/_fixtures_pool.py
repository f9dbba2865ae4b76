"""Writer processes for races: a pool forked from a forkserver (which imported the heavy modules once),
whose jobs call :func:`start_together` to be released at the same moment, with no sleep or clock.

A forkserver is a clean process started like a spawn child: nothing of the test process (threads,
delta-rs' runtime) is forked into the workers. There is one forkserver per test process, so the first
pool of a process decides what it preloads.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
from collections.abc import Callable, Iterator
from typing import Any

#: A hang guard only: the racing jobs meet at a barrier before they race.
BARRIER_TIMEOUT = 120.0

_BARRIERS: dict[int, Any] = {}


def _init(barriers: dict[int, Any], warm: tuple[str, ...], initializer: Callable[[], None] | None) -> None:
    _BARRIERS.update(barriers)
    for module in warm:
        importlib.import_module(module)
    if initializer is not None:
        initializer()


def start_together(parties: int) -> None:
    """In a job: wait until ``parties`` jobs of this pool have called this, then all go on at once."""
    _BARRIERS[parties].wait(BARRIER_TIMEOUT)


@contextlib.contextmanager
def racing_pool(
    preload: list[str], processes: int = 4, initializer: Callable[[], None] | None = None
) -> Iterator[Any]:
    """A pool of ``processes`` workers forked from a forkserver that imported ``preload``; each worker
    has a barrier for every number of parties from 2 to ``processes``. A job blocked at its barrier
    holds its worker, so the jobs of one race always run in distinct workers."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(preload)
    barriers = {parties: ctx.Barrier(parties) for parties in range(2, processes + 1)}
    with ctx.Pool(processes, initializer=_init, initargs=(barriers, tuple(preload), initializer)) as pool:
        yield pool
