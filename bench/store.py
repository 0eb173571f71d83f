"""Insert throughput of each LogStore adapter vs the raw driver, same schema, same run.

    python bench/store.py [--events 200000] [--batch 1000] [--backends sqlite,mysql]

Events are inserted in time order, as a shipper sends them. The adapter path starts from
validated ``LogEvent`` objects (what the API hands the store) and
includes turning them into rows; the raw path runs the driver's ``executemany`` with the same
INSERT statement on rows prepared beforehand, committing per batch. Both write into a freshly
migrated, empty schema. Targets: ≥ 70% of raw; SQLite ≥ 60k events/s, MariaDB ≥ 30k events/s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synth import make_events, temp_mariadb
from devmesh_core.models import LogEvent
from devmesh_core.store import open_store
from devmesh_core.store.mysql import _INSERT as MYSQL_INSERT
from devmesh_core.store.sql import SQLLogStore, event_row
from devmesh_core.store.sqlite import _INSERT as SQLITE_INSERT


def run_store(url: str, events: list[LogEvent], batch: int) -> float:
    store = open_store(url)
    started = time.perf_counter()
    for i in range(0, len(events), batch):
        store.insert(events[i : i + batch])
    elapsed = time.perf_counter() - started
    assert store.count() == len(events)
    store.close()
    return len(events) / elapsed


def run_raw(url: str, events: list[LogEvent], batch: int) -> float:
    store = open_store(url)  # only to create the identical schema
    assert isinstance(store, SQLLogStore)
    store.close()
    rows = [event_row(e, 0) for e in events]
    conn: Any
    if url.startswith("sqlite"):
        from devmesh_core.store.sqlite import SQLiteLogStore

        # the same connection set-up (pragmas) as the adapter, so only our code differs
        conn = SQLiteLogStore.from_url(url)._connect()
        sql = SQLITE_INSERT
        begin = "BEGIN IMMEDIATE"
    else:
        import pymysql

        from devmesh_core.store.mysql import MySQLLogStore

        args = MySQLLogStore.from_url(url)._connect_args
        conn = pymysql.connect(**args, charset="utf8mb4", autocommit=False)
        sql = MYSQL_INSERT
        begin = ""
    cur = conn.cursor()
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        if begin:
            cur.execute(begin)
        cur.executemany(sql, rows[i : i + batch])
        conn.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    return len(rows) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--backends", default="sqlite,mysql")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; best kept")
    args = parser.parse_args()
    # Time order, as shippers send (journal order); random order scatters every (…, ts) index.
    raw = sorted(make_events(args.events), key=lambda e: e["timestamp"])
    events = [LogEvent.model_validate(e) for e in raw]
    targets = {"sqlite": 60_000, "mysql": 30_000}
    print(f"{args.events:,} events, batches of {args.batch:,}, best of {args.rounds} rounds")
    print(
        f"{'backend':8} {'LogStore ev/s':>14} {'raw driver ev/s':>16} {'ratio':>7} {'target':>16}"
    )
    for backend in args.backends.split(","):
        best_store = best_raw = 0.0
        for _ in range(args.rounds):
            for kind in ("raw", "store"):
                if backend == "sqlite":
                    with tempfile.TemporaryDirectory() as tmp:
                        url = f"sqlite:///{tmp}/bench.db"
                        rate = (run_store if kind == "store" else run_raw)(url, events, args.batch)
                else:
                    with temp_mariadb() as url:
                        rate = (run_store if kind == "store" else run_raw)(url, events, args.batch)
                if kind == "store":
                    best_store = max(best_store, rate)
                else:
                    best_raw = max(best_raw, rate)
        ratio = best_store / best_raw
        target = targets[backend]
        verdict = "ok" if best_store >= target and ratio >= 0.7 else "MISSED"
        print(
            f"{backend:8} {best_store:14,.0f} {best_raw:16,.0f} {ratio:7.2f} "
            f"{f'>={target:,} & >=0.70':>16} {verdict}"
        )


if __name__ == "__main__":
    main()
