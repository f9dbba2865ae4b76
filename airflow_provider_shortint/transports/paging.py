"""Paging by ``next_key``, whatever the transport: end markers, the repeated-key guard, ``stop_after``,
the first page's size and a bound on the number of pages (after dlt's one-object-per-rule paginators).

A transport only fetches one page (``fetch(count, next_key) -> RawPage``); :func:`paginate` drives it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator
from typing import NamedTuple, TypeVar

from airflow_provider_shortint.exceptions import InvalidParameterError, ShortInterestResponseError
from airflow_provider_shortint.markets import Market
from airflow_provider_shortint.text import shown
from airflow_provider_shortint.validation import integral

_T = TypeVar("_T")

#: ``next_key`` values that mark the last page (absent, empty, or the SDK's "-1").
END_MARKERS: frozenset[str | None] = frozenset({None, "", "-1"})


#: Longest history a security can have (days), and how much denser than its market's typical cadence
#: its records may come: together they bound the pages of one symbol (a server that hands out new keys
#: for ever is stopped with a clear error instead of being paged without end).
MAX_HISTORY_DAYS = 50 * 366
MAX_DENSITY = 2


def history_page_bound(market: Market, page_size: int) -> int:
    """Most pages one symbol's history can take at ``page_size`` (+1 for a smaller first page)."""
    records = math.ceil(MAX_HISTORY_DAYS / market.cadence_days * MAX_DENSITY)
    return math.ceil(records / page_size) + 1


def is_last(next_key: object) -> bool:
    """True when ``next_key`` as sent by the server says there is no further page."""
    return next_key is None or (isinstance(next_key, str) and next_key in END_MARKERS)


def validate_count(count: object, name: str, maximum: int) -> int:
    """``count`` as an ``int`` in 1..``maximum`` (the transport's largest page; REST: 90), checked before
    any request is spent. Any integral type is taken (``operator.index``: ``numpy.int64(30)`` too);
    booleans, floats and strings are refused."""
    value = integral(count)
    if value is None or not 1 <= value <= maximum:
        raise InvalidParameterError(f"{name} must be an integer from 1 to {maximum}, got {shown(count, 60)}")
    return value


#: Longest ``next_key`` accepted, from a caller or from a server (the API's keys are a few dozen
#: characters; a longer one would only make the request line too long for the server).
MAX_NEXT_KEY_LENGTH = 1024


def _key_problem(key: str) -> str | None:
    """Why ``key`` cannot be sent as a ``next_key`` (too long, not printable), or None."""
    if len(key) > MAX_NEXT_KEY_LENGTH:
        return f"it has {len(key):,} characters, more than the {MAX_NEXT_KEY_LENGTH:,} allowed"
    if not key.isprintable():
        return "it contains a line break or another control or non-printable character"
    return None


def checked_next_key(next_key: object) -> str | None:
    """The one ``next_key`` rule of both hooks for a caller's key: None or "" ask for the newest page; a
    key a page returned is sent as is; "-1" (the SDK's end marker), a non-string, a key longer than
    :data:`MAX_NEXT_KEY_LENGTH` or with a control character raises, before any request."""
    if next_key is None or next_key == "":
        return None
    if not isinstance(next_key, str) or is_last(next_key):
        raise InvalidParameterError(
            f"next_key must be a key returned by a previous page, got {shown(next_key)} "
            "(that value marks the last page)"
        )
    problem = _key_problem(next_key)
    if problem is not None:
        raise InvalidParameterError(
            f"next_key must be a key returned by a previous page (at most {MAX_NEXT_KEY_LENGTH:,} "
            f"printable characters), got {shown(next_key, 40)}: {problem}"
        )
    return next_key


def server_next_key(symbol: str, next_key: object) -> str | None:
    """A ``next_key`` as a server returned it: None on the last page (absent, "" or "-1"), else the key,
    which must be a string that can be sent back (same bound as :func:`checked_next_key`), else
    ``ShortInterestResponseError``."""
    if next_key is None:
        return None
    if not isinstance(next_key, str):
        raise ShortInterestResponseError(
            f"{symbol}: next_key is not a string: {shown(next_key)}", symbol=symbol
        )
    if is_last(next_key):
        return None
    problem = _key_problem(next_key)
    if problem is not None:
        raise ShortInterestResponseError(
            f"{symbol}: the server's next_key {shown(next_key, 40)} cannot be sent back: {problem}",
            symbol=symbol,
        )
    return next_key


class RawPage(NamedTuple):
    """One page as a transport received it: ``items`` not yet typed, ``next_key`` None on the last page."""

    items: object
    next_key: str | None


class NextKeyPaginator:
    """The state of one symbol's walk back through history, newest page first.

    ``count``/``next_key`` are what to ask for next; :meth:`update` takes what a page said and decides
    whether there is another. A key seen twice, a page that reaches no further back than the one before
    it, or more than ``max_pages`` pages, is a server fault.
    """

    def __init__(
        self,
        symbol: str,
        *,
        page_size: int,
        max_count: int,
        first_page_size: int | None = None,
        stop_after: dt.date | None = None,
        max_pages: int | None = None,
    ) -> None:
        self.symbol = symbol
        self.page_size = validate_count(page_size, "page_size", max_count)
        self.count = (
            self.page_size
            if first_page_size is None
            else validate_count(first_page_size, "first_page_size", max_count)
        )
        self.stop_after = stop_after
        self.max_pages = max_pages
        self.next_key: str | None = None
        self.has_next_page = True
        self.pages = 0
        self._seen: set[str] = set()
        self._oldest: dt.date | None = None

    def update(self, next_key: str | None, oldest: dt.date | None) -> None:
        """Record a page's ``next_key`` and oldest trade date; raise if the server is looping."""
        self.pages += 1
        if next_key is None or oldest is None or (self.stop_after is not None and oldest <= self.stop_after):
            self.has_next_page = False
            return
        if next_key in self._seen:
            raise ShortInterestResponseError(
                f"{self.symbol}: the server returned next_key {shown(next_key)} twice; "
                "stopping instead of looping",
                symbol=self.symbol,
            )
        if self._oldest is not None and oldest >= self._oldest:
            raise ShortInterestResponseError(
                f"{self.symbol}: page {self.pages} reaches back only to {oldest.isoformat()}, no older than "
                f"the page before it ({self._oldest.isoformat()}); the server is serving the same records "
                "again under a new next_key, stopping instead of looping",
                symbol=self.symbol,
            )
        self._oldest = oldest
        if self.max_pages is not None and self.pages >= self.max_pages:
            raise ShortInterestResponseError(
                f"{self.symbol}: the server still had a next page after {self.pages} pages of up to "
                f"{self.page_size} records, more than the history of one security can hold; stopping "
                "instead of paging without end",
                symbol=self.symbol,
            )
        self._seen.add(next_key)
        self.next_key = next_key
        self.count = self.page_size


def paginate(
    paginator: NextKeyPaginator,
    fetch: Callable[[int, str | None], RawPage],
    convert: Callable[[RawPage], tuple[_T, dt.date | None]],
) -> Iterator[_T]:
    """Fetch pages until ``paginator`` says there are none left; ``convert`` gives a result and its oldest
    trade date for each raw page."""
    while paginator.has_next_page:
        raw = fetch(paginator.count, paginator.next_key)
        result, oldest = convert(raw)
        yield result
        paginator.update(raw.next_key, oldest)
