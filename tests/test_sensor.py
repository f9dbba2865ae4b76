"""ShortInterestNewRecordSensor: pokes against a real sandbox, deferral, and runs under real Airflow."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import PokeReturnValue
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_provider_shortint.exceptions import InvalidParameterError, UnsupportedSecurityError
from airflow_provider_shortint.sandbox import SandboxServer
from airflow_provider_shortint.sensors.short_interest import ShortInterestNewRecordSensor
from airflow_provider_shortint.triggers.short_interest import ShortInterestNewRecordTrigger
from tests._fixtures_opend_hook import opend_conn
from tests._fixtures_slow import our_threads
from tests.conftest import AirflowHome, conn_uri

TOKEN = "s3cr3t-token"
CTX: Any = {}  # the sensor reads nothing from the context
_ids = iter(range(1_000_000))


def sensor(**kwargs: Any) -> ShortInterestNewRecordSensor:
    kwargs.setdefault("task_id", f"wait_{next(_ids)}")
    kwargs.setdefault("symbol", "HK.00700")
    return ShortInterestNewRecordSensor(**kwargs)


def poke(s: ShortInterestNewRecordSensor) -> PokeReturnValue:
    result = s.poke(CTX)
    assert isinstance(result, PokeReturnValue)
    return result


@pytest.fixture
def api(sandbox: SandboxServer, use_conn: Callable[..., str]) -> SandboxServer:
    use_conn(sandbox.url)
    return sandbox


def write_lake(path: Path, symbol: str, *days: dt.date) -> None:
    from airflow_provider_shortint.lake import open_lake
    from airflow_provider_shortint.records import rows_to_table

    rows = [{"symbol": symbol, "trade_date": day, "close_price": 1.0} for day in days]
    open_lake(str(path)).upsert(rows_to_table(rows))


# -- static checks -------------------------------------------------------------------------------------------


def test_signature_and_template_fields() -> None:
    s = sensor(symbol="HK.00700")
    assert s.template_fields == ("symbol", "after", "lake_path", "shortint_conn_id")
    assert s.shortint_conn_id == "shortint_default"
    assert s.after is None and s.lake_path is None
    assert s.deferrable is False
    assert s.mode == "poke"


def test_static_bad_input_fails_at_dag_parse() -> None:
    with pytest.raises(InvalidParameterError, match="malformed symbol"):
        sensor(symbol="HK.ABC")
    with pytest.raises(UnsupportedSecurityError):
        sensor(symbol="SZ.000001")
    with pytest.raises(InvalidParameterError, match="ISO date"):
        sensor(after="15/05/2026")
    # Templates are checked at run time, once rendered.
    sensor(symbol="{{ params.symbol }}", after="{{ ds }}")


# -- pokes ---------------------------------------------------------------------------------------------------


def test_poke_not_done_when_nothing_newer(api: SandboxServer) -> None:
    result = poke(sensor(after="2026-05-15"))
    assert result.is_done is False
    assert result.xcom_value is None
    assert api.stats()["requests"] == 1


def test_poke_done_pushes_canonical_symbol_and_date(api: SandboxServer) -> None:
    result = poke(sensor(symbol=" hk.700 ", after="2026-05-08"))
    assert result.is_done is True
    assert result.xcom_value == {"symbol": "HK.00700", "trade_date": "2026-05-15"}
    assert api.stats()["requests"] == 1


def test_poke_without_reference_accepts_any_record(api: SandboxServer) -> None:
    assert poke(sensor(symbol="US.AAPL")).xcom_value == {"symbol": "US.AAPL", "trade_date": "2026-05-15"}


def test_lake_reference(api: SandboxServer, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_lake(lake, "HK.00700", dt.date(2026, 5, 8), dt.date(2026, 5, 15))
    write_lake(lake, "HK.00005", dt.date(2026, 5, 22))  # another symbol's date does not count
    s = sensor(lake_path=str(lake))
    assert poke(s).is_done is False
    assert api.publish("HK") == dt.date(2026, 5, 22)
    result = poke(s)
    assert result.is_done is True
    assert result.xcom_value == {"symbol": "HK.00700", "trade_date": "2026-05-22"}
    # An explicit `after` wins over the lake.
    assert poke(sensor(lake_path=str(lake), after="2026-05-22")).is_done is False


@pytest.mark.parametrize("layout", ["missing", "empty", "other_symbol"])
def test_lake_without_the_symbol_accepts_any_record(api: SandboxServer, tmp_path: Path, layout: str) -> None:
    lake = tmp_path / "lake"
    if layout == "empty":
        lake.mkdir()
    elif layout == "other_symbol":
        write_lake(lake, "HK.00005", dt.date(2026, 5, 15))
    result = poke(sensor(lake_path=str(lake)))
    assert result.xcom_value == {"symbol": "HK.00700", "trade_date": "2026-05-15"}


@pytest.mark.parametrize(("symbol", "code"), [("HK.99999", "-7"), ("US.NOSUCH", "-7"), ("HK.99998", "-8")])
def test_api_rejections_fail_at_once(api: SandboxServer, symbol: str, code: str) -> None:
    with pytest.raises(AirflowFailException, match=code):
        poke(sensor(symbol=symbol))
    assert api.stats()["requests"] == 1  # no retry


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("symbol", "HK.ABC", "malformed symbol"),
        ("symbol", "", "malformed symbol"),
        ("symbol", "SH.600000", "unsupported market"),
        ("after", "2026-13-01", "ISO date"),
        ("after", "yesterday", "ISO date"),
    ],
)
def test_bad_rendered_input_fails_without_request(
    api: SandboxServer, tmp_path: Path, field: str, value: str, match: str
) -> None:
    s = sensor(symbol="{{ params.symbol }}", after="{{ params.after }}", lake_path=str(tmp_path / "lake"))
    s.symbol, s.after = "HK.00700", None
    setattr(s, field, value)  # as if the template rendered to it
    with pytest.raises(AirflowFailException, match=match):
        poke(s)
    assert api.stats()["requests"] == 0


def test_bad_lake_path_fails_without_request(api: SandboxServer) -> None:
    with pytest.raises(AirflowFailException, match="lake"):
        poke(sensor(lake_path="relative/lake"))
    assert api.stats()["requests"] == 0


def test_no_data_is_not_done(api: SandboxServer) -> None:
    assert poke(sensor(symbol="HK.99997")).is_done is False


def test_flaky_api_is_not_done_and_token_stays_secret(
    sandbox: SandboxServer,
    use_conn: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    sandbox.configure(http5xx_rate=1.0, token=TOKEN)
    use_conn(sandbox.url, password=TOKEN)
    caplog.set_level(logging.DEBUG)
    s = sensor(after="2026-05-08")
    result = poke(s)
    assert result.is_done is False
    assert sandbox.stats()["requests"] == 2  # one retry inside the poke, then the next poke retries
    sandbox.configure(internal_error_rate=1.0, http5xx_rate=0.0)
    assert poke(s).is_done is False
    sandbox.configure(internal_error_rate=0.0)
    assert poke(s).xcom_value == {"symbol": "HK.00700", "trade_date": "2026-05-15"}
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert "poke failed" in logged
    assert TOKEN not in logged


def test_poke_mode_execute_waits_for_publish(api: SandboxServer) -> None:
    s = sensor(after="2026-05-15", poke_interval=0.2, timeout=20)
    timer = threading.Timer(0.5, api.publish, args=("HK",))
    timer.start()
    try:
        assert s.execute(CTX) == {"symbol": "HK.00700", "trade_date": "2026-05-22"}
    finally:
        timer.cancel()
    assert api.stats()["requests"] >= 3


def test_poke_mode_timeout(api: SandboxServer) -> None:
    with pytest.raises(AirflowSensorTimeout):
        sensor(after="2026-05-15", poke_interval=0.1, timeout=0.3).execute(CTX)


def test_soft_fail_skips_on_rejection(api: SandboxServer) -> None:
    with pytest.raises(AirflowSkipException):
        sensor(symbol="HK.99999", soft_fail=True, deferrable=True).execute(CTX)


def test_pokes_keep_no_state(api: SandboxServer) -> None:
    s = sensor(after="2026-05-15")
    assert s.log is not None  # Airflow caches its logger on first use
    before = dict(vars(s))
    assert poke(s).is_done is False
    api.publish("HK")
    assert poke(s).xcom_value == {"symbol": "HK.00700", "trade_date": "2026-05-22"}
    assert vars(s) == before  # nothing carried from one poke to the next, or to execute
    assert s.target() == ("HK.00700", dt.date(2026, 5, 15))


def test_poke_over_opend_sees_a_published_date(
    opend_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``futu_opend`` connection through ``shortint_conn_id``: the hook its type registers."""
    monkeypatch.setenv("AIRFLOW_CONN_SHORTINT_DEFAULT", opend_conn(opend_sandbox.opend_port))
    before = our_threads()
    s = sensor(after="2026-05-15")
    assert poke(s).is_done is False
    assert opend_sandbox.publish("HK") == dt.date(2026, 5, 22)
    assert poke(s).xcom_value == {"symbol": "HK.00700", "trade_date": "2026-05-22"}
    stats = opend_sandbox.stats()
    assert stats["by_transport"] == {"rest": 0, "opend": 2}
    assert not our_threads() - before  # each poke closed its OpenQuoteContext
    with pytest.raises(AirflowFailException, match=r"HK\.99999"):
        poke(sensor(symbol="HK.99999"))


