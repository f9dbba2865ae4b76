"""Bad input is rejected with a clear message before any request; the parser and the hook survive any body.

1. A table of malformed symbols, counts, dates, keys, connections, lake paths and templated values, fed to
   the hook's methods, the connection, the operator's constructor and ``execute``: each raises the
   documented error with a recognisable phrase, and the sandbox has seen no request afterwards.
2. Hypothesis fuzzing of ``records.parse_items`` and of ``ShortInterestHook.get_page`` against random
   response bodies (bytes, JSON, mutated envelopes, hostile headers) served by the sandbox: only
   ``ShortInterestError`` subclasses escape, and their messages stay short.

``SHORTINT_FUZZ_SCALE=10`` multiplies the number of examples (default: 500, 400 and 300 examples).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import pickle
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_shortint.exceptions import (
    InvalidParameterError,
    ShortInterestError,
    ShortInterestResponseError,
    UnsupportedSecurityError,
)
from airflow_provider_shortint.hooks.short_interest import ShortInterestHook
from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator
from airflow_provider_shortint.records import ShortInterestPage, parse_items
from airflow_provider_shortint.sandbox import SandboxServer
from airflow_provider_shortint.symbols import normalize_symbol
from tests._fixtures_hostile import RequestLog
from tests._helpers import HK_ITEM

HookCall = Callable[[ShortInterestHook], object]
SCALE = max(1, int(os.environ.get("SHORTINT_FUZZ_SCALE", "1")))


def fuzz(examples: int) -> settings:
    """Hypothesis settings: ``examples`` x SHORTINT_FUZZ_SCALE, the same examples on every run."""
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        derandomize=True,  # reproducible figures and runtime; raise the scale to explore more
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


_ids = iter(range(1_000_000))


def outlet_context() -> dict[str, Any]:
    from airflow.sdk.execution_time.context import OutletEventAccessors

    return {"outlet_events": OutletEventAccessors()}


# ------------------------------------------------------------------------------------------------
# 1. Table-driven bad input, rejected before any request
# ------------------------------------------------------------------------------------------------

BAD = InvalidParameterError
OTHER_MARKET = UnsupportedSecurityError

HOOK_CASES: list[Any] = [
    # symbols
    pytest.param(lambda h: h.get_page("HK.123456"), BAD, "1 to 5 digits", id="hk-6-digits"),
    pytest.param(lambda h: h.get_page("HK.ABC"), BAD, "1 to 5 digits", id="hk-letters"),
    pytest.param(lambda h: h.get_page("HK.-700"), BAD, "1 to 5 digits", id="hk-negative"),
    pytest.param(lambda h: h.get_page("HK.007 00"), BAD, "1 to 5 digits", id="hk-inner-space"),
    pytest.param(lambda h: h.get_page("HK.00700/../x"), BAD, "1 to 5 digits", id="hk-path-traversal"),
    pytest.param(lambda h: h.get_page("HK.00700?count=90"), BAD, "1 to 5 digits", id="hk-query-smuggling"),
    pytest.param(lambda h: h.get_page("HK.00700\x00"), BAD, "1 to 5 digits", id="hk-nul"),
    pytest.param(lambda h: h.get_page("HK.\u0660\u0667"), BAD, "ASCII", id="hk-arabic-digits"),
    pytest.param(lambda h: h.get_page("AAPL"), BAD, "expected MARKET.CODE", id="no-market"),
    pytest.param(lambda h: h.get_page(""), BAD, "expected MARKET.CODE", id="empty-symbol"),
    pytest.param(lambda h: h.get_page("HK."), BAD, "expected MARKET.CODE", id="no-code"),
    pytest.param(lambda h: h.get_page(None), BAD, "must be a string", id="symbol-none"),
    pytest.param(lambda h: h.get_page(700), BAD, "must be a string", id="symbol-int"),
    pytest.param(lambda h: h.get_page(["HK.00700"]), BAD, "must be a string", id="symbol-list"),
    pytest.param(lambda h: h.get_page("US.1ABC"), BAD, "US ticker", id="us-digit-first"),
    pytest.param(lambda h: h.get_page("US.ABCDEFGHIJK"), BAD, "US ticker", id="us-11-chars"),
    pytest.param(lambda h: h.get_page("US.A..B"), BAD, "US ticker", id="us-double-dot"),
    pytest.param(lambda h: h.get_page("US.BRK-"), BAD, "US ticker", id="us-trailing-dash"),
    pytest.param(lambda h: h.get_page("US.\ufb00"), BAD, "ASCII", id="us-ligature-ff"),
    pytest.param(lambda h: h.get_page("u\u017f.aapl"), BAD, "ASCII", id="long-s-market"),
    pytest.param(lambda h: h.get_page("US." + "A" * 5000), BAD, "US ticker", id="us-5000-chars"),
    pytest.param(lambda h: h.get_page("SH.600000"), OTHER_MARKET, "only HK and US", id="market-sh"),
    pytest.param(lambda h: h.get_latest("JP.7203"), OTHER_MARKET, "only HK and US", id="latest-jp"),
    pytest.param(lambda h: h.get_latest("hk."), BAD, "expected MARKET.CODE", id="latest-no-code"),
    # counts and page sizes
    pytest.param(lambda h: h.get_page("HK.00700", count=0), BAD, "count must be an integer from 1 to 90"),
    pytest.param(lambda h: h.get_page("HK.00700", count=91), BAD, "count must be an integer from 1 to 90"),
    pytest.param(lambda h: h.get_page("HK.00700", count=-1), BAD, "count must be an integer from 1 to 90"),
    pytest.param(lambda h: h.get_page("HK.00700", count="30"), BAD, "count must be an integer", id="c-str"),
    pytest.param(lambda h: h.get_page("HK.00700", count=30.0), BAD, "count must be an integer", id="c-f"),
    pytest.param(lambda h: h.get_page("HK.00700", count=True), BAD, "count must be an integer", id="c-bool"),
    pytest.param(lambda h: h.get_page("HK.00700", count=None), BAD, "count must be an integer", id="c-none"),
    pytest.param(
        lambda h: h.get_page("HK.1", count=np.True_), BAD, "count must be an integer", id="c-np-bool"
    ),
    pytest.param(lambda h: h.get_page("HK.1", count=np.float64(5)), BAD, "count must be", id="c-np-float"),
    pytest.param(lambda h: h.get_page("HK.1", count=np.int64(91)), BAD, "count must be", id="c-np-91"),
    pytest.param(lambda h: h.get_page("HK.1", count=10**100), BAD, "count must be", id="c-googol"),
    pytest.param(lambda h: next(h.iter_pages("HK.00700", page_size=0)), BAD, "page_size must be"),
    pytest.param(lambda h: next(h.iter_pages("HK.00700", page_size=91)), BAD, "page_size must be"),
    pytest.param(lambda h: h.get_history("HK.00700", page_size="90"), BAD, "page_size must be", id="ps-str"),
    pytest.param(lambda h: next(h.iter_pages("HK.1", first_page_size=0)), BAD, "first_page_size must be"),
    pytest.param(lambda h: h.get_short_interest("HK.00700", num=0), BAD, "count must be", id="num-0"),
    pytest.param(lambda h: h.get_short_interest("HK.00700", num=91), BAD, "count must be", id="num-91"),
    pytest.param(lambda h: h.get_short_interest("HK", num=5), BAD, "expected MARKET.CODE", id="sdk-code"),
    # next_key
    pytest.param(lambda h: h.get_page("HK.00700", next_key="-1"), BAD, "marks the last page", id="key-1"),
    pytest.param(lambda h: h.get_page("HK.00700", next_key=123), BAD, "next_key must be", id="key-int"),
    pytest.param(lambda h: h.get_short_interest("HK.1", next_key="-1"), BAD, "last page", id="sdk-key"),
    pytest.param(lambda h: h.get_page("HK.1", next_key="k\r\nX: 1"), BAD, "control", id="key-crlf"),
    pytest.param(lambda h: h.get_page("HK.1", next_key="k\t"), BAD, "control", id="key-tab"),
    pytest.param(lambda h: h.get_page("HK.1", next_key="k" * 100_000), BAD, "1,024", id="key-100-KB"),
    pytest.param(
        lambda h: h.get_short_interest("HK.1", next_key="k" * 1025), BAD, "1,024", id="sdk-key-long"
    ),
    # dates
    pytest.param(lambda h: h.get_history("HK.00700", since="2026-13-01"), BAD, "since must be an ISO date"),
    pytest.param(lambda h: h.get_history("HK.00700", since="2026-02-30"), BAD, "since must be an ISO date"),
    pytest.param(lambda h: h.get_history("HK.00700", since="yesterday"), BAD, "since must be an ISO date"),
    pytest.param(lambda h: h.get_history("HK.00700", since="{{ ds }}"), BAD, "since must be an ISO date"),
    pytest.param(lambda h: h.get_history("HK.00700", since=20260515), BAD, "since must be", id="since-int"),
    pytest.param(lambda h: h.get_history("HK.00700", since=" "), BAD, "since must be", id="since-blank"),
    pytest.param(lambda h: next(h.iter_pages("HK.00700", stop_after="15/05/2026")), BAD, "stop_after must"),
]


@pytest.fixture
def hook(sandbox: SandboxServer, use_conn: Callable[..., str]) -> Iterator[ShortInterestHook]:
    hook = ShortInterestHook(shortint_conn_id=use_conn(sandbox.url, conn_id="bad_input"))
    yield hook
    hook.close()


@pytest.mark.parametrize(("call", "error", "phrase"), HOOK_CASES)
def test_hook_rejects_bad_input_before_any_request(
    hook: ShortInterestHook, sandbox: SandboxServer, call: HookCall, error: type[Exception], phrase: str
) -> None:
    with pytest.raises(error, match=_phrase(phrase)) as caught:
        call(hook)
    assert isinstance(caught.value, ShortInterestError)
    assert len(str(caught.value)) < 400, "messages stay one readable line"
    assert sandbox.stats()["requests"] == 0
    assert hook.requests_made == 0


CONNECTION_CASES: list[Any] = [
    pytest.param({"host": ""}, "has no host", id="no-host"),
    pytest.param({"host": "ftp://x"}, "is not an http(s) URL", id="ftp-host"),
    pytest.param({"host": "http://"}, "is not an http(s) URL", id="no-hostname"),
    pytest.param({"extra": {"timeout": "abc"}}, "extra 'timeout' has an invalid value", id="timeout-abc"),
    pytest.param({"extra": {"timeout": 0}}, "extra 'timeout'", id="timeout-0"),
    pytest.param({"extra": {"timeout": "nan"}}, "extra 'timeout'", id="timeout-nan"),
    pytest.param({"extra": {"max_retries": -1}}, "extra 'max_retries'", id="retries-negative"),
    pytest.param({"extra": {"max_retries": 1.5}}, "extra 'max_retries'", id="retries-fraction"),
    pytest.param({"extra": {"rate_limit_calls": 0}}, "extra 'rate_limit_calls'", id="calls-0"),
    pytest.param({"extra": {"rate_limit_period": -30}}, "extra 'rate_limit_period'", id="period-negative"),
    pytest.param({"extra": {"verify_ssl": "maybe"}}, "extra 'verify_ssl'", id="verify-maybe"),
    pytest.param({"extra": {"backoff_base": "-1"}}, "extra 'backoff_base'", id="backoff-negative"),
    # issue 14: values that used to overflow, be silently dropped or silently not shared
    pytest.param({"extra": {"timeout": "inf"}}, "extra 'timeout'", id="timeout-inf"),
    pytest.param({"extra": {"timeout": "1e400"}}, "extra 'timeout'", id="timeout-1e400"),
    pytest.param({"extra": {"timeout": 1e9}}, "extra 'timeout'", id="timeout-31-years"),
    pytest.param({"extra": {"rate_limit_period": "inf"}}, "extra 'rate_limit_period'", id="period-inf"),
    pytest.param({"extra": {"rate_limit_period": "NaN"}}, "extra 'rate_limit_period'", id="period-nan"),
    pytest.param({"extra": {"backoff_base": "nan"}}, "extra 'backoff_base'", id="backoff-nan"),
    pytest.param({"extra": {"rate_limit_calls": True}}, "extra 'rate_limit_calls'", id="calls-bool"),
    pytest.param(
        {"extra": {"rate_limit_state_dir": "budget"}}, "extra 'rate_limit_state_dir'", id="state-dir-relative"
    ),
    pytest.param(
        {"extra": {"rate_limit_state_dir": "/etc/passwd"}},
        "extra 'rate_limit_state_dir'",
        id="state-dir-file",
    ),
    pytest.param(
        {"extra": {"rate_limit_redis_conn_id": "redis default"}},
        "extra 'rate_limit_redis_conn_id'",
        id="redis-conn-id-space",
    ),
    pytest.param({"extra": {"rate_limit_key": "a\nb"}}, "extra 'rate_limit_key'", id="budget-key-newline"),
    pytest.param({"host": "http://{netloc}/?count=90"}, "has a query string or fragment", id="host-query"),
    pytest.param({"host": "http://{netloc}/#top"}, "has a query string or fragment", id="host-fragment"),
    pytest.param({"host": "http://{netloc}/?"}, "has a query string or fragment", id="host-empty-query"),
    pytest.param({"host": "http://{netloc}/a b"}, "contains spaces", id="host-space"),
    pytest.param({"host": "http://127.0.0.1", "port": 70000}, "port must be 1 to 65535", id="port-70000"),
    pytest.param({"host": "http://127.0.0.1:99999"}, "not a valid http(s) URL", id="url-port-99999"),
    pytest.param({"host": "http://user:pa55w0rd@{netloc}"}, "holds credentials", id="host-credentials"),
    pytest.param({"host": "http://tok3n-in-user@{netloc}"}, "holds credentials", id="host-user-only"),
    pytest.param({"password": "s3cret-tok3n\n"}, "contains a line break", id="token-newline"),
    pytest.param({"password": "s3cret\r\nX-Evil: 1"}, "contains a line break", id="token-header-injection"),
    pytest.param({"password": "s3cret-t\u00f6k\u20ac"}, "outside ASCII", id="token-non-latin-1"),
    pytest.param({"password": "s3cret-t\u00f6ken"}, "outside ASCII", id="token-latin-1-accent"),
    pytest.param({"password": "s3cret-\x85-token"}, "outside ASCII", id="token-c1-control"),
]
#: Secrets typed into the connections above; no message may show them.
CONNECTION_SECRETS = ("pa55w0rd", "tok3n-in-user", "s3cret")


@pytest.mark.parametrize(("conn", "phrase"), CONNECTION_CASES)
def test_bad_connection_rejected_before_any_request(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, conn: dict[str, Any], phrase: str
) -> None:
    fields = {"conn_type": "shortint", "host": sandbox.url, **conn}
    fields["host"] = fields["host"].replace("{netloc}", sandbox.url.split("://")[1])
    monkeypatch.setenv("AIRFLOW_CONN_SHORTINT_BAD", json.dumps(fields))
    hook = ShortInterestHook(shortint_conn_id="shortint_bad")
    with pytest.raises(InvalidParameterError, match=_phrase(phrase)) as caught:
        hook.get_latest("HK.00700")
    ok, message = hook.test_connection()
    assert not ok and phrase.split("'")[0] in message
    assert sandbox.stats()["requests"] == 0 and hook.requests_made == 0
    err = caught.value
    texts = [str(err), repr(err), message, repr(pickle.loads(pickle.dumps(err)))]
    texts.append("".join(traceback.format_exception(err)))
    chain = list(_chain(err))
    texts += [f"{link!r} {link.args!r} {vars(link)!r}" for link in chain]
    assert not any(secret in text for secret in CONNECTION_SECRETS for text in texts)
    assert chain == [err], chain  # nothing chained: no wrapped error can hold what was typed


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and every exception it holds: ``__cause__``, ``__context__`` and exceptions in ``args``."""
    todo: list[object] = [err]
    seen: set[int] = set()
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [item.__cause__, item.__context__, *item.args]


