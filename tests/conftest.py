"""Shared fixtures. Real parts only: SQLite files in temp dirs and the real MariaDB server.

MariaDB is expected at 127.0.0.1:3306 (root, empty password); `.ci/run` starts it when it is
down. Each test that needs it gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

# Nothing may be downloaded at test time, and loopback traffic must never go to a proxy.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"

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