def outcome(s: ShortInterestNewRecordSensor) -> type[BaseException] | None:
    try:
        s.execute(CTX)
    except BaseException as err:  # the class is what the task runner acts on
        return type(err)
    return None


@pytest.mark.parametrize("flag", [None, "soft_fail", "never_fail", "silent_fail"])
@pytest.mark.parametrize(
    "case", [{"symbol": "HK.99999"}, {"symbol": "{{ x }}"}, {"shortint_conn_id": "shortint_missing"}]
)
def test_deferrable_first_poke_fails_as_airflow_pokes_do(
    api: SandboxServer, flag: str | None, case: dict[str, str]
) -> None:
    """Rejected symbol, bad rendered input, missing connection: the deferrable sensor's first poke ends
    the way Airflow's own poke loop ends the same failure (fail, skip, or with silent_fail poke again
    until the timeout), for each of the sensor flags: the first poke runs in that loop."""
    kwargs = {**case, **({flag: True} if flag else {}), "poke_interval": 0.1, "timeout": 0.3}
    in_airflow_loop = outcome(sensor(**kwargs, deferrable=False))
    first_poke = outcome(sensor(**kwargs, deferrable=True))
    assert first_poke is in_airflow_loop
    assert in_airflow_loop is not None and in_airflow_loop is not TaskDeferred
    # soft_fail covers failures (rejection, bad input), not errors such as a missing connection.
    skips = flag == "never_fail" or (flag == "soft_fail" and "shortint_conn_id" not in case)
    assert (first_poke is AirflowSkipException) is skips


