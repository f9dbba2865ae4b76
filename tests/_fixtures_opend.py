"""Fixtures for the OpenD door of the sandbox: a server with REST and OpenD ports, and a real SDK client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_shortint.sandbox import SandboxConfig, SandboxServer


@pytest.fixture(scope="session")
def futu_quiet() -> None:
    """futu-api imported once the provider's way (``transports.opend.sdk.load_futu``: nothing under $HOME,
    its log routed to ``airflow_provider_shortint.opend.sdk``, SIGINT left alone). futu-api is a dev
    dependency: without it this fails (FutuNotInstalledError), it never skips."""
    from airflow_provider_shortint.transports.opend.sdk import load_futu

    load_futu()


@pytest.fixture
def opend_sandbox(futu_quiet: None) -> Iterator[SandboxServer]:
    """A fresh sandbox serving REST (``.url``) and OpenD (``.opend_port``), no server-side rate limit."""
    with SandboxServer(SandboxConfig(rate_limit_calls=0), opend_port=0) as server:
        yield server


@pytest.fixture
def opend_client(opend_sandbox: SandboxServer) -> Iterator[Any]:
    """A real ``futu.OpenQuoteContext`` connected to ``opend_sandbox``; closed after the test."""
    from futu import OpenQuoteContext

    ctx = OpenQuoteContext(host="127.0.0.1", port=opend_sandbox.opend_port)
    try:
        yield ctx
    finally:
        ctx.close()
