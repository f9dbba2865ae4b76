"""The OpenD door under hostile conditions: a name that does not resolve, a gateway that never answers, one
that declares a 2 GiB frame, one that sends more items than asked or words an error like "no data".

Every failure ends within the connection's timeout and leaves no thread, socket or budget slot of ours
(tests/_fixtures_opend_hostile.py: the hostile gateway speaks futu-api's own framing).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_shortint.exceptions import (
    InvalidSymbolError,
    ShortInterestAuthError,
    ShortInterestConnectionError,
    ShortInterestResponseError,
    ShortInterestServerError,
)
from airflow_provider_shortint.hooks.futu_opend import FutuOpenDHook
from airflow_provider_shortint.transports.opend.link import MAX_FRAME_BYTES
from tests._fixtures_opend_hook import opend_conn, run_child
from tests._fixtures_opend_hostile import CountingLimiter, HostileGateway, Leftovers

#: A name that cannot resolve anywhere (RFC 6761 reserves .invalid), so no network access is needed.
UNRESOLVABLE = "opend.shortint.invalid"
HookFactory = Callable[..., FutuOpenDHook]


@pytest.fixture
def make_hook(hostile_opend: HostileGateway, monkeypatch: pytest.MonkeyPatch) -> Iterator[HookFactory]:
    """FutuOpenDHooks on the hostile gateway (or ``host``), each with its own counting budget."""
    hooks: list[FutuOpenDHook] = []
    hostile_opend.behave()

    def build(
        host: str = "127.0.0.1", port: int | None = None, *, counted: bool = True, **extra: Any
    ) -> FutuOpenDHook:
        conn_id = f"hostile_{len(hooks)}"
        conn = opend_conn(port or hostile_opend.port, host=host, **{"timeout": 2, **extra})
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn)
        limiter = CountingLimiter() if counted else None  # else: the connection's own budget
        hook = FutuOpenDHook(futu_opend_conn_id=conn_id, rate_limiter=limiter)
        hooks.append(hook)
        return hook

    yield build
    for hook in hooks:
        hook.close()


def nothing_left(before: Leftovers, *hooks: FutuOpenDHook) -> None:
    """No budget slot in flight, and once the hooks are closed no thread or socket of ours."""
    for hook in hooks:
        assert hook.rate_limiter.in_flight == 0  # type: ignore[attr-defined]
        hook.close()
    threads, sockets = before.settled()
    assert not threads, threads
    assert sockets <= 0, f"{sockets} socket(s) left open"


# -- a name that does not resolve -----------------------------------------------------------------------


def test_unresolvable_host_fails_at_once_naming_it(make_hook: HookFactory, leftovers: Any) -> None:
    before = leftovers()
    hook = make_hook(host=UNRESOLVABLE, max_retries=5)
    started = time.monotonic()
    with pytest.raises(ShortInterestConnectionError) as info:
        hook.get_page("HK.00700")
    print(
        f"\nunresolvable host: failed after {time.monotonic() - started:.3f} s, {hook.requests_made} request"
    )
    error = info.value
    assert error.error_code == "name_not_resolved"
    assert f"'{UNRESOLVABLE}' does not resolve" in error.message
    assert "check the host of connection 'hostile_0'" in error.message
    assert "\n" not in error.message and hook.requests_made == 1  # one sentence, never retried
    nothing_left(before, hook)


def test_connection_on_unresolvable_host_answers_naming_neither_temporary_id(
    make_hook: HookFactory, leftovers: Any
) -> None:
    before = leftovers()
    hook = make_hook(host=UNRESOLVABLE)
    ok, message = hook.test_connection()
    assert not ok and "name_not_resolved" not in message  # the message, not the code
    assert UNRESOLVABLE in message and "this connection" in message and "hostile_0" not in message
    bad_port = make_hook(port=70000)
    ok, message = bad_port.test_connection()
    assert not ok and "this connection port must be 1 to 65535" in message and "hostile_1" not in message
    nothing_left(before, hook, bad_port)


def test_connection_with_a_hanging_resolver_answers_within_the_timeout(
    make_hook: HookFactory, leftovers: Any
) -> None:
    before = leftovers()
    hook = make_hook(host="opend.example", timeout=0.3)
    release = threading.Event()
    asked: list[str] = []

    def hanging(host: str, *args: Any) -> Any:
        asked.append(host)
        release.wait(60)  # a resolver that does not answer (until the test lets it go)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    hook.transport.getaddrinfo = hanging
    outcome: list[tuple[bool, str]] = []
    started = time.monotonic()
    probe = threading.Thread(target=lambda: outcome.append(hook.test_connection()))
    probe.start()
    probe.join(30)  # hang guard only
    waited = time.monotonic() - started
    still_hanging = not release.is_set()
    release.set()
    assert outcome and still_hanging and asked == ["opend.example"]  # answered while the resolver hung
    ok, message = outcome[0]
    assert not ok and "did not resolve within 0.3 s" in message, message
    assert waited >= 0.3  # it did wait the connection's timeout for the resolver
    print(f"\ntest_connection, resolver hanging, timeout 0.3 s: answered after {waited:.3f} s")
    nothing_left(before, hook)


def test_load_task_and_deferrable_sensor_fail_at_once_on_an_unresolvable_host(
    make_hook: HookFactory, tmp_path: Path, leftovers: Any
) -> None:
    from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator
    from airflow_provider_shortint.sensors.short_interest import ShortInterestNewRecordSensor

    before = leftovers()
    make_hook(host=UNRESOLVABLE)  # registers connection hostile_0
    operator = ShortInterestToParquetOperator(
        task_id="load",
        symbols=["HK.00700", "US.AAPL"],
        lake_path=str(tmp_path / "lake"),
        shortint_conn_id="hostile_0",
    )
    with pytest.raises(ShortInterestConnectionError, match="does not resolve"):
        operator.execute(context={})  # type: ignore[arg-type]
    sensor = ShortInterestNewRecordSensor(
        task_id="wait", symbol="HK.00700", after="2026-05-01", shortint_conn_id="hostile_0", deferrable=True
    )
    with pytest.raises(AirflowFailException, match="does not resolve"):
        sensor.poke(context={})  # type: ignore[arg-type]  # fails before deferring
    nothing_left(before)


# -- a gateway that does not answer --------------------------------------------------------------------


def test_init_connect_never_answered_waits_the_connections_timeout(
    make_hook: HookFactory, hostile_opend: HostileGateway, leftovers: Any
) -> None:
    before = leftovers()
    hostile_opend.behave(init="silent")
    hook = make_hook(timeout=0.5, max_retries=1, backoff_base=0)
    started = time.monotonic()
    with pytest.raises(ShortInterestServerError) as info:
        hook.get_page("HK.00700")
    print(f"\nsilent InitConnect, timeout 0.5 s, 2 attempts: failed after {time.monotonic() - started:.2f} s")
    # The provider's own bound ended each attempt (futu-api's fixed 20 s would say "Abnormal event timeout").
    assert "no answer to InitConnect within 0.5 s" in str(info.value)
    assert hostile_opend.seen.init_connects == 2 and hook.requests_made == 2
    nothing_left(before, hook)


def test_unanswered_request_ends_at_the_timeout_and_frees_its_redis_slot(
    make_hook: HookFactory, hostile_opend: HostileGateway, redis_conn: str, redis_server: Any, leftovers: Any
) -> None:
    before = leftovers()
    hostile_opend.behave(answer="silent")
    hook = make_hook(
        timeout=0.5, max_retries=0, rate_limit_redis_conn_id=redis_conn, rate_limit_period=0.2, counted=False
    )
    client = redis_server.client()
    key = hook.rate_limiter.key  # type: ignore[attr-defined]

    def in_flight() -> int:
        return sum(field.startswith(b"f:") for field in client.hkeys(key))

    failed: list[BaseException] = []

    def call() -> None:
        try:
            hook.get_page("HK.00700")
        except ShortInterestServerError as err:
            failed.append(err)

    caller = threading.Thread(target=call)
    caller.start()
    assert hostile_opend.request_seen.wait(30)
    assert in_flight() == 1  # the hung call holds its slot while it waits...
    caller.join(30)
    assert failed and "no answer to protocol 3249 within 0.5 s" in str(failed[0])
    assert in_flight() == 0  # ...and no longer once its timeout ended it
    client.close()
    hook.close()
    # The budget's own lease thread and Redis connection stay (with the budget); nothing of OpenD's does.
    threads, sockets = before.settled(ignore=lambda t: t.name.startswith("shortint-lease"), sockets=1)
    assert not threads and sockets <= 1, (threads, sockets)


# -- a gateway that sends too much ---------------------------------------------------------------------------

RSS_CHILD = """
import json, re, sys
from airflow_provider_shortint.exceptions import ShortInterestResponseError
from airflow_provider_shortint.hooks.futu_opend import FutuOpenDHook
from airflow_provider_shortint.transports.opend.sdk import load_futu