# -- deferrable ----------------------------------------------------------------------------------------------


def test_deferrable_returns_at_once_when_new(api: SandboxServer) -> None:
    s = sensor(after="2026-05-08", deferrable=True)
    assert s.execute(CTX) == {"symbol": "HK.00700", "trade_date": "2026-05-15"}


def test_deferrable_defers_with_plain_trigger_kwargs(
    sandbox: SandboxServer, use_conn: Callable[..., str], tmp_path: Path
) -> None:
    sandbox.configure(token=TOKEN)
    use_conn(sandbox.url, conn_id="shortint_other", password=TOKEN)
    lake = tmp_path / "lake"
    write_lake(lake, "HK.00700", dt.date(2026, 5, 15))
    s = sensor(
        symbol="hk.700",
        lake_path=str(lake),
        shortint_conn_id="shortint_other",
        deferrable=True,
        poke_interval=7,
        timeout=3600,
        max_failures=3,
    )
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        s.execute(CTX)
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout == dt.timedelta(seconds=3600)
    trigger = deferred.trigger
    assert isinstance(trigger, ShortInterestNewRecordTrigger)
    _, kwargs = trigger.serialize()
    deadline = kwargs.pop("deadline")
    assert before + 3600 <= deadline <= time.time() + 3600
    assert kwargs == {
        "symbol": "HK.00700",
        "after": "2026-05-15",  # resolved from the lake before deferring
        "shortint_conn_id": "shortint_other",
        "poke_interval": 7.0,
        "max_failures": 3,
        "max_backoff": 600.0,
    }
    assert TOKEN not in repr(trigger) + json.dumps(kwargs)
    assert sandbox.stats()["requests"] == 1  # poked once before deferring


