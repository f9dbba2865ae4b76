"""The package as Airflow sees it: provider metadata, the `shortint` connection type, the CLI listings."""

from __future__ import annotations

import json
from pathlib import Path

import airflow
import jsonschema

from airflow_provider_shortint import __version__
from airflow_provider_shortint.get_provider_info import get_provider_info
from airflow_provider_shortint.transports.rest.settings import RestSettings


def test_provider_info_matches_airflow_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-provider-shortint" and info["versions"] == [__version__]
    by_type = {entry["connection-type"]: entry for entry in info["connection-types"]}
    conn_type = by_type["shortint"]
    assert conn_type["hook-class-name"].endswith("hooks.short_interest.ShortInterestHook")
    assert set(conn_type["conn-fields"]) == set(RestSettings.extras())
    assert {"rate_limit_redis_conn_id", "rate_limit_key", "timeout", "verify_ssl"} <= set(
        RestSettings.extras()
    )
    behaviour = conn_type["ui-field-behaviour"]
    assert behaviour["relabeling"]["password"] == "API token"
    assert set(behaviour["hidden-fields"]) == {"schema", "login"}
    assert behaviour["placeholders"]["timeout"] == "30"


def test_extras_declared_once_drive_form_and_reading() -> None:
    """Each extra's declaration gives its UI field, default and validation; nothing is listed twice."""
    from types import SimpleNamespace

    import pytest

    from airflow_provider_shortint.exceptions import InvalidParameterError

    declared = RestSettings.extras()
    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    assert list(fields) == list(declared) == list(RestSettings.extras())
    for name, declaration in declared.items():
        assert fields[name]["label"] == declaration.label and "null" in fields[name]["schema"]["type"]

    def read(**extra: object) -> RestSettings:
        conn = SimpleNamespace(conn_id="c", host="http://h", port=None, password=None, extra_dejson=extra)
        return RestSettings.from_connection(conn)

    defaults = read()
    assert (defaults.timeout, defaults.rate_limit_calls, defaults.max_retries) == (30.0, 30, 5)
    assert defaults.rate_limit_key is None and defaults.budget_key() == "shortint-account"
    keyed = read(rate_limit_key="account-1", rate_limit_redis_conn_id="redis_default", timeout="2.5")
    assert keyed.budget_key() == "account-1" and keyed.timeout == 2.5
    assert keyed.rate_limit_redis_conn_id == "redis_default"
    with pytest.raises(InvalidParameterError, match="extra 'rate_limit_redis_conn_id'"):
        read(rate_limit_redis_conn_id="no spaces allowed")


def test_declared_modules_import_without_heavy_dependencies() -> None:
    """Every module the provider declares imports cleanly, and none pulls pandas, pyarrow or the HTTP
    client in at import (the DAG processor imports them on every parse)."""
    import subprocess
    import sys

    info = get_provider_info()
    modules = [
        m
        for kind in ("hooks", "operators", "sensors", "triggers")
        for e in info[kind]
        for m in e["python-modules"]
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in ('pandas', 'pyarrow', 'aiohttp', 'requests') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_airflow_lists_provider_and_hooks() -> None:
    """What ``airflow providers list`` / ``providers hooks`` show, read in process from the managers the
    CLI and the workers use: the distribution's entry point gives both connection types their hook."""
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    assert ProvidersManager().providers["airflow-provider-shortint"].version == __version__
    hooks = ProvidersManagerTaskRuntime().hooks
    rest, opend = hooks["shortint"], hooks["futu_opend"]
    assert rest is not None and opend is not None
    assert rest.hook_class_name == "airflow_provider_shortint.hooks.short_interest.ShortInterestHook"
    assert rest.connection_id_attribute_name == "shortint_conn_id" and rest.connection_testable
    assert opend.hook_class_name == "airflow_provider_shortint.hooks.futu_opend.FutuOpenDHook"
