"""Deterministic synthetic short-interest histories of the sandbox (calendars: ``calendars.py``).

Every value is a pure function of (symbol, trading date): seeds come from SHA-256, never from ``hash()``,
so two processes (or two runs) serve byte-identical data.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
import random
import threading
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

from airflow_provider_shortint import markets
from airflow_provider_shortint.exceptions import InvalidParameterError, UnsupportedSecurityError
from airflow_provider_shortint.sandbox.calendars import (
    MARKETS,
    TIMEZONES,
    Market,
    easter_sunday,
    hk_holidays,
    is_business_day,
    last_record_date,
    next_record_date,
    previous_business_day,
    record_dates,
    timestamp_ms,
    us_holidays,
)
from airflow_provider_shortint.symbols import normalize_symbol

__all__ = [  # the calendar names stay importable from here
    "MARKETS",
    "TIMEZONES",
    "Market",
    "easter_sunday",
    "history",
    "history_start",
    "history_view",
    "hk_holidays",
    "is_business_day",
    "last_record_date",
    "next_record_date",
    "parse_symbol",
    "previous_business_day",
    "record_dates",
    "timestamp_ms",
    "us_holidays",
]

Item = dict[str, "str | int | float"]
DEFAULT_TODAY: Final = date(2026, 5, 15)
"""Default "published through" date of both markets (the newest record in the vendor's documents)."""

# Symbols that do not start at their hash-derived date (both need several 90-row pages).
FIXED_STARTS: Final[dict[str, date]] = {"HK.00700": date(2018, 1, 1), "US.AAPL": date(2016, 1, 1)}
_START_MIN: Final = date(2017, 6, 1)
_START_MAX: Final = date(2026, 1, 31)
# The walk is anchored at the last record on or before this date and runs both ways from there.
_ANCHOR: Final = date(2026, 5, 15)


class SymbolError(ValueError):
    """A symbol the API rejects before looking anything up: malformed (-3) or another market (-8)."""

    def __init__(self, ret_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.ret_code = ret_code
        self.code = code
        self.message = message


def parse_symbol(raw: str) -> str:
    """Canonical symbol ("hk.700" -> "HK.00700"); raises SymbolError(-3 malformed / -8 other market).

    The grammar is the provider's own (``symbols.normalize_symbol``): the sandbox rejects what clients do.
    """
    try:
        return normalize_symbol(raw)
    except UnsupportedSecurityError as err:
        raise SymbolError(-8, "unsupported", err.message) from None
    except InvalidParameterError as err:
        raise SymbolError(-3, "invalid_parameter", err.message) from None


def market_of(symbol: str) -> Market:
    """Market of a canonical symbol (an unregistered prefix raises, see ``markets.market_of``)."""
    return markets.market_of(symbol)


def _seed(*parts: object) -> int:
    """A 64-bit seed from the SHA-256 of the parts (stable across processes)."""
    digest = hashlib.sha256("|".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _rng(*parts: object) -> random.Random:
    """A private random generator seeded from the parts."""
    return random.Random(_seed(*parts))


def history_start(symbol: str) -> date:
    """The first day a symbol may have a record: fixed for a few symbols, else hash-derived (2017-2026)."""
    fixed = FIXED_STARTS.get(symbol)
    if fixed is not None:
        return fixed
    span = (_START_MAX - _START_MIN).days
    return _START_MIN + timedelta(days=_seed(symbol, "start") % (span + 1))


@dataclass(frozen=True)
class _Profile:
    """Per-symbol constants the walk reverts to."""

    price: float
    shares: float  # HK: shares outstanding; US: float
    short: float  # typical short position (shares)
    volume: float  # typical average daily share volume
    price_vol: float  # log-price volatility per step


@dataclass(frozen=True)
class _State:
    """Walk state on one publication date."""

    price: float
    short: float
    volume: float


@dataclass(frozen=True)
class _Pinned:
    """A documented HK record that must be served exactly."""

    aggregated_short: int
    ratio: float
    close: float
    last_close: float
    avg_cost: float | None = None
    avg_daily_short_volume: int | None = None


# HK.00700 records quoted in the vendor's REST and SDK documents.
PINNED_HK_00700: Final[dict[date, _Pinned]] = {
    date(2026, 5, 15): _Pinned(54177721, 0.59, 456.4, 454.9, 456.399, 3755740),
    date(2026, 5, 8): _Pinned(44972868, 0.49, 466.1, 472.1, 471.399, 2392820),
    date(2026, 4, 30): _Pinned(51480638, 0.56, 467.8, 479.2),
    date(2026, 4, 24): _Pinned(51888755, 0.56, 493.4, 495.2),
    date(2026, 4, 17): _Pinned(47974208, 0.52, 510.5, 517.0),
    date(2026, 4, 10): _Pinned(48424833, 0.53, 504.5, 508.5),
    date(2026, 4, 2): _Pinned(49982828, 0.54, 489.2, 496.6),
    date(2026, 3, 27): _Pinned(52744147, 0.57, 493.4, 495.6),
    date(2026, 3, 20): _Pinned(51710854, 0.56, 508.0, 513.0),
    date(2026, 3, 13): _Pinned(48105325, 0.52, 547.5, 546.5),
    date(2026, 3, 6): _Pinned(42404275, 0.46, 519.0, 502.0),
    date(2026, 2, 27): _Pinned(36037870, 0.39, 518.0, 512.0),
}


def _profile(symbol: str) -> _Profile:
    """Constants of a symbol: a few are realistic, the rest drawn from the symbol's hash."""
    if symbol == "HK.00700":
        return _Profile(price=480.0, shares=9.2e9, short=4.6e7, volume=1.8e7, price_vol=0.035)
    if symbol == "US.AAPL":
        return _Profile(price=210.0, shares=1.49e10, short=1.1e8, volume=5.5e7, price_vol=0.05)
    rng = _rng(symbol, "profile")
    if market_of(symbol) == "HK":
        shares = math.exp(rng.uniform(math.log(3e8), math.log(2e10)))
        return _Profile(
            price=math.exp(rng.uniform(math.log(0.5), math.log(600.0))),
            shares=shares,
            short=shares * rng.uniform(0.002, 0.06),
            volume=shares * rng.uniform(0.0005, 0.006),
            price_vol=rng.uniform(0.02, 0.06),
        )
    shares = math.exp(rng.uniform(math.log(5e7), math.log(1.5e10)))
    return _Profile(
        price=math.exp(rng.uniform(math.log(3.0), math.log(800.0))),
        shares=shares,
        short=shares * rng.uniform(0.005, 0.15),
        volume=shares * rng.uniform(0.003, 0.02),
        price_vol=rng.uniform(0.03, 0.09),
    )


def _anchor_state(symbol: str, profile: _Profile) -> _State:
    """Walk state on the anchor date, near the profile's typical values."""
    rng = _rng(symbol, "anchor")
    return _State(
        price=profile.price * math.exp(rng.gauss(0.0, 0.1)),
        short=profile.short * math.exp(rng.gauss(0.0, 0.15)),
        volume=profile.volume * math.exp(rng.gauss(0.0, 0.15)),
    )


def _step(state: _State, profile: _Profile, rng: random.Random) -> _State:
    """One step of the walk (the same in both directions): log-normal price, mean-reverting short/volume."""
    price = max(0.01, state.price * math.exp(rng.gauss(0.0, profile.price_vol)))
    log_short = math.log(state.short)
    log_short += 0.12 * (math.log(profile.short) - log_short) + rng.gauss(0.0, 0.08)
    log_volume = math.log(state.volume)
    log_volume += 0.2 * (math.log(profile.volume) - log_volume) + rng.gauss(0.0, 0.12)
    return _State(price=price, short=math.exp(log_short), volume=math.exp(log_volume))


def _round_hk_price(value: float) -> float:
    """HK prices: 1 decimal above 100, 2 above 10, else 3."""
    return round(value, 1 if value >= 100 else 2 if value >= 10 else 3)


def _make_item(symbol: str, market: Market, day: date, state: _State, profile: _Profile) -> Item:
    """The API item of one record (keys in the vendor's order, int64 values as strings)."""
    rng = _rng(symbol, day.isoformat(), "fields")
    stamp = timestamp_ms(market, day)
    if market == "HK":
        pinned = PINNED_HK_00700.get(day) if symbol == "HK.00700" else None
        short = max(1, round(state.short))
        close = _round_hk_price(state.price)
        last_close = _round_hk_price(state.price * math.exp(rng.gauss(0.0, 0.018)))
        ratio = round(short / profile.shares * 100, 2)
        avg_cost = round(state.price * math.exp(rng.gauss(0.005, 0.03)), 3)
        adsv = max(1, round(short * rng.uniform(0.03, 0.09)))
        if pinned is not None:
            short, ratio, close, last_close = (
                pinned.aggregated_short,
                pinned.ratio,
                pinned.close,
                pinned.last_close,
            )
            avg_cost = pinned.avg_cost if pinned.avg_cost is not None else avg_cost
            adsv = pinned.avg_daily_short_volume if pinned.avg_daily_short_volume is not None else adsv
        return {
            "aggregated_short": str(short),
            "aggregated_short_ratio": ratio,
            "avg_cost": avg_cost,
            "avg_daily_short_volume": str(adsv),
            "close_price": close,
            "last_close_price": last_close,
            "timestamp": stamp,
            "timestamp_str": day.isoformat(),
        }
    short = max(1, round(state.short))
    volume = max(1, round(state.volume))
    return {
        "avg_daily_share_volume": str(volume),
        "avg_daily_short_volume": str(max(1, round(volume * rng.uniform(0.25, 0.5)))),
        "close_price": round(state.price, 2),
        "days_to_cover": round(short / volume, 2),
        "last_close_price": round(state.price * math.exp(rng.gauss(0.0, 0.02)), 2),
        "shares_short": str(short),
        "short_percent": round(short / profile.shares * 100, 2),
        "timestamp": stamp,
        "timestamp_str": day.isoformat(),
    }


class _Series:
    """The records of one symbol, oldest first; built back from the anchor once, extended forward lazily."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.market = market_of(symbol)
        self.profile = _profile(symbol)
        self._lock = threading.Lock()
        first = record_dates(self.market, history_start(symbol), history_start(symbol) + timedelta(days=45))[
            0
        ]
        anchor = last_record_date(self.market, _ANCHOR)
        pinned = PINNED_HK_00700 if symbol == "HK.00700" else {}
        states: dict[date, _State] = {}
        if pinned:
            for day, doc in pinned.items():
                states[day] = _State(price=doc.close, short=float(doc.aggregated_short), volume=1.8e7)
            back_from = min(pinned)
        else:
            states[anchor] = _anchor_state(symbol, self.profile)
            back_from = anchor
        # Backwards from the oldest anchored record down to the first record.
        older = [day for day in record_dates(self.market, first, back_from) if day < back_from]
        state = states[back_from]
        for day in reversed(older):
            state = _step(state, self.profile, _rng(symbol, day.isoformat(), "walk"))
            states[day] = state
        self._dates: list[date] = sorted(day for day in states if day >= first)
        self._states: list[_State] = [states[day] for day in self._dates]
        self._items: list[Item] = [
            _make_item(symbol, self.market, day, st, self.profile)
            for day, st in zip(self._dates, self._states, strict=True)
        ]

    def through(self, last: date) -> list[Item]:
        """Records dated on or before ``last``, oldest first (the list is shared: do not mutate)."""
        with self._lock:
            while self._dates[-1] < last:
                day = next_record_date(self.market, self._dates[-1])
                state = _step(self._states[-1], self.profile, _rng(self.symbol, day.isoformat(), "walk"))
                self._dates.append(day)
                self._states.append(state)
                self._items.append(_make_item(self.symbol, self.market, day, state, self.profile))
            return self._items[: bisect.bisect_right(self._dates, last)]


@functools.lru_cache(maxsize=4096)
def _series(symbol: str) -> _Series:
    """The cached series of a canonical symbol."""
    return _Series(symbol)


def history(symbol: str, through: date) -> list[Item]:
    """All records of a canonical symbol dated on or before ``through``, newest first (fresh copies)."""
    return [dict(item) for item in reversed(_series(symbol).through(through))]


def history_view(symbol: str, through: date) -> list[Item]:
    """Like :func:`history` but oldest first and shared (read-only use by the server, no copying)."""
    return _series(symbol).through(through)
