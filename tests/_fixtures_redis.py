"""A real redis-server on a free 127.0.0.1 port (no fake Redis), and an Airflow connection to it.

The binary is $REDIS_SERVER, else ``redis-server`` on PATH (Debian's ``redis-server`` package, which
``make test`` installs when missing), else /usr/sbin or /usr/local/bin. Without one the Redis tests skip
with the reason, except under CI (``CI`` set), where they fail: CI must not pass by skipping them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest


def redis_server_binary() -> str | None:
    """Path of a redis-server executable, or None."""
    candidates = [os.environ.get("REDIS_SERVER"), shutil.which("redis-server")]
    candidates += ["/usr/sbin/redis-server", "/usr/local/bin/redis-server", "/usr/bin/redis-server"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process on 127.0.0.1, with no persistence; can be stopped and started again."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.workdir = tempfile.mkdtemp(prefix="shortint-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait (bounded) until it answers PING."""
        self.proc = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    client.close()
                    return
            except redis.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill the server (SIGKILL: its data is gone, as after a crash without persistence)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def client(self) -> object:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def conn_json(self) -> str:
        """The server as an Airflow ``redis`` connection (AIRFLOW_CONN_* JSON form)."""
        return json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": self.port, "extra": {"db": 0}})


@pytest.fixture(scope="session")
def redis_binary() -> str:
    binary = redis_server_binary()
    if binary is None:
        reason = (
            "no redis-server found (install Debian's redis-server package, as `make test` does, "
            "or set REDIS_SERVER to its path)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the Redis tests")
        pytest.skip(reason)
    return binary


@pytest.fixture
def redis_server(redis_binary: str) -> Iterator[RedisServer]:
    """A fresh redis-server per test."""
    server = RedisServer(redis_binary, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture
def redis_conn(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """An Airflow connection id (through the environment) for ``redis_server``."""
    conn_id = f"shortint_redis_{redis_server.port}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", redis_server.conn_json())
    return conn_id
