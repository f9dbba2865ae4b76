"""The sandbox's exchange calendars (simplified HKEX / NYSE holidays) and record-date rules per market.

These are the sandbox's own: the provider never needs a calendar, only the sandbox's synthetic data does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from airflow_provider_shortint import markets

Market = str  # a code of ``markets.MARKETS`` ("HK", "US")

MARKETS: Final[tuple[Market, ...]] = markets.MARKET_CODES
TIMEZONES: Final[dict[Market, ZoneInfo]] = {code: ZoneInfo(m.timezone) for code, m in markets.MARKETS.items()}

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


#: The sandbox's exchange calendar of every registered market (a new market adds its own here).
HOLIDAYS: Final[dict[Market, Callable[[int], frozenset[date]]]] = {"HK": hk_holidays, "US": us_holidays}
if set(HOLIDAYS) != set(MARKETS):
    raise RuntimeError(
        f"the sandbox has calendars for {sorted(HOLIDAYS)}, markets.py lists {sorted(MARKETS)}"
    )


def is_business_day(market: Market, day: date) -> bool:
    """True when the market's exchange is open on ``day``."""
    return day.weekday() < 5 and day not in HOLIDAYS[market](day.year)


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
