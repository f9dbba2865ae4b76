"""Local server speaking the short-interest REST contract (and, optionally, the OpenD protocol), with
faults and a rate limit (dev, demo, tests). Module layout: docs/SANDBOX.md."""

from airflow_provider_shortint.sandbox.config import SandboxConfig
from airflow_provider_shortint.sandbox.contract import SPECIAL_SYMBOLS
from airflow_provider_shortint.sandbox.server import SandboxServer

__all__ = ["SPECIAL_SYMBOLS", "SandboxConfig", "SandboxServer"]
