"""A real S3-compatible server (moto) on 127.0.0.1 for the lake's object-storage tests and benchmarks.

moto checks ``If-Match``/``If-None-Match`` and then stores the object in two steps of Python code, and
its threaded server can switch threads between them, which S3 never does (a conditional PUT is atomic
there). The server here runs moto's own WSGI app with its writes (PUT/POST/DELETE) serialised, so a
conditional write is as atomic as on S3; reads stay concurrent. It writes one line per request it
served to a log file (method, path, status): :meth:`S3Server.requests` counts them, so tests and
benchmarks count PUTs and GETs as the server saw them.

One server per test process (session scope); each test gets a key prefix of its own.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

CONN_ID = "aws_test"
BUCKET = "shortint-lake"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}

_SERVER = r"""
import sys, threading
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

app = DomainDispatcherApplication(create_backend_app)
writes = threading.Lock()
log = open(sys.argv[2], "a", buffering=1, encoding="utf-8") if len(sys.argv) > 2 else None
logged = threading.Lock()


def served(environ, start_response):
    status = []

    def start(code, headers, *rest):
        status.append(code.split(" ", 1)[0])
        return start_response(code, headers, *rest)

    if environ["REQUEST_METHOD"] in ("GET", "HEAD"):
        body = list(app(environ, start))
    else:
        with writes:
            body = list(app(environ, start))
    if log is not None:
        with logged:
            query = environ.get("QUERY_STRING", "")
            log.write(f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}?{query} {status[0]}\n")
    return body


port = int(sys.argv[1])
run_simple("127.0.0.1", port, served, threaded=True, request_handler=MotoRequestHandler)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_moto_server(timeout: float = 30, log: str | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """moto on a free loopback port (writes serialised, see the module docstring); returns (process, URL).

    With ``log``, the server appends one line per request to that file: ``METHOD /bucket/key?query STATUS``.
    """
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(port), *([log] if log else [])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            return server, endpoint
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)


def connection_env(endpoint: str, conn_id: str = CONN_ID) -> dict[str, str]:
    """Environment that gives Airflow the ``aws`` connection ``conn_id`` on ``endpoint``."""
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    return {**CREDENTIALS, f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn)}


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@dataclass
class S3Server:
    """The running server, its bucket, and the Airflow connection that reaches it."""

    endpoint: str
    conn_id: str = CONN_ID
    bucket: str = BUCKET
    env: dict[str, str] = field(default_factory=dict)
    log: str | None = None

    def requests(self, prefix: str = "") -> Counter[str]:
        """Requests the server served so far, by method (``GET``, ``PUT``, ...), on keys under ``prefix``
        of the bucket (a listing counts when it lists that prefix), from the server's own log."""
        return count_requests(self.log, self.bucket, prefix)

    def url(self, prefix: str) -> str:
        """``s3://conn_id@bucket/prefix``: a lake_path on this server."""
        return f"s3://{self.conn_id}@{self.bucket}/{prefix}"

    def client(self) -> Any:
        return s3_client(self.endpoint)

    def objects(self, prefix: str) -> dict[str, tuple[str, Any]]:
        """Key (relative to ``prefix``) -> (ETag, LastModified) of every object under ``prefix``."""
        listing = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix + "/").get("Contents", [])
        return {o["Key"][len(prefix) + 1 :]: (o["ETag"], o["LastModified"]) for o in listing}


def count_requests(log: str | None, bucket: str, prefix: str = "") -> Counter[str]:
    """Requests in a server log of :func:`start_moto_server`, by method, on ``bucket`` keys under
    ``prefix`` (a ListObjectsV2 counts when its ``prefix`` parameter starts with it)."""
    from urllib.parse import parse_qs, unquote

    counts: Counter[str] = Counter()
    if log is None:
        return counts
    key_prefix = f"/{bucket}/{prefix}"
    with open(log, encoding="utf-8") as handle:
        for line in handle:
            method, _, rest = line.partition(" ")
            target = rest.rsplit(" ", 1)[0]
            path, _, query = target.partition("?")
            path = unquote(path)
            listed = parse_qs(query).get("prefix", [None])[0]
            if path.startswith(key_prefix) or (
                path.rstrip("/") == f"/{bucket}" and listed is not None and listed.startswith(prefix)
            ):
                counts[method] += 1
    return counts


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto on 127.0.0.1, the bucket, and the Airflow connection ``aws_test`` in the environment.

    moto and s3fs are dev dependencies: a missing one fails the run (no skip).
    """
    import moto  # noqa: F401  (moto[server] runs the server; importing it here fails loudly if absent)
    import s3fs  # noqa: F401  (Airflow's s3:// ObjectStoragePath needs it)
    from airflow.sdk.io.store import _STORE_CACHE

    log = str(tmp_path_factory.mktemp("moto") / "requests.log")
    try:
        process, endpoint = start_moto_server(log=log)
    except RuntimeError as err:
        pytest.fail(str(err))
    server = S3Server(endpoint, env=connection_env(endpoint), log=log)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in server.env.items():
            patch.setenv(name, value)
        server.client().create_bucket(Bucket=BUCKET)
        _STORE_CACHE.pop(f"s3-{CONN_ID}", None)  # an fs cached for another endpoint must not be reused
        try:
            yield server
        finally:
            _STORE_CACHE.pop(f"s3-{CONN_ID}", None)
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture
def s3_prefix(s3_server: S3Server, request: pytest.FixtureRequest) -> str:
    """A fresh key prefix per test in the server's bucket (module and test name)."""
    name = request.node.name.replace("[", "_").replace("]", "")
    return f"lakes/{request.node.module.__name__.rpartition('.')[2]}/{name}"
