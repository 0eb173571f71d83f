"""MariaDB-specific behaviour: lost connections are retried, a down server is reported."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pymysql
import pytest

from devmesh_core.errors import BackendUnavailable, ConfigError
from devmesh_core.models import LogEvent
from devmesh_core.store import open_store
from devmesh_core.store.mysql import MySQLLogStore
from tests.conftest import MARIADB, free_port


def _event(i: int) -> LogEvent:
    return LogEvent(
        timestamp=datetime(2026, 1, 1, 0, 0, i, tzinfo=UTC), service="s", host="h", message=f"m{i}"
    )


def test_killed_connection_is_replaced_and_insert_retried(mariadb_url: str) -> None:
    store = open_store(mariadb_url)
    assert isinstance(store, MySQLLogStore)
    store.insert([_event(1)])
    conn_id = store._conn().thread_id()
    admin = pymysql.connect(**MARIADB, autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"KILL {conn_id}")
    admin.close()
    time.sleep(0.2)
    result = store.insert([_event(1), _event(2)])
    assert (result.stored, result.duplicates) == (1, 1)
    assert store._conn().thread_id() != conn_id
    assert store.count() == 2
    store.close()


def test_server_down_is_backend_unavailable() -> None:
    url = f"mysql://root@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="mysql"):
        open_store(url)
    assert time.monotonic() - started < 10


def test_url_parsing() -> None:
    store = MySQLLogStore.from_url("mysql://u%40x:p%2Fw@db.lan:3307/logs?connect_timeout=3")
    args = store._connect_args
    assert (args["user"], args["password"], args["host"], args["port"]) == (
        "u@x",
        "p/w",
        "db.lan",
        3307,
    )
    assert (args["database"], args["connect_timeout"]) == ("logs", 3)
    with pytest.raises(ConfigError, match="no database"):
        MySQLLogStore.from_url("mysql://root@localhost/")
