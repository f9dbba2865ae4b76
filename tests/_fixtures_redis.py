"""A real redis-server on a free 127.0.0.1 port (no fake Redis), one per test session, and connections to it.

The binary is $REDIS_SERVER, else ``redis-server`` on PATH (Debian's ``redis-server`` package, which
``make test`` installs when missing), else /usr/sbin, /usr/bin or /usr/local/bin. Without one the Redis
tests fail with the reason: a broken environment must not pass by skipping them.

Tests share the server and stay apart by their budget's key (a name of their own) or a database of their
own; a test that changes the server (its config, a stop, a restart) puts it back as it found it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests._helpers import wait_until


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
    """One redis-server process on 127.0.0.1 with no automatic persistence; can be stopped and started
    again on the same port (it then loads ``dump.rdb`` from its folder if a test saved one)."""

    def __init__(self, binary: str, port: int, *args: str) -> None:
        self.binary = binary
        self.port = port
        self.args = args  # more command-line options (later ones win)
        self.workdir = tempfile.mkdtemp(prefix="shortint-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait (bounded) until it answers PING."""
        import redis

        self.proc = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", self.workdir),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=1)
        proc = self.proc

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return proc.poll() is not None  # exited: stop waiting, fail below

        try:
            if not wait_until(answers, guard=timeout, step=0.02) or proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start")
        finally:
            client.close()

    def stop(self) -> None:
        """Kill the server (SIGKILL: what it held in memory is gone, as after a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def client(self, db: int = 0) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=5)

    def conn_json(self, db: int = 0, **fields: object) -> str:
        """The server as an Airflow ``redis`` connection (AIRFLOW_CONN_* JSON form)."""
        conn = {"conn_type": "redis", "host": "127.0.0.1", "port": self.port, "extra": {"db": db}, **fields}
        return json.dumps(conn)


@pytest.fixture(scope="session")
def redis_binary() -> str:
    binary = redis_server_binary()
    if binary is None:
        pytest.fail(
            "no redis-server found: install Debian's redis-server package (`make test` does) or set "
            "REDIS_SERVER to its path; the Redis tests do not skip"
        )
    return binary


@pytest.fixture(scope="session")
def redis_server(redis_binary: str) -> Iterator[RedisServer]:
    """One redis-server for the whole session (per xdist worker)."""
    server = RedisServer(redis_binary, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture
def redis_conn(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """An Airflow connection id (through the environment) for the session's ``redis_server``, db 0."""
    conn_id = f"shortint_redis_{redis_server.port}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", redis_server.conn_json())
    return conn_id
