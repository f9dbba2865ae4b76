"""Symbol parsing: canonical forms, unsupported markets, malformed input (DESIGN.md §3)."""

from __future__ import annotations

import pytest

from airflow_provider_shortint.exceptions import InvalidParameterError, UnsupportedSecurityError
from airflow_provider_shortint.symbols import market_of, normalize_symbol, parse_symbols
from tests._helpers import MALFORMED


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("HK.00700", "HK.00700"),
        ("hk.700", "HK.00700"),
        ("  HK.5 ", "HK.00005"),
        ("HK.99999", "HK.99999"),
        ("US.AAPL", "US.AAPL"),
        ("us.brk.b", "US.BRK.B"),
        ("US.BF-B", "US.BF-B"),
        ("US.A", "US.A"),
        ("us.abcdefghij", "US.ABCDEFGHIJ"),
    ],
)
def test_normalises(raw: str, canonical: str) -> None:
    assert normalize_symbol(raw) == canonical
    assert market_of(canonical) == canonical[:2]


@pytest.mark.parametrize("raw", ["SH.600000", "SZ.000001", "SG.D05", "JP.7203", "sh.600519"])
def test_other_markets_are_unsupported(raw: str) -> None:
    with pytest.raises(UnsupportedSecurityError, match="only HK and US") as info:
        normalize_symbol(raw)
    assert info.value.ret_code == -8
    assert info.value.error_code == "unsupported"


@pytest.mark.parametrize("raw", MALFORMED, ids=repr)
def test_malformed_rejected(raw: object) -> None:
    with pytest.raises(InvalidParameterError, match="symbol") as info:
        normalize_symbol(raw)
    assert info.value.error_code == "invalid_parameter"


def test_parse_symbols_list_and_string() -> None:
    assert parse_symbols("hk.700, US.AAPL,,us.aapl") == ["HK.00700", "US.AAPL"]
    assert parse_symbols(["US.MSFT", "HK.5"]) == ["US.MSFT", "HK.00005"]


def test_parse_symbols_reports_every_problem_at_once() -> None:
    with pytest.raises(InvalidParameterError) as info:
        parse_symbols(["HK.00700", "BAD", "SH.600000", "US.1X"])
    text = str(info.value)
    assert "3 bad symbol(s)" in text and "'BAD'" in text and "'SH.600000'" in text and "'US.1X'" in text


def test_parse_symbols_all_unsupported_is_unsupported() -> None:
    with pytest.raises(UnsupportedSecurityError):
        parse_symbols("SH.600000,SZ.000001")


@pytest.mark.parametrize("value", ["", " , ", [], None, 5])
def test_parse_symbols_empty_or_wrong_type(value: object) -> None:
    with pytest.raises(InvalidParameterError):
        parse_symbols(value)  # type: ignore[arg-type]
