"""Lock conflicts on the real MariaDB: a deadlocked transaction is rolled back by InnoDB and
run again by the store, so both writers finish and nothing is applied twice."""

from __future__ import annotations

import threading
from typing import Any

from devmesh_core.store import open_store
from devmesh_core.store.sql import SQLLogStore


def test_a_deadlocked_transaction_is_retried_whole(mariadb_url: str) -> None:
    store = open_store(mariadb_url)
    assert isinstance(store, SQLLogStore)
    try:
        store.run(
            lambda cur: cur.execute("CREATE TABLE pair (k INT PRIMARY KEY, v INT)"), write=True
        )
        store.run(lambda cur: cur.execute("INSERT INTO pair VALUES (1, 0), (2, 0)"), write=True)
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

        threads = [
            threading.Thread(target=writer, args=("a", 1, 2)),
            threading.Thread(target=writer, args=("b", 2, 1)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        def read(cur: Any) -> list[tuple[int, int]]:
            cur.execute("SELECT k, v FROM pair ORDER BY k")
            return [tuple(row) for row in cur.fetchall()]

        # Each writer's two increments landed exactly once, though one ran twice.
        assert store.run(read, write=False) == [(1, 2), (2, 2)]
        assert sorted(attempts.values()) == [1, 2]
    finally:
        store.close()
