"""OpenD hook test helpers: ``futu_opend`` connections on ``opend_sandbox`` (tests/_fixtures_opend.py)
and child interpreters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shortint.sandbox import SandboxServer

REPO = Path(__file__).resolve().parents[1]
FAST = {"backoff_base": 0.01, "rate_limit_calls": 1000, "rate_limit_period": 1}


def opend_conn(port: int, host: str = "127.0.0.1", **extra: Any) -> str:
    """A ``futu_opend`` connection in the JSON form of AIRFLOW_CONN_* variables (fast retries)."""
    return json.dumps({"conn_type": "futu_opend", "host": host, "port": port, "extra": {**FAST, **extra}})


@pytest.fixture
def opend_hook_for(
    opend_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Any]]:
    """Build FutuOpenDHooks on the sandbox's OpenD port (extras may be overridden); all closed at the end."""
    from airflow_provider_shortint.hooks.futu_opend import FutuOpenDHook

    hooks: list[FutuOpenDHook] = []

    def build(port: int | None = None, **extra: Any) -> FutuOpenDHook:
        conn_id = f"opend_test_{len(hooks)}"
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}", opend_conn(port or opend_sandbox.opend_port, **extra)
        )
        hook = FutuOpenDHook(futu_opend_conn_id=conn_id)
        hooks.append(hook)
        return hook

    yield build
    for hook in hooks:
        hook.close()


def run_child(code: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of this venv (its own threads, sockets and $HOME)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.fixture(scope="session")
def rsa_key_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real RSA private key file (PEM, 1024 bits: what OpenD's own key files use), made with
    pycryptodome, which futu-api depends on to encrypt InitConnect."""
    from Crypto.PublicKey import RSA  # pycryptodome, a dependency of futu-api

    path = tmp_path_factory.mktemp("opend_rsa") / "opend_private.pem"
    path.write_bytes(RSA.generate(1024).export_key())
    return str(path)