OPERATOR_CASES: list[Any] = [
    # symbols, as typed or as rendered from a template
    pytest.param({"symbols": None}, BAD, "symbols must be a list", id="symbols-none"),
    pytest.param({"symbols": []}, BAD, "no symbols given", id="symbols-empty-list"),
    pytest.param({"symbols": ""}, BAD, "no symbols given", id="symbols-empty-string"),
    pytest.param({"symbols": " , ,"}, BAD, "no symbols given", id="symbols-only-commas"),
    pytest.param({"symbols": [1]}, BAD, "must be a string", id="symbols-int"),
    pytest.param({"symbols": 700}, BAD, "symbols must be a list", id="symbols-scalar-int"),
    pytest.param({"symbols": b"HK.00700"}, BAD, "symbols must be a list", id="symbols-bytes"),
    pytest.param({"symbols": "HK.123456"}, BAD, "1 to 5 digits", id="symbols-hk-6-digits"),
    pytest.param({"symbols": "HK.00700;US.AAPL"}, BAD, "1 to 5 digits", id="symbols-semicolon"),
    pytest.param({"symbols": "HK.00700,AAPL"}, BAD, "'AAPL'", id="symbols-one-bad-of-two"),
    pytest.param({"symbols": ["HK.00700", "SH.600000"]}, OTHER_MARKET, "only HK and US", id="symbols-sh"),
    pytest.param({"symbols": "['HK.00700', "}, BAD, "looks like a list", id="rendered-list-broken"),
    pytest.param({"symbols": "['HK.00700', 'US.AAPL'"}, BAD, "looks like a list", id="rendered-list-open"),
    pytest.param({"symbols": "[HK.00700, US.AAPL]"}, BAD, "looks like a list", id="rendered-unquoted"),
    pytest.param({"symbols": "[1, 2]"}, BAD, "must be a string", id="rendered-ints"),
    pytest.param({"symbols": "[['HK.00700']]"}, BAD, "got list", id="rendered-nested"),
    pytest.param({"symbols": "{{ params.symbols }}"}, BAD, "malformed symbol", id="unrendered-template"),
    pytest.param({"symbols": ["HK.1"] * 3 + ["X"] * 50}, BAD, "and 40 more", id="symbols-50-bad"),
    # since
    pytest.param({"since": "2026-13-01"}, BAD, "since must be an ISO date", id="since-month-13"),
    pytest.param({"since": "{{ ds }}"}, BAD, "since must be an ISO date", id="since-unrendered"),
    pytest.param({"since": "None"}, BAD, "since must be an ISO date", id="since-rendered-none"),
    pytest.param({"since": 1.5}, BAD, "since must be an ISO date", id="since-float"),
    # lake paths
    pytest.param({"lake_path": "relative/x"}, BAD, "is relative", id="lake-relative"),
    pytest.param({"lake_path": "~/lake"}, BAD, "is relative", id="lake-tilde"),
    pytest.param({"lake_path": ""}, BAD, "lake_path is empty", id="lake-empty"),
    pytest.param({"lake_path": "   "}, BAD, "lake_path is empty", id="lake-blank"),
    pytest.param({"lake_path": None}, BAD, "not None", id="lake-none"),
    pytest.param({"lake_path": 42}, BAD, "not 42", id="lake-int"),
    pytest.param({"lake_path": "ftp://x"}, BAD, "no filesystem", id="lake-ftp"),
    pytest.param({"lake_path": "http://x/lake"}, BAD, "no filesystem", id="lake-http"),
    pytest.param({"lake_path": "s3://"}, BAD, "names no bucket", id="lake-s3-no-bucket"),
    pytest.param({"lake_path": "file://remotehost/x"}, BAD, "must name a local path", id="lake-file-remote"),
    pytest.param({"lake_path": "1ab+://x"}, BAD, "malformed URL scheme", id="lake-bad-scheme"),
    pytest.param({"lake_path": "{{ params.lake }}"}, BAD, "is relative", id="lake-unrendered"),
]