def test_execute_complete() -> None:
    s = sensor()
    ok = {"status": "success", "symbol": "HK.00700", "trade_date": "2026-05-22"}
    assert s.execute_complete(CTX, ok) == {"symbol": "HK.00700", "trade_date": "2026-05-22"}
    with pytest.raises(AirflowException, match="5 consecutive") as transient:
        s.execute_complete(CTX, {"status": "error", "message": "5 consecutive polls", "retryable": True})
    assert not isinstance(transient.value, AirflowFailException)  # task retries apply
    with pytest.raises(AirflowFailException, match="-7"):
        s.execute_complete(CTX, {"status": "error", "message": "(ret_code -7)", "retryable": False})
    with pytest.raises(AirflowSensorTimeout):
        s.execute_complete(CTX, {"status": "timeout", "message": "too late"})
    with pytest.raises(AirflowException):
        s.execute_complete(CTX, None)


def test_deferral_timeout_ends_as_sensor_timeout() -> None:
    """What the worker does when the scheduler times out the deferred task (trigger_timeout passed)."""
    from airflow.sdk.bases.operator import TriggerFailureReason

    s = sensor(deferrable=True)
    with pytest.raises(AirflowSensorTimeout):
        s.resume_execution("__fail__", {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, CTX)
    with pytest.raises(AirflowSkipException):
        sensor(deferrable=True, soft_fail=True).resume_execution(
            "__fail__",
            {"error": TriggerFailureReason.TRIGGER_TIMEOUT},
            CTX,
        )


# -- under real Airflow (`dag.test()` in process) ------------------------------------------------------

DAG_SOURCE = """
import datetime
import json
import pathlib

from airflow.sdk import DAG, task
from airflow_provider_shortint.sensors.short_interest import ShortInterestNewRecordSensor

with DAG(
    {dag_id!r},
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1),
    params={{"after": "2026-05-15"}},
) as dag:
    wait_us = ShortInterestNewRecordSensor(
        task_id="wait_us", symbol="US.AAPL", after="{{{{ params.after }}}}",
        mode="reschedule", poke_interval=1, timeout=120,
    )
    wait_hk = ShortInterestNewRecordSensor(
        task_id="wait_hk", symbol="hk.700", after="{{{{ params.after }}}}",
        deferrable=True, poke_interval=0.3, timeout=120,
    )

    @task
    def report(ti=None):
        pulled = {{t: ti.xcom_pull(task_ids=t) for t in ("wait_us", "wait_hk")}}
        pathlib.Path({out!r}).write_text(json.dumps(pulled))

    wait_us >> wait_hk >> report()
"""


def test_reschedule_and_deferrable_under_airflow(
    sandbox: SandboxServer, airflow_home: AirflowHome, tmp_path: Path
) -> None:
    sandbox.configure(token=TOKEN)
    run_sensor_dag(
        sandbox, airflow_home, tmp_path, conn_uri(sandbox.url, password=TOKEN), "shortint_sensor_e2e"
    )
    assert sandbox.stats()["by_transport"]["opend"] == 0


def test_reschedule_and_deferrable_under_airflow_over_opend(
    opend_sandbox: SandboxServer, airflow_home: AirflowHome, tmp_path: Path
) -> None:
    """The same DAG, its connection a ``futu_opend`` one: the real futu-api client in the task and the
    trigger."""
    run_sensor_dag(
        opend_sandbox, airflow_home, tmp_path, opend_conn(opend_sandbox.opend_port), "shortint_sensor_opend"
    )
    assert opend_sandbox.stats()["by_transport"]["rest"] == 0


def run_sensor_dag(
    sandbox: SandboxServer, airflow_home: AirflowHome, tmp_path: Path, conn: str, dag_id: str
) -> None:
    """``dag.test()`` of DAG_SOURCE with ``conn`` as shortint_default: a reschedule sensor and a deferrable
    one each see a date the sandbox publishes while they wait (a watcher thread publishes it once the
    sandbox has seen the sensor, or its trigger, poll)."""
    out = tmp_path / "xcom.json"
    airflow_home.add_dag(DAG_SOURCE.format(out=str(out), dag_id=dag_id), f"{dag_id}.py")
    seen: dict[str, int] = {}
    published: dict[str, str] = {}
    stop = threading.Event()

    def count(symbol: str) -> int:
        return int(sandbox.stats()["by_symbol"].get(symbol, 0))

    def wait_for(condition: Callable[[], bool]) -> bool:
        while not stop.is_set():
            if condition():
                return True
            stop.wait(0.02)
        return False

    def watch() -> None:
        # The reschedule sensor pokes (nothing new), gives its slot back: then the US record appears.
        if not wait_for(lambda: count("US.AAPL") >= 1):
            return
        seen["us_before"] = count("US.AAPL")
        published["US"] = sandbox.publish("US").isoformat()
        # The deferrable sensor pokes once, defers; the trigger keeps polling while the task is deferred.
        if not wait_for(lambda: count("HK.00700") >= 3):
            return
        seen["hk_before"] = count("HK.00700")
        published["HK"] = sandbox.publish("HK").isoformat()

    watcher = threading.Thread(target=watch, name="publisher", daemon=True)
    watcher.start()
    try:
        result = airflow_home.dags_test(dag_id, env={"AIRFLOW_CONN_SHORTINT_DEFAULT": conn})
    finally:
        stop.set()
        watcher.join()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert json.loads(out.read_text()) == {
        "wait_us": {"symbol": "US.AAPL", "trade_date": published["US"]},
        "wait_hk": {"symbol": "HK.00700", "trade_date": published["HK"]},
    }
    assert "running trigger in line" in output
    assert seen["hk_before"] >= 3  # 1 poke before deferring + at least 2 polls by the trigger
    assert TOKEN not in output
    with sqlite3.connect(airflow_home.root / "airflow.db") as db:
        reschedules = db.execute(
            "SELECT count(*) FROM task_reschedule r JOIN task_instance t ON r.ti_id = t.id "
            "WHERE t.dag_id = ? AND t.task_id = 'wait_us'",
            (dag_id,),
        ).fetchone()[0]
        states = dict(
            db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (dag_id,)).fetchall()
        )
    assert reschedules >= 1
    assert states == {"wait_us": "success", "wait_hk": "success", "report": "success"}


