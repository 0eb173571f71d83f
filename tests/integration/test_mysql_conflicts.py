"""Lock conflicts on the real MariaDB: a deadlocked transaction is rolled back by InnoDB and
run again by the store, so both writers finish and nothing is applied twice."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from devmesh.api.app import _status_for
from devmesh_core.errors import TransactionConflict
from devmesh_core.store import open_store
from devmesh_core.store.sql import SQLLogStore


def crossed_writers(store: SQLLogStore, writer: Callable[[str, int, int], None]) -> None:
    """A table ``pair`` with rows 1 and 2, and two threads: ``writer("a", 1, 2)`` and
    ``writer("b", 2, 1)``, each meant to lock its first row and then want the other's."""
    store.run(lambda cur: cur.execute("CREATE TABLE pair (k INT PRIMARY KEY, v INT)"), write=True)
    store.run(lambda cur: cur.execute("INSERT INTO pair VALUES (1, 0), (2, 0)"), write=True)
    threads = [
        threading.Thread(target=writer, args=("a", 1, 2)),
        threading.Thread(target=writer, args=("b", 2, 1)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def test_a_deadlocked_transaction_is_retried_whole(mariadb_url: str) -> None:
    store = open_store(mariadb_url)
    assert isinstance(store, SQLLogStore)
    try:
        both_hold_first = threading.Barrier(2, timeout=10)
        attempts = {"a": 0, "b": 0}

        def writer(name: str, first: int, second: int) -> None:
            def work(cur: Any) -> None:
                attempts[name] += 1
                cur.execute("UPDATE pair SET v = v + 1 WHERE k = %s", (first,))
                if attempts[name] == 1:
                    both_hold_first.wait()  # each holds one row and wants the other's
                cur.execute("UPDATE pair SET v = v + 1 WHERE k = %s", (second,))

            store.run(work, write=True)

        crossed_writers(store, writer)

        def read(cur: Any) -> list[tuple[int, int]]:
            cur.execute("SELECT k, v FROM pair ORDER BY k")
            return [tuple(row) for row in cur.fetchall()]

        # Each writer's two increments landed exactly once, though one ran twice.
        assert store.run(read, write=False) == [(1, 2), (2, 2)]
        assert sorted(attempts.values()) == [1, 2]
    finally:
        store.close()


def test_a_conflict_past_the_retries_is_reported_as_one(mariadb_url: str) -> None:
    """When the retries are spent the caller gets TransactionConflict (the API answers 503,
    which a shipper re-sends), never a generic backend failure."""
    store = open_store(mariadb_url)
    assert isinstance(store, SQLLogStore)
    store.conflict_retries = 0
    try:
        both_hold_first = threading.Barrier(2, timeout=10)
        outcomes: dict[str, str] = {}

        def writer(name: str, first: int, second: int) -> None:
            def work(cur: Any) -> None:
                cur.execute("UPDATE pair SET v = v + 1 WHERE k = %s", (first,))
                both_hold_first.wait()
                cur.execute("UPDATE pair SET v = v + 1 WHERE k = %s", (second,))

            try:
                store.run(work, write=True)
                outcomes[name] = "ok"
            except TransactionConflict:
                outcomes[name] = "conflict"

        crossed_writers(store, writer)
        assert sorted(outcomes.values()) == ["conflict", "ok"]
        assert _status_for(TransactionConflict("mysql: deadlock")) == 503
    finally:
        store.close()