def rendered_operator(tmp_path: Path, **rendered: Any) -> ShortInterestToParquetOperator:
    """An operator whose templated fields received ``rendered`` (as Airflow sets them before execute)."""
    op = ShortInterestToParquetOperator(
        task_id=f"bad_{next(_ids)}", symbols="{{ s }}", lake_path="{{ l }}", since="{{ d }}"
    )
    values: dict[str, Any] = {"symbols": ["HK.00700"], "lake_path": str(tmp_path / "lake"), "since": None}
    for name, value in {**values, **rendered}.items():
        setattr(op, name, value)
    return op


@pytest.mark.parametrize(("kwargs", "error", "phrase"), OPERATOR_CASES)
def test_operator_execute_rejects_bad_input_before_any_request(
    sandbox: SandboxServer,
    use_conn: Callable[..., str],
    tmp_path: Path,
    kwargs: dict[str, Any],
    error: type[Exception],
    phrase: str,
) -> None:
    use_conn(sandbox.url)
    op = rendered_operator(tmp_path, **kwargs)
    with pytest.raises(error, match=_phrase(phrase)) as caught:
        op.execute(outlet_context())  # type: ignore[arg-type]
    assert isinstance(caught.value, ShortInterestError)
    assert len(str(caught.value)) < 1000
    assert sandbox.stats()["requests"] == 0
    assert not (tmp_path / "lake").exists()


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        pytest.param({"page_size": 0}, "page_size must be an integer from 1 to 90", id="page-size-0"),
        pytest.param({"page_size": 91}, "page_size must be an integer from 1 to 90", id="page-size-91"),
        pytest.param({"page_size": "90"}, "page_size must be an integer from 1 to 90", id="page-size-str"),
        pytest.param({"page_size": None}, "page_size must be an integer from 1 to 90", id="page-size-none"),
        pytest.param({"mode": "FULL"}, "mode must be one of", id="mode-upper"),
        pytest.param({"mode": None}, "mode must be one of", id="mode-none"),
        pytest.param({"batch_size": 0}, "batch_size must be a positive integer", id="batch-0"),
        pytest.param({"batch_size": True}, "batch_size must be a positive integer", id="batch-bool"),
        pytest.param({"batch_size": np.float64(5)}, "batch_size must be a positive", id="batch-np-float"),
        pytest.param({"page_size": np.True_}, "page_size must be an integer", id="page-size-np-bool"),
        pytest.param({"on_symbol_error": "skip"}, "on_symbol_error must be one of", id="policy"),
    ],
)
def test_operator_static_arguments_rejected_at_parse_time(kwargs: dict[str, Any], phrase: str) -> None:
    with pytest.raises(ValueError, match=_phrase(phrase)):
        ShortInterestToParquetOperator(task_id="t", symbols="HK.00700", lake_path="/tmp/lake", **kwargs)


