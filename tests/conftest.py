"""Shared fixtures. Real parts only: SQLite files in temp dirs and the real MariaDB server.

MariaDB is expected at 127.0.0.1:3306 (root, empty password); `.ci/run` starts it when it is
down. Each test that needs it gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pymysql
import pytest

# Nothing may be downloaded at test time, and loopback traffic must never go to a proxy.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"
# Apps and servers in tests run without the embedding model unless a test turns it on
# (tests/integration/vectors and test_semantic_api do): loading it costs seconds per app.
os.environ["DEVMESH_VECTORS_ENABLED"] = "false"
# Likewise the graph projection loop (it starts an embedded FalkorDB per data dir); tests of
# the server's graph upkeep turn it on.
os.environ["DEVMESH_GRAPH_ENABLED"] = "false"

MARIADB: dict[str, Any] = {
    "host": os.environ.get("DEVMESH_TEST_MYSQL_HOST", "127.0.0.1"),
    "port": int(os.environ.get("DEVMESH_TEST_MYSQL_PORT", "3306")),
    "user": os.environ.get("DEVMESH_TEST_MYSQL_USER", "root"),
    "password": os.environ.get("DEVMESH_TEST_MYSQL_PASSWORD", ""),
}

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _admin() -> Any:
    return pymysql.connect(**MARIADB, autocommit=True, connect_timeout=5)


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """URL of a fresh utf8mb4 database on the real MariaDB server, dropped after the test."""
    name = f"devmesh_t_{uuid.uuid4().hex[:12]}"
    try:
        admin = _admin()
    except pymysql.err.OperationalError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"MariaDB is not reachable at {MARIADB['host']}:{MARIADB['port']}: {exc}")
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    user = MARIADB["user"]
    password = f":{MARIADB['password']}" if MARIADB["password"] else ""
    try:
        yield f"mysql://{user}{password}@{MARIADB['host']}:{MARIADB['port']}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'devmesh.db'}"


@pytest.fixture(params=["sqlite", "mysql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each contract test runs once per LogStore adapter."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'devmesh.db'}"
    return str(request.getfixturevalue("mariadb_url"))


def start_server(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Run ``devmesh serve`` as a real subprocess on a free port; return it and its base URL.

    Its stdout and stderr (JSON logs) are captured in the Popen's stdout.
    """
    port = free_port()
    full_env = {
        **os.environ,
        "DEVMESH_DATA_DIR": str(data_dir),
        "DEVMESH_LOG_FORMAT": "json",
        **(env or {}),
    }
    if env is None or "DEVMESH_API_TOKENS" not in env:
        full_env.pop("DEVMESH_API_TOKENS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devmesh.cli.main", "serve", "--port", str(port), *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    if wait_healthy(base, proc):
        return proc, base
    proc.kill()
    raise AssertionError(proc.communicate()[0].decode())


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> bool:
    """Poll ``base/health`` until it answers 200 (True), the process exits or time runs out
    (False): how every test and bench knows a started server is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


@pytest.fixture
def devmesh_server(tmp_path: Path) -> Iterator[str]:
    """Base URL of a real ``devmesh serve`` (SQLite in a temp data dir), stopped afterwards."""
    proc, base = start_server(tmp_path / "server")
    try:
        yield base
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
