"""Provider metadata that Airflow reads through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_shortint import __version__


def get_provider_info() -> dict[str, Any]:
    """Hooks, operators, sensors, triggers and the ``shortint`` connection type of this package."""
    return {
        "package-name": "airflow-provider-shortint",
        "name": "Short Interest",
        "description": "HK and US short interest into partitioned Parquet: hook, operator, sensor, trigger.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Short Interest",
                "external-doc-url": "https://github.com/airflow-provider-shortint/airflow-provider-shortint",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Short Interest",
                "python-modules": ["airflow_provider_shortint.hooks.short_interest"],
            }
        ],
        "operators": [
            {
                "integration-name": "Short Interest",
                "python-modules": ["airflow_provider_shortint.operators.short_interest"],
            }
        ],
        "sensors": [
            {
                "integration-name": "Short Interest",
                "python-modules": ["airflow_provider_shortint.sensors.short_interest"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Short Interest",
                "python-modules": ["airflow_provider_shortint.triggers.short_interest"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "shortint",
                "hook-class-name": "airflow_provider_shortint.hooks.short_interest.ShortInterestHook",
                "hook-name": "Short Interest",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login"],
                    "relabeling": {"host": "Base URL", "password": "API token"},
                    "placeholders": {
                        "host": "https://openapi.example.com",
                        "password": "optional bearer token",
                        "timeout": "30",
                    },
                },
                "conn-fields": {
                    "timeout": {
                        "label": "Timeout (s)",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                        "description": "Seconds to wait for each response (default 30).",
                    },
                    "verify_ssl": {
                        "label": "Verify SSL",
                        "schema": {"type": ["boolean", "null"], "default": True},
                        "description": "Verify the server's TLS certificate (default true).",
                    },
                    "rate_limit_calls": {
                        "label": "Rate limit: calls",
                        "schema": {"type": ["integer", "null"], "minimum": 1},
                        "description": "Requests allowed per period (default 30).",
                    },
                    "rate_limit_period": {
                        "label": "Rate limit: period (s)",
                        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
                        "description": "Length of the rate-limit window in seconds (default 30).",
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "schema": {"type": ["integer", "null"], "minimum": 0},
                        "description": "Retries of a transient failure (-5, 429, 5xx, timeout), default 5.",
                    },
                    "backoff_base": {
                        "label": "Backoff base (s)",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                        "description": "First retry waits about this long, doubling each time (default 1).",
                    },
                    "rate_limit_state_dir": {
                        "label": "Shared rate-limit directory",
                        "schema": {"type": ["string", "null"]},
                        "description": "Folder for a lock file that shares one API budget among all "
                        "processes of this machine (unset: per process).",
                    },
                },
            }
        ],
    }
