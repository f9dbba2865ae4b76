"""Local server speaking the short-interest REST contract, with faults and a rate limit (dev, demo, tests)."""

from airflow_provider_shortint.sandbox.server import SPECIAL_SYMBOLS, SandboxConfig, SandboxServer

__all__ = ["SPECIAL_SYMBOLS", "SandboxConfig", "SandboxServer"]
