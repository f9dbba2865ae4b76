"""Deterministic synthetic short-interest histories and the HK / US trading calendars of the sandbox.

Every value is a pure function of (symbol, trading date): seeds come from SHA-256, never from ``hash()``,
so two processes (or two runs) serve byte-identical data.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
import random
import re
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo

Market = Literal["HK", "US"]
Item = dict[str, "str | int | float"]

MARKETS: Final[tuple[Market, ...]] = ("HK", "US")
TIMEZONES: Final[dict[Market, ZoneInfo]] = {
    "HK": ZoneInfo("Asia/Hong_Kong"),
    "US": ZoneInfo("America/New_York"),
}
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


_HK_CODE = re.compile(r"[0-9]{1,5}")
_US_TICKER = re.compile(r"[A-Z][A-Z0-9.\-]{0,9}")
_OTHER_MARKET = re.compile(r"[A-Z]{2,4}")
_OTHER_CODE = re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,19}")


def parse_symbol(raw: str) -> str:
    """Canonical symbol ("hk.700" -> "HK.00700"); raises SymbolError(-3 malformed / -8 other market)."""
    text = raw.strip()
    market, dot, code = text.upper().partition(".")
    shown = raw if len(raw) <= 40 else raw[:40] + "..."
    if dot and code and text.isascii():  # "\u017f".upper() == "S": non-ASCII is malformed
        if market == "HK" and _HK_CODE.fullmatch(code):
            return f"HK.{int(code):05d}"
        if market == "US" and _US_TICKER.fullmatch(code) and ".." not in code and code[-1] not in ".-":
            return f"US.{code}"
        if market not in ("HK", "US") and _OTHER_MARKET.fullmatch(market) and _OTHER_CODE.fullmatch(code):
            return _raise(-8, "unsupported", f"market {market} is not supported: only HK and US securities")
    return _raise(
        -3, "invalid_parameter", f"invalid symbol format {shown!r}: expected HK.<digits> or US.<ticker>"
    )


def _raise(ret_code: int, code: str, message: str) -> str:
    """Raise a SymbolError (typed as returning str so callers can ``return`` it)."""
    raise SymbolError(ret_code, code, message)


def market_of(symbol: str) -> Market:
    """Market of a canonical symbol."""
    return "HK" if symbol.startswith("HK.") else "US"


# --------------------------------------------------------------------------------------------------
# Calendars
# --------------------------------------------------------------------------------------------------

# First day of the Lunar New Year (HK closes that day and the next two).
_LUNAR_NEW_YEAR: Final[dict[int, date]] = {
    2015: date(2015, 2, 19),
    2016: date(2016, 2, 8),
    2017: date(2017, 1, 28),
    2018: date(2018, 2, 16),
    2019: date(2019, 2, 5),
    2020: date(2020, 1, 25),
    2021: date(2021, 2, 12),
    2022: date(2022, 2, 1),
    2023: date(2023, 1, 22),
    2024: date(2024, 2, 10),
    2025: date(2025, 1, 29),
    2026: date(2026, 2, 17),
    2027: date(2027, 2, 6),
    2028: date(2028, 1, 26),
    2029: date(2029, 2, 13),
    2030: date(2030, 2, 3),
}


def easter_sunday(year: int) -> date:
    """Western Easter Sunday (anonymous Gregorian algorithm)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return date(year, month, day + 1)


