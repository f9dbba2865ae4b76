"""Shared fixtures: a real sandbox on 127.0.0.1, connections from the environment, a real Airflow home."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
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


class AirflowHome:
    """A temporary AIRFLOW_HOME with a migrated SQLite DB, for `airflow dags test` in a subprocess."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dags = root / "dags"
        self.dags.mkdir(parents=True, exist_ok=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_HOME": str(root),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
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
    ) -> subprocess.CompletedProcess[str]:
        """`airflow dags test DAG_ID` in this home."""
        args = ["dags", "test", dag_id]
        if logical_date:
            args.append(logical_date)
        if conf is not None:
            args += ["--conf", json.dumps(conf)]
        return self.airflow(*args, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    """One migrated Airflow home per test session (migration takes a few seconds)."""
    home = AirflowHome(tmp_path_factory.mktemp("airflow_home"))
    result = home.airflow("db", "migrate")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return home
