"""Shared fixtures. Real parts only: SQLite files in temp dirs and the real MariaDB server.

MariaDB is expected at 127.0.0.1:3306 (root, empty password); `.ci/run` starts it when it is
down. Each test that needs it gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Self

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


class ServeProcess:
    """``devmesh serve`` as a subprocess on a data dir and a port kept across restarts, so a
    shipper pointed at it once sees the server stop, die and come back (tests and benches).

    Its output goes to ``server-<port>.log`` beside the data dir.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        token: str,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.token = token
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        env = {
            **os.environ,
            "DEVMESH_DATA_DIR": str(self.data_dir),
            "DEVMESH_API_TOKENS": self.token,
            "DEVMESH_LOG_FORMAT": "json",
            **self.env,
        }
        devmesh = str(Path(sys.executable).with_name("devmesh"))
        with (self.data_dir.parent / f"server-{self.port}.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [devmesh, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait_healthy(self.url, self.proc):
            return self
        if self.proc.poll() is not None:
            raise RuntimeError(f"devmesh serve exited with {self.proc.returncode}")
        raise RuntimeError("devmesh serve did not become healthy")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``kill``) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.proc = None

    def get(self, path: str, **params: Any) -> Any:
        """GET ``path`` with the token; the decoded JSON answer."""
        response = httpx.get(
            self.url + path,
            params=params,
            timeout=60,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        response.raise_for_status()
        return response.json()

    def count(self) -> int:
        """Events in the server's store."""
        return int(self.get("/info")["counts"]["events"])

    def events(self) -> list[dict[str, Any]]:
        """Every stored event, oldest first (by time), read page by page."""
        events: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 1000, "order": "asc"}
            if cursor:
                params["cursor"] = cursor
            page = self.get("/query/logs", **params)
            events.extend(page["events"])
            cursor = page["next"]
            if not cursor:
                return events


@pytest.fixture
def devmesh_server(tmp_path: Path) -> Iterator[str]:
    """Base URL of a real ``devmesh serve`` (SQLite in a temp data dir), stopped afterwards."""
    proc, base = start_server(tmp_path / "server")
    try:
        yield base
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