@functools.lru_cache(maxsize=128)
def hk_holidays(year: int) -> frozenset[date]:
    """HKEX full-day closures (simplified): New Year, Lunar New Year, Easter, Ching Ming, Labour Day,
    1 July, National Day, Christmas; a holiday on a Sunday (or on another holiday) moves to the next day."""
    easter = easter_sunday(year)
    ching_ming = date(year, 4, 4 if year % 4 in (0, 1) else 5)
    fixed = [date(year, 1, 1)]
    lny = _LUNAR_NEW_YEAR.get(year)
    if lny is not None:
        fixed += [lny, lny + timedelta(days=1), lny + timedelta(days=2)]
    fixed += [
        easter - timedelta(days=2),  # Good Friday
        easter - timedelta(days=1),  # the day following Good Friday (a Saturday)
        easter + timedelta(days=1),  # Easter Monday
        ching_ming,
        date(year, 5, 1),
        date(year, 7, 1),
        date(year, 10, 1),
        date(year, 12, 25),
        date(year, 12, 26),
    ]
    result: set[date] = set()
    for day in fixed:
        while day.weekday() == 6 or day in result:
            day += timedelta(days=1)
        result.add(day)
    return frozenset(result)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th given weekday of a month (n = -1: the last one)."""
    if n > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = date(year, month + 1, 1) - timedelta(days=1) if month < 12 else date(year, 12, 31)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _observed(day: date) -> date:
    """US federal rule: Saturday -> Friday, Sunday -> Monday."""
    if day.weekday() == 5:
        return day - timedelta(days=1)
    if day.weekday() == 6:
        return day + timedelta(days=1)
    return day


@functools.lru_cache(maxsize=128)
def us_holidays(year: int) -> frozenset[date]:
    """NYSE full-day closures (regular holidays; one-off closures are left out)."""
    days = {
        _nth_weekday(year, 1, 0, 3),  # Martin Luther King Jr. Day
        _nth_weekday(year, 2, 0, 3),  # Washington's Birthday
        easter_sunday(year) - timedelta(days=2),  # Good Friday
        _nth_weekday(year, 5, 0, -1),  # Memorial Day
        _observed(date(year, 7, 4)),
        _nth_weekday(year, 9, 0, 1),  # Labor Day
        _nth_weekday(year, 11, 3, 4),  # Thanksgiving
        _observed(date(year, 12, 25)),
    }
    new_year = date(year, 1, 1)
    if new_year.weekday() != 5:  # NYSE does not close on Friday 31 Dec for a Saturday New Year
        days.add(_observed(new_year))
    if year >= 2022:
        days.add(_observed(date(year, 6, 19)))  # Juneteenth
    return frozenset(days)


def is_business_day(market: Market, day: date) -> bool:
    """True when the market's exchange is open on ``day``."""
    if day.weekday() >= 5:
        return False
    holidays = hk_holidays(day.year) if market == "HK" else us_holidays(day.year)
    return day not in holidays


def previous_business_day(market: Market, day: date) -> date:
    """``day`` itself when the exchange is open, else the nearest earlier open day."""
    while not is_business_day(market, day):
        day -= timedelta(days=1)
    return day


def record_dates(market: Market, start: date, end: date) -> list[date]:
    """Publication dates in [start, end], oldest first.

    HK: the last trading day of each Monday-Friday week. US: the 15th and the last day of each month,
    each moved back to the previous business day.
    """
    found: list[date] = []
    if market == "HK":
        monday = start - timedelta(days=start.weekday())
        while monday <= end:
            for offset in (4, 3, 2, 1, 0):
                day = monday + timedelta(days=offset)
                if is_business_day("HK", day):
                    found.append(day)
                    break
            monday += timedelta(days=7)
    else:
        year, month = start.year, start.month
        while date(year, month, 1) <= end:
            next_month = date(year + month // 12, month % 12 + 1, 1)
            for target in (date(year, month, 15), next_month - timedelta(days=1)):
                found.append(previous_business_day("US", target))
            year, month = next_month.year, next_month.month
    return [day for day in found if start <= day <= end]


def next_record_date(market: Market, after: date) -> date:
    """The first publication date strictly after ``after``."""
    window = after + timedelta(days=1)
    while True:
        dates = record_dates(market, window, window + timedelta(days=45))
        if dates:
            return dates[0]
        window += timedelta(days=46)


def last_record_date(market: Market, through: date) -> date:
    """The newest publication date on or before ``through``."""
    dates = record_dates(market, through - timedelta(days=45), through)
    return dates[-1]


def timestamp_ms(market: Market, day: date) -> int:
    """Milliseconds since the epoch at local midnight of ``day`` in the market's time zone (DST-aware)."""
    return int(datetime(day.year, day.month, day.day, tzinfo=TIMEZONES[market]).timestamp()) * 1000


# --------------------------------------------------------------------------------------------------
# Synthetic values
# --------------------------------------------------------------------------------------------------


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
            back_from, fwd_from = min(pinned), max(pinned)
        else:
            states[anchor] = _anchor_state(symbol, self.profile)
            back_from = fwd_from = anchor
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
        self._fwd_from = fwd_from

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