def test_numpy_integers_are_integers() -> None:
    """Sizes computed with numpy (a DataFrame's len, a sum) are accepted as the integers they are."""
    from airflow_provider_shortint.validation import positive_int

    op = ShortInterestToParquetOperator(
        task_id="np",
        symbols="HK.00700",
        lake_path="/tmp/lake",
        page_size=np.int64(50),
        batch_size=np.int32(7),
    )
    assert op.page_size == 50 and positive_int(np.uint16(7), "batch_size") == 7
    assert type(positive_int(np.int64(3), "n")) is int


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("[" + "1+" * 100_000 + "1]", id="deep-binop"),
        pytest.param("[" + "-" * 100_000 + "1]", id="deep-unary"),
        pytest.param("[" + "[" * 5_000 + "]" * 5_000 + "]", id="deep-nesting"),
    ],
)
def test_operator_hostile_rendered_list(
    sandbox: SandboxServer, use_conn: Callable[..., str], tmp_path: Path, value: str
) -> None:
    use_conn(sandbox.url)
    op = rendered_operator(tmp_path, symbols=value)
    with pytest.raises(InvalidParameterError, match="looks like a list") as caught:
        op.execute(outlet_context())  # type: ignore[arg-type]
    assert len(str(caught.value)) < 1000
    assert sandbox.stats()["requests"] == 0


