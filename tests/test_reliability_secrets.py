"""The API token (the connection's password) never leaks: not in logs, XComs, rendered templates, the
metadata DB, trigger kwargs or reprs, exception texts, nor in any URL.

The sandbox is started with ``token=...``, so every successful request proves the token was really
sent (as ``Authorization: Bearer``), and its verbose request log shows what a server sees in URLs.
A second connection carries a *wrong* token that contains the right one as a prefix: if the wrong one
leaked anywhere, the search for the right one finds it too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import pickle
import secrets
import socket
import sqlite3
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shortint.exceptions import (
    InvalidSymbolError,
    RejectedSymbolsError,
    ShortInterestAuthError,
    ShortInterestError,
    ShortInterestServerError,
)
from airflow_provider_shortint.hooks.short_interest import ShortInterestHook
from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator
from airflow_provider_shortint.sandbox import SandboxServer
from tests._fixtures_hostile import RequestLog
from tests.conftest import AirflowHome, conn_uri

TOKEN = f"tok-{secrets.token_hex(12)}"
WRONG = f"{TOKEN}-wrong"  # contains TOKEN: a leak of the wrong token is found by the same search
NEEDLES = (TOKEN.encode(), TOKEN.encode("utf-16-le"), TOKEN[4:].encode())

DAG_SOURCE = """
import json
import pathlib

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_shortint.operators.short_interest import ShortInterestToParquetOperator
from airflow_provider_shortint.sensors.short_interest import ShortInterestNewRecordSensor

with DAG(
    "shortint_secrets",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1),
    catchup=False,
    params={{"symbols": ["HK.00700", "US.AAPL"], "lake": {lake!r}, "after": "2026-05-15"}},
):
    load = ShortInterestToParquetOperator(
        task_id="load", symbols="{{{{ params.symbols }}}}", lake_path="{{{{ params.lake }}}}", mode="full"
    )
    wait = ShortInterestNewRecordSensor(
        task_id="wait", symbol="HK.00005", after="{{{{ params.after }}}}",
        deferrable=True, poke_interval=0.3, timeout=90,
    )
    rejected = ShortInterestToParquetOperator(
        task_id="rejected", symbols="HK.99999,US.AAPL", lake_path="{{{{ params.lake }}}}"
    )
    refused = ShortInterestToParquetOperator(
        task_id="refused", symbols="HK.00700", lake_path="{{{{ params.lake }}}}",
        shortint_conn_id="shortint_wrong", trigger_rule="all_done",
    )
    unreachable = ShortInterestToParquetOperator(
        task_id="unreachable", symbols="HK.00700", lake_path="{{{{ params.lake }}}}",
        shortint_conn_id="shortint_dead", trigger_rule="all_done",
    )

    @task(trigger_rule="all_done")
    def dump(ti=None):
        tasks = ("load", "wait", "rejected", "refused", "unreachable")
        pulled = {{t: ti.xcom_pull(task_ids=t) for t in tasks}}
        pathlib.Path({out!r}).write_text(json.dumps(pulled, default=str))

    load >> wait >> rejected >> refused >> unreachable >> dump()
"""


def leaks(blob: bytes | str) -> bool:
    data = blob.encode() if isinstance(blob, str) else blob
    return any(needle in data for needle in NEEDLES)


def free_port() -> int:
    """A port nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def token_sandbox(sandbox: SandboxServer) -> Iterator[SandboxServer]:
    sandbox.configure(token=TOKEN, verbose=True)  # verbose: every request line goes to stderr
    yield sandbox
    sandbox.configure(verbose=False)