# -- poke_interval=None: the process that polls reads $SHORTINT_POKE_INTERVAL ----------------------------


def test_poke_interval_none_defers_with_the_triggerers_setting(
    api: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHORTINT_POKE_INTERVAL", "3")
    s = sensor(after="2026-05-15", deferrable=True, poke_interval=None)
    with pytest.raises(TaskDeferred) as info:
        s.execute(CTX)
    trigger = info.value.trigger
    assert isinstance(trigger, ShortInterestNewRecordTrigger)
    assert trigger.serialize()[1]["poke_interval"] is None  # the triggerer reads its own setting


def test_poke_interval_none_in_poke_mode_is_read_by_the_worker(
    api: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = sensor(after="2026-05-15", poke_interval=None, timeout=0)
    assert s.poke_interval == 900  # the default until the task runs
    monkeypatch.setenv("SHORTINT_POKE_INTERVAL", "0.25")
    with pytest.raises(AirflowSensorTimeout):
        s.execute(CTX)
    assert s.poke_interval == 0.25
    monkeypatch.setenv("SHORTINT_POKE_INTERVAL", "often")
    with pytest.raises(AirflowFailException, match="SHORTINT_POKE_INTERVAL must be a number"):
        sensor(after="2026-05-15", poke_interval=None).execute(CTX)
    assert sensor(poke_interval=5).poke_interval == 5