def test_templated_values_render_and_work(
    sandbox: SandboxServer, use_conn: Callable[..., str], tmp_path: Path
) -> None:
    """A list rendered by Jinja arrives as its text, "['HK.00700', 'US.AAPL']": it must still work."""
    use_conn(sandbox.url)
    op = ShortInterestToParquetOperator(
        task_id="templated",
        symbols="{{ params.symbols }}",
        lake_path="{{ params.lake }}",
        since="{{ params.since }}",
        mode="full",
    )
    params = {
        "symbols": ["hk.700", "US.AAPL", "HK.00700"],
        "lake": str(tmp_path / "lake"),
        "since": "2026-04-01",
    }
    op.render_template_fields({"params": params})  # type: ignore[arg-type]
    assert op.symbols == "['hk.700', 'US.AAPL', 'HK.00700']" and op.since == "2026-04-01"
    summary = op.execute(outlet_context())  # type: ignore[arg-type]
    assert summary["symbols"] == 2 and summary["failed"] == {}
    newer = [
        item
        for symbol in ("HK.00700", "US.AAPL")
        for item in sandbox.history(symbol)
        if item["timestamp_str"] > "2026-04-01"
    ]
    assert summary["rows_written"] == len(newer) > 0
    # The same with a comma-separated string with spaces and a trailing comma, and a date object.
    again = ShortInterestToParquetOperator(
        task_id="again",
        symbols=" hk.700 , us.aapl ,",
        lake_path=f"file://{tmp_path}/lake",
        since=dt.date(2026, 4, 1),
    )
    assert again.execute(outlet_context())["rows_written"] == 0  # type: ignore[arg-type]