def test_token_nowhere_after_dags_under_airflow(
    token_sandbox: SandboxServer,
    airflow_home: AirflowHome,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sandbox = token_sandbox
    out, lake = tmp_path / "xcom.json", tmp_path / "lake"
    airflow_home.add_dag(DAG_SOURCE.format(out=str(out), lake=str(lake)), "shortint_secrets.py")
    env = {
        "AIRFLOW_CONN_SHORTINT_DEFAULT": conn_uri(sandbox.url, password=TOKEN),
        "AIRFLOW_CONN_SHORTINT_WRONG": conn_uri(sandbox.url, password=WRONG),
        "AIRFLOW_CONN_SHORTINT_DEAD": conn_uri(
            f"http://127.0.0.1:{free_port()}", password=TOKEN, max_retries=1
        ),
    }
    published: list[str] = []
    stop = threading.Event()

    def publish_when_the_trigger_polls() -> None:
        # 1 poke before deferring + 2 polls of the trigger: then the new record appears.
        while not stop.is_set():
            if sandbox.stats()["by_symbol"].get("HK.00005", 0) >= 3:
                published.append(sandbox.publish("HK").isoformat())
                return
            stop.wait(0.02)

    watcher = threading.Thread(target=publish_when_the_trigger_polls, name="publisher", daemon=True)
    watcher.start()
    try:
        result = airflow_home.dags_test("shortint_secrets", env=env)
    finally:
        stop.set()
        watcher.join()
    text = result.stdout + result.stderr
    output = text.encode()

    # The DAG really ran, with the token required by the server.
    with sqlite3.connect(airflow_home.root / "airflow.db") as db:
        states = dict(
            db.execute(
                "SELECT task_id, state FROM task_instance WHERE dag_id = 'shortint_secrets'"
            ).fetchall()
        )
        rendered = db.execute(
            "SELECT task_id, rendered_fields FROM rendered_task_instance_fields "
            "WHERE dag_id = 'shortint_secrets'"
        ).fetchall()
        xcoms = db.execute("SELECT task_id, value FROM xcom WHERE dag_id = 'shortint_secrets'").fetchall()
    assert states == {
        "load": "success",
        "wait": "success",
        "rejected": "failed",
        "refused": "failed",
        "unreachable": "failed",
        "dump": "success",
    }, text[-4000:]
    pulled = json.loads(out.read_text())
    assert pulled["load"]["rows_written"] > 0 and pulled["load"]["failed"] == {}
    assert pulled["wait"] == {"symbol": "HK.00005", "trade_date": published[0]}
    assert "running trigger in line" in text
    assert "HK.99999: invalid_symbol" in text  # the -7 failure was reported ...
    assert "HTTP 401" in text  # ... and the refused token ...
    assert "gave up after 2 attempt(s)" in text  # ... and the exhausted retries
    stats = sandbox.stats()
    assert stats["by_status"].get("401", 0) >= 1 and stats["by_status"]["200"] >= 4
    assert any("HK.00700" in str(fields) for _, fields in rendered)  # rendered templates were stored
    assert {task for task, _ in xcoms} >= {"load", "wait"}

    # The token is nowhere: output, XComs, rendered fields, and every file of the Airflow home
    # (task logs, the SQLite DB with its journal, dag files), the lake and the dumped XComs.
    assert not leaks(output)
    assert not leaks(json.dumps(pulled)) and not leaks(repr(xcoms)) and not leaks(repr(rendered))
    # dag.test() runs the tasks in this process: their logs are in its output (checked above: the
    # failures are there); any file under {AIRFLOW_HOME}/logs is scanned too.
    scanned = [p for p in [*airflow_home.root.rglob("*"), *tmp_path.rglob("*")] if p.is_file()]
    assert any(p.name == "airflow.db" for p in scanned) and any(p.suffix == ".parquet" for p in scanned)
    leaked = [str(p) for p in scanned if leaks(p.read_bytes())]
    assert leaked == []

    # What the server saw in URLs: request lines of the verbose sandbox log (printed to stderr, which
    # dag.test() captured while the DAG ran).
    server_log = text + capsys.readouterr().err
    requests_seen = [line for line in server_log.splitlines() if "/short-selling/" in line]
    assert len(requests_seen) >= stats["requests"] and not leaks("\n".join(requests_seen))


def exception_texts(err: BaseException) -> str:
    texts = [str(err), repr(err), getattr(err, "message", ""), "".join(traceback.format_exception(err))]
    return "\n".join([*texts, repr(pickle.loads(pickle.dumps(err))), repr(vars(err))])


def test_token_not_in_exceptions_reprs_trigger_urls_or_logs(
    token_sandbox: SandboxServer,
    use_conn: Callable[..., str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sandbox = token_sandbox
    caplog.set_level(logging.DEBUG)  # every logger at its most verbose, aiohttp's and asyncio's too
    good = use_conn(sandbox.url, conn_id="sec_good", password=TOKEN, max_retries=1, timeout=0.3)
    wrong = use_conn(sandbox.url, conn_id="sec_wrong", password=WRONG)
    dead = use_conn(f"http://127.0.0.1:{free_port()}", conn_id="sec_dead", password=TOKEN, max_retries=1)
    log = RequestLog()
    hook = ShortInterestHook(shortint_conn_id=good, trace_configs=[log.trace])
    urls = log.urls
    assert hook.get_page("HK.00700", count=3).items  # the token works ...
    texts: list[str] = [repr(hook.settings), str(hook.settings), repr(hook)]
    texts += [
        repr(dataclasses.asdict(hook.settings)),
        json.dumps(dataclasses.asdict(hook.settings), default=str),
    ]
    texts += [repr(vars(hook)), repr(hook.get_conn()), repr(hook.transport.__dict__)]

    failures: list[tuple[type[ShortInterestError], Callable[[], object]]] = [
        (ShortInterestAuthError, lambda: ShortInterestHook(shortint_conn_id=wrong).get_latest("HK.00700")),
        (InvalidSymbolError, lambda: hook.get_latest("HK.99999")),
        (ShortInterestServerError, lambda: hook.get_latest("HK.00700")),  # 5xx x 2 queued below
        (ShortInterestServerError, lambda: hook.get_latest("HK.00700")),  # -5 x 2
        (ShortInterestServerError, lambda: hook.get_latest("HK.00700")),  # 429 x 2
        (ShortInterestServerError, lambda: ShortInterestHook(shortint_conn_id=dead).get_latest("HK.00700")),
    ]
    queued = [
        [(503, "<html>busy</html>")] * 2,
        [(200, json.dumps({"ret_code": -5, "ret_msg": "internal"}))] * 2,
        [(429, "{}")] * 2,
    ]
    for index, (error, call) in enumerate(failures):
        if 2 <= index <= 4:
            for status, body in queued[index - 2]:
                sandbox.enqueue(status=status, body=body, headers={"Retry-After": "0"})
        with pytest.raises(error) as caught:
            call()
        texts.append(exception_texts(caught.value))
    # Timeouts: the answer is held back longer than the connection's timeout.
    sandbox.configure(delay_rate=1.0, delay_seconds=0.6)
    timeout_pattern = r"no answer from http://127\.0\.0\.1:\d+ within"
    with pytest.raises(ShortInterestServerError, match=timeout_pattern) as timed_out:
        hook.get_latest("HK.00700")
    sandbox.configure(delay_rate=0.0)
    texts.append(exception_texts(timed_out.value))

    # The operator's own failure (a -7 among good symbols) and its summary.
    op = ShortInterestToParquetOperator(
        task_id="op", symbols="HK.99999,US.AAPL", lake_path=str(tmp_path / "lake"), shortint_conn_id=good
    )
    with pytest.raises(RejectedSymbolsError) as rejected:
        op.execute({})  # type: ignore[arg-type]
    assert set(rejected.value.failures) == {"HK.99999"}
    texts.append(exception_texts(rejected.value))

    # The sensor's failures (refused token) and the trigger: repr, serialize(), events.
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_provider_shortint.sensors.short_interest import ShortInterestNewRecordSensor
    from airflow_provider_shortint.triggers.short_interest import ShortInterestNewRecordTrigger

    sensor = ShortInterestNewRecordSensor(task_id="s", symbol="HK.00700", shortint_conn_id=wrong)
    with pytest.raises(AirflowFailException) as refused:
        sensor.poke({})  # type: ignore[arg-type]
    texts.append(exception_texts(refused.value))
    for conn in (good, wrong, dead):
        trigger = ShortInterestNewRecordTrigger(
            symbol="HK.00700", after="2026-05-14", shortint_conn_id=conn, poke_interval=0.1, max_failures=1
        )
        event = asyncio.run(_first_event(trigger))
        texts += [
            repr(trigger),
            str(trigger),
            json.dumps(trigger.serialize()),
            repr(event),
            repr(vars(trigger)),
        ]
        assert event.payload["status"] == ("success" if conn == good else "error")

    # Nothing shows the token, and no URL carries it (client side and server side).
    captured = capsys.readouterr()
    server_log, hook_log = captured.err, captured.out + caplog.text  # the hooks log through structlog
    assert urls and all(url.startswith(sandbox.url + "/v1/quote/") for url in urls)
    assert "/short-selling/short-interest?count=" in server_log and "GET" in server_log
    assert "retrying in" in hook_log  # the hook's own log lines were captured
    assert log.headers and all(h["Authorization"] == f"Bearer {TOKEN}" for h in log.headers)
    for name, blob in {"texts": "\n".join(texts), "urls": "\n".join(urls), "server log": server_log}.items():
        assert not leaks(blob), name
    assert not leaks(hook_log)
    assert not leaks(repr(sandbox.state())) and not leaks(repr(sandbox.config))


async def _first_event(trigger: Any) -> Any:
    gen = trigger.run()
    try:
        return await asyncio.wait_for(anext(gen), 20)
    finally:
        await gen.aclose()
