"""Scale-out ingest: 1 vs 2 API workers sharing one template miner through Redis, on MariaDB.

    python bench/scale_out.py [--events 100000] [--batch 1000] [--concurrency 2] [--rounds 1]

Each configuration runs real ``devmesh serve`` processes on a fresh MariaDB database and a
fresh Redis key, and a lean load client (``http.client`` threads, pre-serialised batches,
``--concurrency`` requests in flight per worker, batches dealt round-robin to the workers as
a load balancer would). Configurations:

* ``file miner, 1 worker``  — the default miner (state file under the data dir), for reference;
* ``shared miner, 1 worker`` — the same with ``DEVMESH_MINER_URL`` (the cost of Redis);
* ``shared miner, 2 workers`` — two processes behind the "balancer", one MariaDB, one Redis.

A 503 (a MariaDB deadlock between the workers' transactions) is retried as a shipper would,
and counted. Afterwards every event must be in the database exactly once with a template.
Everything shares this machine's cores (workers, client, MariaDB, Redis): on 2 cores a second
worker cannot double the rate; the figure shows what sharing the miner costs and what a second
process buys here.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import httpx
import orjson
import redis

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest_http import batch_bodies, ingest_connection, post_batch, run_threads
from bench.synth import make_events, temp_mariadb
from devmesh_core.store import open_store
from tests.conftest import start_server

REDIS_URL = "redis://127.0.0.1:6379/0"


def start(
    data_dir: Path, db_url: str, miner_key: str | None
) -> tuple[subprocess.Popen[bytes], str]:
    env = {
        "DEVMESH_LOG_LEVEL": "WARNING",
        "DEVMESH_DATABASE_URL": db_url,
        "DEVMESH_VECTORS_ENABLED": "false",
        "DEVMESH_GRAPH_ENABLED": "false",
    }
    if miner_key is not None:
        env["DEVMESH_MINER_URL"] = REDIS_URL
        env["DEVMESH_MINER_KEY"] = miner_key
    return start_server(data_dir, env=env)


def load(bases: list[str], bodies: list[bytes], concurrency: int) -> tuple[float, int, int, int]:
    """Deal ``bodies`` round-robin to the workers, ``concurrency`` connections per worker;
    return elapsed seconds, accepted, duplicates and 503 retries."""
    queues: list[Queue[bytes]] = [Queue() for _ in bases]
    for i, body in enumerate(bodies):
        queues[i % len(bases)].put(body)
    totals = [0, 0, 0]
    lock = threading.Lock()
    failures: list[str] = []

    def client(base: str, queue: Queue[bytes]) -> None:
        conn = ingest_connection(base)
        while True:
            try:
                body = queue.get_nowait()
            except Empty:
                break
            for attempt in range(20):
                status, data = post_batch(conn, body)
                if status != 503:
                    break
                with lock:
                    totals[2] += 1
                time.sleep(0.02 * (attempt + 1))
            if status != 200:
                failures.append(f"{status}: {data}")
                break
            with lock:
                totals[0] += data["accepted"]
                totals[1] += data["duplicates"]
        conn.close()

    threads = [
        threading.Thread(target=client, args=(base, queue))
        for base, queue in zip(bases, queues, strict=True)
        for _ in range(concurrency)
    ]
    elapsed = run_threads(threads)
    if failures:
        raise SystemExit(f"ingest failed: {failures[0]}")
    return elapsed, totals[0], totals[1], totals[2]


def run_once(
    args: argparse.Namespace, bodies: list[bytes], workers: int, shared: bool
) -> dict[str, Any]:
    key = f"devmesh:bench:{uuid.uuid4().hex}" if shared else None
    client = redis.Redis.from_url(REDIS_URL)
    with tempfile.TemporaryDirectory() as tmp, temp_mariadb() as db_url:
        procs: list[subprocess.Popen[bytes]] = []
        bases: list[str] = []
        try:
            for n in range(workers):
                proc, base = start(Path(tmp) / f"node{n}", db_url, key)
                procs.append(proc)
                bases.append(base)
            warm = orjson.dumps(make_events(args.batch, seed=99))
            for base in bases:
                httpx.post(f"{base}/ingest/logs", content=warm, timeout=60).raise_for_status()
            elapsed, accepted, duplicates, retries = load(bases, bodies, args.concurrency)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
        with open_store(db_url) as store:
            rows, unmined = store.run(  # type: ignore[attr-defined]
                lambda cur: (
                    cur.execute("SELECT COUNT(*), SUM(template_id IS NULL) FROM logs"),
                    cur.fetchone(),
                )[1],
                write=False,
            )
            templates = store.template_count()
        writes = 0
        if key is not None:
            writes = int(client.hget(f"{{{key}}}:state", "writes") or 0)
            for name in client.scan_iter(match=f"{{{key}}}:*"):
                client.delete(name)
    assert accepted + duplicates == args.events, (accepted, duplicates)
    assert int(unmined or 0) == 0, f"{unmined} event(s) stored without a template"
    return {
        "rate": accepted / elapsed,
        "rows": int(rows),
        "templates": templates,
        "retries": retries,
        "writes": writes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=2, help="connections per worker")
    parser.add_argument("--rounds", type=int, default=1, help="repeat; the best run is kept")
    args = parser.parse_args()
    bodies = batch_bodies(args.events, args.batch)
    print(
        f"MariaDB store, events={args.events:,} batch={args.batch} "
        f"concurrency={args.concurrency} per worker"
    )
    configs = [
        ("file miner, 1 worker", 1, False),
        ("shared miner, 1 worker", 1, True),
        ("shared miner, 2 workers", 2, True),
    ]
    best: dict[str, dict[str, Any]] = {}
    for _ in range(args.rounds):
        for label, workers, shared in configs:
            got = run_once(args, bodies, workers, shared)
            if label not in best or got["rate"] > best[label]["rate"]:
                best[label] = got
    for label, _, _ in configs:
        got = best[label]
        print(
            f"{label:24}: {got['rate']:8,.0f} events/s  ({got['rows']:,} rows, "
            f"{got['templates']} templates, {got['writes']} shared-state writes, "
            f"{got['retries']} retried 503s)"
        )
    one, two = best["shared miner, 1 worker"]["rate"], best["shared miner, 2 workers"]["rate"]
    base = best["file miner, 1 worker"]["rate"]
    print(f"2 workers / 1 worker (shared miner): {two / one:.2f}x")
    print(f"shared miner vs file miner, 1 worker: {one / base - 1:+.1%}")


if __name__ == "__main__":
    main()