def _phrase(text: str) -> str:
    import re

    return re.escape(text)


# ------------------------------------------------------------------------------------------------
# 2. Fuzzing: the parser and the hook against arbitrary bodies
# ------------------------------------------------------------------------------------------------

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["2026-05-15", "2026-02-30", "54177721", "-1", "1e999", "nan", " 12 ", "", "0x10"])
)
JSON = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
FIELDS = [*HK_ITEM, "shares_short", "short_percent", "avg_daily_share_volume", "days_to_cover"]


@st.composite
def mutated_items(draw: st.DrawFn) -> object:
    """A list of valid items with a few fields replaced, removed or retyped."""
    items = [copy.deepcopy(HK_ITEM) for _ in range(draw(st.integers(0, 4)))]
    for item in items:
        for _ in range(draw(st.integers(0, 3))):
            name = draw(st.sampled_from(FIELDS))
            if draw(st.booleans()):
                item[name] = draw(JSON_LEAVES)
            else:
                item.pop(name, None)
    if items and draw(st.booleans()):
        items[draw(st.integers(0, len(items) - 1))] = draw(JSON)
    return items


@fuzz(500)
@given(items=st.one_of(JSON, mutated_items()))
def test_fuzz_parse_items(items: object) -> None:
    try:
        rows = parse_items("HK.00700", items)
    except ShortInterestResponseError as err:
        assert len(err.message) < 300
        return
    for row in rows:
        assert isinstance(row["trade_date"], dt.date)
        for name, value in row.items():
            assert value is None or isinstance(value, (str, int, float, dt.date)), name


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """A valid success or error envelope, then mutated: retyped fields, dropped keys, cut or spliced bytes."""
    if draw(st.booleans()):
        payload: dict[str, Any] = {
            "ret_code": 0,
            "ret_msg": "success",
            "data": {
                "items": draw(mutated_items()),
                "next_key": draw(st.sampled_from(["-1", "", "k1", None])),
            },
        }
    else:
        code = draw(st.sampled_from([-3, -5, -7, -8, -10, 42]))
        payload = {
            "ret_code": code,
            "ret_msg": "msg",
            "error": {"code": "x", "message": draw(st.text(max_size=2000))},
        }
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(["ret_code", "ret_msg", "data", "error", "data.items", "data.next_key"]))
        target: Any = payload
        *parents, leaf = path.split(".")
        for parent in parents:
            target = target.get(parent) if isinstance(target, dict) else None
        if isinstance(target, dict):
            if draw(st.booleans()):
                target[leaf] = draw(JSON)
            else:
                target.pop(leaf, None)
    body = json.dumps(payload, allow_nan=True).encode()
    cut = draw(st.sampled_from(["none", "truncate", "splice"]))
    if cut == "truncate":
        body = body[: draw(st.integers(0, len(body)))]
    elif cut == "splice":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.binary(max_size=8)) + body[at:]
    return body