def status(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

def peak_growth(call):
    open("/proc/self/clear_refs", "w").write("5")  # the peak RSS starts again from the current RSS
    base = status("VmRSS")
    outcome = call()
    return status("VmHWM") - base, outcome

def through_hook():
    hook = FutuOpenDHook("hostile")
    try:
        hook.get_page("HK.00005", count=50)
    except ShortInterestResponseError as err:
        return err.message, hook.requests_made
    finally:
        hook.close()

def bare_sdk():  # the same gateway read by futu-api alone (the control: it buffers what is streamed)
    ctx = load_futu().OpenQuoteContext(host="127.0.0.1", port=int(sys.argv[1]))
    try:
        return ctx.get_short_interest("HK.00005", num=50)[1]
    finally:
        ctx.close()

warm = FutuOpenDHook("hostile")
for _ in range(3):
    assert warm.get_page("HK.00700", count=3).items  # imports, frames, the relay: all warm
warm.close()
hook_growth, (message, requests) = peak_growth(through_hook)
bare_growth, bare_message = peak_growth(bare_sdk)
print(json.dumps({"hook": hook_growth, "bare": bare_growth, "message": message, "requests": requests,
                  "bare_message": str(bare_message)}))
"""


def test_declared_2gib_frame_is_cut_and_peak_rss_stays_below_cap_plus_64mb(
    hostile_opend: HostileGateway, tmp_path: Path
) -> None:
    streamed = 96 * 1024 * 1024  # what the gateway sends of its 2 GiB before it closes the connection
    hostile_opend.behave(answer="huge", only="00005", stream_limit=streamed)
    env = {
        "AIRFLOW_CONN_HOSTILE": opend_conn(hostile_opend.port, max_retries=3, timeout=5),
        "AIRFLOW_HOME": str(tmp_path),
        "HOME": str(tmp_path),
    }
    result = run_child(RSS_CHILD.replace("sys.argv[1]", str(hostile_opend.port)), env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    bound = MAX_FRAME_BYTES + 64 * 1024 * 1024
    hook, bare = report["hook"] / 2**20, report["bare"] / 2**20
    print(
        f"\npeak RSS growth, declared 2 GiB frame ({streamed >> 20} MiB streamed): hook {hook:.2f} MiB "
        f"(bound {bound >> 20} MiB), bare futu-api {bare:.0f} MiB"
    )
    assert report["bare"] >= streamed * 0.9, report  # the measurement sees what the SDK alone buffers
    assert report["hook"] < bound, report
    assert (
        "a frame of 2,147,483,648 bytes" in report["message"]
        and "at most 1,048,576 bytes" in report["message"]
    )
    assert report["requests"] == 1  # a response error: not retried


def test_more_items_than_asked_for_is_a_response_error(
    make_hook: HookFactory, hostile_opend: HostileGateway, leftovers: Any
) -> None:
    before = leftovers()
    hostile_opend.behave(items=51)
    hook = make_hook(max_retries=3)
    with pytest.raises(ShortInterestResponseError, match="51 items for a page of 50"):
        hook.get_page("HK.00700", count=50)
    with pytest.raises(ShortInterestResponseError, match="51 items for a page of 50"):
        hook.get_short_interest("HK.00700")  # num unset: OpenD pages at most 50
    hostile_opend.behave(items=100_000)  # ~4 MB: over the frame cap before any item is parsed
    with pytest.raises(ShortInterestResponseError, match=r"at most 1,048,576 bytes per frame"):
        hook.get_page("HK.00700", count=50)
    assert hook.requests_made == 3  # none retried
    hostile_opend.behave(items=50)
    assert len(hook.get_page("HK.00700", count=50).items) == 50  # the limit itself passes
    nothing_left(before, hook)


# -- errors that mention "no data" -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("No data permission", ShortInterestAuthError),
        ("no quote right for US market", ShortInterestAuthError),
        ("unknown security US.XYZ: no data", InvalidSymbolError),
        ("no data for you (quota exceeded)", ShortInterestResponseError),
    ],
)
def test_an_error_that_mentions_no_data_is_an_error(
    make_hook: HookFactory, hostile_opend: HostileGateway, message: str, error: type
) -> None:
    hostile_opend.behave(answer="error", message=message)
    hook = make_hook(max_retries=3)
    with pytest.raises(error) as info:
        hook.get_page("HK.00700")
    assert message in str(info.value) and hook.requests_made == 1


def test_only_no_data_itself_is_an_empty_page(make_hook: HookFactory, hostile_opend: HostileGateway) -> None:
    hook = make_hook()
    for message in ("no data", "No data.", "暂无数据"):
        hostile_opend.behave(answer="error", message=message)
        page = hook.get_page("HK.00700")
        assert page.items == [] and page.next_key is None


def test_sensor_fails_on_no_data_permission_instead_of_waiting(
    make_hook: HookFactory, hostile_opend: HostileGateway
) -> None:
    from airflow_provider_shortint.sensors.short_interest import ShortInterestNewRecordSensor

    make_hook()
    hostile_opend.behave(answer="error", message="No data permission")
    sensor = ShortInterestNewRecordSensor(
        task_id="wait", symbol="HK.00700", after="2026-05-01", shortint_conn_id="hostile_0", deferrable=True
    )
    with pytest.raises(AirflowFailException, match="No data permission"):
        sensor.poke(context={})  # type: ignore[arg-type]


# -- after every failure, nothing of ours is left --------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "error", "pattern"),
    [
        ({"init": "refuse", "message": "client version too old"}, ShortInterestConnectionError, "too old"),
        ({"answer": "close"}, ShortInterestServerError, "closed by the gateway"),
        ({"answer": "huge", "stream_limit": 1 << 20}, ShortInterestResponseError, "2,147,483,648 bytes"),
        ({"answer": "error", "message": "No data permission"}, ShortInterestAuthError, "permission"),
    ],
)
def test_nothing_left_after_a_failure(
    make_hook: HookFactory,
    hostile_opend: HostileGateway,
    leftovers: Any,
    behaviour: dict[str, Any],
    error: type,
    pattern: str,
) -> None:
    before = leftovers()
    hostile_opend.behave(**behaviour)
    hook = make_hook(max_retries=1, backoff_base=0)
    with pytest.raises(error, match=pattern):
        hook.get_page("HK.00700")
    nothing_left(before, hook)


def test_nothing_left_after_a_refused_port(make_hook: HookFactory, leftovers: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    before = leftovers()
    hook = make_hook(port=port, max_retries=1, backoff_base=0)
    with pytest.raises(
        ShortInterestServerError,
        match=re.escape(f"could not connect to OpenD at 127.0.0.1:{port}: nothing listens there"),
    ):
        hook.get_page("HK.00700")
    assert hook.requests_made == 2
    nothing_left(before, hook)


def test_a_cut_link_is_replaced_by_a_fresh_one(make_hook: HookFactory, hostile_opend: HostileGateway) -> None:
    hook = make_hook(max_retries=0)
    assert hook.get_page("HK.00700", count=3).items
    hostile_opend.behave(answer="huge", stream_limit=1 << 20)
    with pytest.raises(ShortInterestResponseError):
        hook.get_page("HK.00700")
    hostile_opend.behave()
    assert len(hook.get_page("HK.00700", count=3).items) == 3
    assert hostile_opend.seen.init_connects == 1  # the next call connected anew
