"""Shared fixtures: a real sandbox on 127.0.0.1, connections from the environment, real Airflow in process.

Airflow reads its home and metadata DB when it is first imported, so this module points it at a fresh
temporary home (one per test process, SQLite) before anything imports Airflow, and removes every
``AIRFLOW*`` variable the developer's shell may hold: the tests see only the connections they define.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

for _name in [name for name in os.environ if name.startswith("AIRFLOW")]:
    del os.environ[_name]
_HOME = Path(tempfile.mkdtemp(prefix="shortint-airflow-home-"))
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(_HOME),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_FOLDER": str(_HOME / "dags"),
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
}
os.environ.update(AIRFLOW_ENV)

# ruff: noqa: E402 - the imports below may import Airflow: they must come after its environment.
import contextlib
import io
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from airflow_provider_shortint.sandbox import SandboxConfig, SandboxServer

REPO = Path(__file__).resolve().parents[1]

# Fixtures of one concern each live in tests/_fixtures_*.py (e.g. a real redis-server, the OpenD sandbox).
pytest_plugins = sorted(f"tests.{path.stem}" for path in Path(__file__).parent.glob("_fixtures_*.py"))
VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A fresh sandbox per test, with no server-side rate limit (tests that need one configure it)."""
    with SandboxServer(SandboxConfig(rate_limit_calls=0)) as server:
        yield server


def conn_uri(url: str, conn_type: str = "shortint", password: str | None = None, **extra: Any) -> str:
    """The JSON form of an Airflow connection, as AIRFLOW_CONN_* environment variables take it."""
    conn: dict[str, Any] = {"conn_type": conn_type, "host": url}
    if password:
        conn["password"] = password
    conn["extra"] = {"backoff_base": 0.01, "rate_limit_calls": 1000, "rate_limit_period": 1, **extra}
    return json.dumps(conn)


@pytest.fixture
def use_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Register a connection through the environment; returns its conn id."""

    def register(url: str, conn_id: str = "shortint_default", **kwargs: Any) -> str:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn_uri(url, **kwargs))
        return conn_id

    return register


@pytest.fixture
def hook_for(sandbox: SandboxServer, use_conn: Callable[..., str]) -> Callable[..., Any]:
    """Build a ShortInterestHook on the sandbox with fast retries; extras may be overridden."""
    from airflow_provider_shortint.hooks.short_interest import ShortInterestHook

    counter = iter(range(1_000_000))

    def build(**extra: Any) -> ShortInterestHook:
        password = extra.pop("password", None)
        conn_id = use_conn(sandbox.url, conn_id=f"shortint_test_{next(counter)}", password=password, **extra)
        return ShortInterestHook(shortint_conn_id=conn_id)

    return build


@dataclass
class DagRunResult:
    """What one in-process ``dag.test()`` did: 0 when the run succeeded, and what it printed and logged."""

    returncode: int
    stdout: str
    stderr: str = ""


class AirflowHome:
    """This test process's Airflow home (SQLite metadata DB, a DAGs folder), driven in process.

    ``dags_test`` runs ``dag.test()`` here, as ``airflow dags test`` does in its own process; ``airflow``
    runs the real CLI in a subprocess on the same home (one end-to-end test uses it).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dags = root / "dags"
        self.dags.mkdir(parents=True, exist_ok=True)
        #: The environment of a CLI subprocess: this home, no AIRFLOW variable of the developer's shell.
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            **AIRFLOW_ENV,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def airflow(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run the `airflow` CLI of this virtualenv in this home; output captured as text."""
        return subprocess.run(
            [str(VENV_BIN / "airflow"), *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )

    def add_dag(self, source: Path | str, name: str | None = None) -> Path:
        """Copy a DAG file (or write DAG source text) into this home's dags folder."""
        if isinstance(source, Path):
            target = self.dags / (name or source.name)
            shutil.copy(source, target)
        else:
            target = self.dags / (name or "dag.py")
            target.write_text(source)
        return target

    def dags_test(
        self,
        dag_id: str,
        *,
        conf: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        logical_date: str | None = None,
        timeout: float = 300,
    ) -> DagRunResult:
        """``dag.test()`` of ``dag_id`` from this home's dags folder, in this process, with ``env`` set
        while the DAG is parsed and run; what tasks print and log is returned as ``stdout``.

        ``timeout`` is kept for the CLI's signature; pytest-timeout guards the test instead.
        """
        from airflow.dag_processing.dagbag import DagBag
        from airflow.sdk import timezone

        with _environment(env or {}), _captured() as output:
            bag = DagBag(dag_folder=str(self.dags))
            dag = bag.get_dag(dag_id)
            if dag is None:
                return DagRunResult(1, f"DAG {dag_id!r} not found; import errors: {bag.import_errors}")
            when = timezone.parse(logical_date) if logical_date else timezone.utcnow()
            try:
                run = dag.test(logical_date=when, run_conf=conf)
            except Exception as err:  # what the CLI would print before exiting non-zero
                logging.getLogger(__name__).exception("dag.test(%s) raised", dag_id)
                return DagRunResult(1, output.text() + f"\n{type(err).__name__}: {err}")
        return DagRunResult(0 if run.state == "success" else 1, output.text())


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ for the block, the previous values restored after it."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _Output:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.stream = io.StringIO()

    def text(self) -> str:
        return self.stream.getvalue() + "\n".join(self.lines)


class _Grab(logging.Handler):
    """Every log record of the block, as one line (Airflow's own and the tasks' loggers)."""

    def __init__(self, output: _Output) -> None:
        super().__init__(logging.DEBUG)
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.output.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")
        except Exception:  # a record that cannot be formatted must not fail the run
            self.output.lines.append(f"{record.levelname} {record.name}: {record.msg!r}")


@contextlib.contextmanager
def _captured() -> Iterator[_Output]:
    """What the block prints (sys.stdout/sys.stderr) and logs (the root logger), also kept visible."""
    output = _Output()
    handler = _Grab(output)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with contextlib.redirect_stdout(output.stream), contextlib.redirect_stderr(output.stream):
            yield output
    finally:
        root.removeHandler(handler)
        sys.stdout.write(output.text()[-20000:])  # in the test's captured output when it fails


#: The longest files, longest first: they start first so that the workers finish together (`make pytest`
#: passes --no-loadscope-reorder, or xdist would order files by their number of tests).
LONG_FIRST = (
    "test_table_concurrency.py",
    "test_lake_s3_concurrency.py",
    "test_lineage.py",
    "test_lake_s3.py",
    "test_futu_opend_hook.py",
    "test_lake_backfill.py",
    "test_table_s3.py",
    "test_dags.py",
    "test_reliability_input.py",
    "test_lake_crash.py",
    "test_sandbox_opend.py",
    "test_sensor.py",
    "test_operator_opend.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files of ``LONG_FIRST`` first, in its order; every other file after them, as collected."""
    rank = {name: index for index, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FIRST)))


@pytest.fixture(scope="session")
def airflow_home() -> AirflowHome:
    """This test process's Airflow home, its metadata DB created once (in process)."""
    from airflow.utils import db

    home = AirflowHome(_HOME)
    with _captured():
        db.initdb()
    return home