HOSTILE_BODIES = st.sampled_from(
    [
        b"[" * 100_000,
        b'{"ret_code": ' + b"9" * 5000 + b"}",
        b'{"ret_code": 1e999}',
        b'{"ret_code": -7, "error": {"message": "' + b"x" * 100_000 + b'"}}',
        b'{"ret_code": 0, "data": {"items": [{"timestamp_str": "2026-05-15", "close_price": 1'
        + b"0" * 400
        + b"}]}}",
        b"\xff\xfe\x00{",
        '{"ret_code": "\u00e9"}'.encode("utf-16"),
        b"",
        b"null",
    ]
)
RETRY_AFTER = st.sampled_from(
    [
        "1",
        "0",
        "-5",
        "nan",
        "inf",
        "1e308",
        "Wed, 21 Oct 2015 07:28:00 GMT",
        "Wed, 21 Oct 2015 07:28:00 -0000",
        "Wed, 32 Oct 2015 07:28:00 GMT",
        "Wed, 21 Oct 99999 07:28:00 GMT",
        "soon",
        "",
    ]
)


@pytest.fixture
def fuzz_log() -> RequestLog:
    return RequestLog()


@pytest.fixture
def fuzz_hook(
    sandbox: SandboxServer, use_conn: Callable[..., str], fuzz_log: RequestLog
) -> Iterator[ShortInterestHook]:
    conn = use_conn(sandbox.url, conn_id="fuzz", timeout=5)
    hook = ShortInterestHook(
        shortint_conn_id=conn, max_retries=0, sleep=_no_sleep, trace_configs=[fuzz_log.trace]
    )
    yield hook
    hook.close()


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"max_retries=0 must never sleep (asked for {seconds} s)")


@fuzz(400)
@given(
    status=st.sampled_from([200, 200, 400, 401, 404, 429, 500, 503]),
    body=st.one_of(
        st.binary(max_size=300), JSON.map(lambda v: json.dumps(v).encode()), envelopes(), HOSTILE_BODIES
    ),
    retry_after=st.one_of(st.none(), RETRY_AFTER),
    retry_after_ms=st.one_of(st.none(), st.sampled_from(["1500", "nan", "-1", "1e400", "x"])),
    content_type=st.sampled_from(["application/json", "text/html", "application/octet-stream"]),
)
def test_fuzz_hook_against_random_bodies(
    fuzz_hook: ShortInterestHook,
    sandbox: SandboxServer,
    status: int,
    body: bytes,
    retry_after: str | None,
    retry_after_ms: str | None,
    content_type: str,
) -> None:
    headers = {"Content-Type": content_type}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    if retry_after_ms is not None:
        headers["X-Retry-After-Ms"] = retry_after_ms
    sandbox.enqueue(status=status, body=body, headers=headers)
    try:
        page = fuzz_hook.get_page("HK.00700", count=5)
    except ShortInterestError as err:
        assert len(err.message) < 600, err.message[:200]
        assert err.error_code is None or len(err.error_code) <= 64
    else:
        assert isinstance(page, ShortInterestPage) and isinstance(page.items, list)
        assert page.next_key is None or isinstance(page.next_key, str)
    assert sandbox.state()["queued"] == 0


@fuzz(300)
@given(
    symbol=st.one_of(
        st.text(max_size=14), st.from_regex(r"(HK|US|hk|us|SH)\.[A-Za-z0-9.\-]{0,6}", fullmatch=True)
    ),
    count=st.one_of(st.integers(-5, 100), st.none(), st.text(max_size=3), st.floats()),
)
def test_fuzz_hook_arguments(
    fuzz_hook: ShortInterestHook, fuzz_log: RequestLog, sandbox: SandboxServer, symbol: str, count: Any
) -> None:
    """Either rejected with no request, or the one request carries the canonical symbol in its path."""
    before = sandbox.stats()["requests"]
    urls = fuzz_log.urls
    urls.clear()
    try:
        fuzz_hook.get_page(symbol, count=count)
    except (InvalidParameterError, UnsupportedSecurityError):
        assert sandbox.stats()["requests"] == before and urls == []
        return
    except ShortInterestError:
        pass  # -7 / -10 style answers of the sandbox for well-formed symbols
    canonical = normalize_symbol(symbol)
    assert len(urls) == 1 and f"/v1/quote/{canonical}/short-selling/short-interest?count={count}" in urls[0]


@pytest.mark.parametrize(
    ("header", "value", "longest"),
    [
        pytest.param("Retry-After", "1e9", 300 * 1.1 + 0.01, id="years"),
        pytest.param("Retry-After", "inf", 300 * 1.1 + 0.01, id="inf"),
        pytest.param("Retry-After", "nan", 0.011, id="nan-ignored"),
        pytest.param("Retry-After", "Wed, 21 Oct 2015 07:28:00 -0000", 0.011, id="date-minus-0000-past"),
        pytest.param("Retry-After", "Fri, 01 Jan 9999 00:00:00 GMT", 300 * 1.1 + 0.01, id="date-far-future"),
        pytest.param("X-Retry-After-Ms", "1e400", 300 * 1.1 + 0.01, id="ms-inf"),
    ],
)
def test_hostile_retry_after_is_bounded(
    sandbox: SandboxServer, use_conn: Callable[..., str], header: str, value: str, longest: float
) -> None:
    """A broken or hostile Retry-After never parks a task for longer than MAX_RETRY_AFTER (300 s)."""
    slept: list[float] = []
    conn = use_conn(sandbox.url, conn_id="retry_after", max_retries=1, backoff_base=0.01)
    hook = ShortInterestHook(shortint_conn_id=conn, sleep=slept.append)
    sandbox.enqueue(status=429, body="{}", headers={header: value})
    assert hook.get_latest("HK.00700") is not None
    assert len(slept) == 1 and 0 <= slept[0] <= longest, slept


def test_one_next_key_rule_for_both_hooks(
    hook_for: Callable[..., ShortInterestHook], opend_hook_for: Callable[..., Any]
) -> None:
    """None and "" ask for the newest page on REST and OpenD alike; "-1" (the end marker) raises on both."""
    for hook in (hook_for(), opend_hook_for()):
        newest = hook.get_page("HK.00700", count=2)
        for first in (None, ""):
            assert hook.get_page("HK.00700", count=2, next_key=first).items == newest.items
            _, hk_df = hook.get_short_interest("HK.00700", next_key=first, num=2)
            assert [str(day) for day in hk_df["timestamp_str"]] == [
                row["trade_date"].isoformat() for row in newest.items
            ]
        with pytest.raises(InvalidParameterError, match="marks the last page"):
            hook.get_page("HK.00700", next_key="-1")
        with pytest.raises(InvalidParameterError, match="marks the last page"):
            hook.get_short_interest("HK.00700", next_key="-1")
        assert hook.requests_made == 5  # the newest page, then two calls per first-page form
