"""Filtered query latency with 1M stored rows, on each LogStore adapter.

    python bench/query.py [--rows 1000000] [--repeat 200] [--backends sqlite,mysql]

Loads synthetic events (50 services, 20 hosts, 30 days, realistic level mix; each service on
one to three hosts, five on all) through the store's own insert, then times a mix of the
filters the API offers, each with random values, limit 100.
Target: p95 < 20 ms for filtered queries on both backends.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synth import HOSTS, SERVICE_HOSTS, SERVICES, make_events, percentile, temp_mariadb
from devmesh_core.models import Level, LogEvent
from devmesh_core.store import LogQuery, LogStore, open_store

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def load(store: LogStore, rows: int, chunk: int = 100_000) -> list[str]:
    """Insert ``rows`` events in time order; return some trace ids to look up."""
    traces: list[str] = []
    started = time.perf_counter()
    for part in range(0, rows, chunk):
        raw = make_events(min(chunk, rows - part), seed=part + 1)
        raw.sort(key=lambda e: e["timestamp"])
        events = [LogEvent.model_validate(e) for e in raw]
        traces.extend(e.trace_id for e in events[::997] if e.trace_id)
        for i in range(0, len(events), 5_000):
            store.insert(events[i : i + 5_000])
    print(f"  loaded {rows:,} rows in {time.perf_counter() - started:.0f} s")
    return traces


def query_mix(rng: random.Random, traces: list[str]) -> dict[str, Callable[[], LogQuery]]:
    def window(hours: int) -> tuple[datetime, datetime]:
        start = T0 + timedelta(seconds=rng.randrange(30 * 86400 - hours * 3600))
        return start, start + timedelta(hours=hours)

    def svc_level_time() -> LogQuery:
        start, end = window(6)
        return LogQuery(
            service=rng.choice(SERVICES), level=Level.ERROR, start_time=start, end_time=end
        )

    def time_only() -> LogQuery:
        start, end = window(1)
        return LogQuery(start_time=start, end_time=end)

    def service_host() -> LogQuery:
        service = rng.choice(SERVICES)
        return LogQuery(service=service, host=rng.choice(SERVICE_HOSTS[service]))

    return {
        "latest": lambda: LogQuery(),
        "service": lambda: LogQuery(service=rng.choice(SERVICES)),
        "service+level>=ERROR": lambda: LogQuery(service=rng.choice(SERVICES), level=Level.ERROR),
        "host+level>=WARNING": lambda: LogQuery(host=rng.choice(HOSTS), level=Level.WARNING),
        "level>=CRITICAL": lambda: LogQuery(level=Level.CRITICAL),
        "time window 1h": time_only,
        "service+ERROR+6h": svc_level_time,
        "service+host": service_host,
        "trace_id": lambda: LogQuery(trace_id=rng.choice(traces)),
        "service+text": lambda: LogQuery(service=rng.choice(SERVICES), text="connection refused"),
    }


def bench_backend(store: LogStore, rows: int, repeat: int) -> list[float]:
    traces = load(store, rows)
    rng = random.Random(7)
    overall: list[float] = []
    print(f"  {'query':24} {'p50 ms':>8} {'p95 ms':>8} {'rows':>6}")
    for name, make in query_mix(rng, traces).items():
        timings = []
        returned = 0
        for _ in range(repeat):
            q = make()
            t = time.perf_counter()
            page = store.query(q)
            if page.next and name == "service":  # also time the second page (keyset)
                store.query(LogQuery(service=q.service, cursor=page.next))
            timings.append((time.perf_counter() - t) * 1000)
            returned += len(page.events)
        overall.extend(timings)
        print(
            f"  {name:24} {percentile(timings, 50):8.2f} {percentile(timings, 95):8.2f} "
            f"{returned / repeat:6.0f}"
        )
    t = time.perf_counter()
    store.count(LogQuery(service=SERVICES[0], level=Level.ERROR))
    print(f"  count(service, >=ERROR)  {(time.perf_counter() - t) * 1000:8.2f} ms")
    return overall


def buffer_pool_mb(store: LogStore) -> int:
    """The server's InnoDB buffer pool: whether 1M rows and their indexes fit in it decides
    whether a filter that reads rows (text) hits memory or the disk cache."""

    def read(cur: Any) -> int:
        cur.execute("SELECT @@innodb_buffer_pool_size")
        return int(cur.fetchone()[0]) // (1024 * 1024)

    return int(store.run(read, write=False))  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--backends", default="sqlite,mysql")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        print(f"{backend}: {args.rows:,} rows, {args.repeat} queries per kind, limit 100")
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp, open_store(f"sqlite:///{tmp}/q.db") as store:
                overall = bench_backend(store, args.rows, args.repeat)
        else:
            with temp_mariadb() as url, open_store(url) as store:
                print(f"  server: InnoDB buffer pool {buffer_pool_mb(store)} MB")
                overall = bench_backend(store, args.rows, args.repeat)
        p95 = percentile(overall, 95)
        print(
            f"  ALL p50 {percentile(overall, 50):.2f} ms, p95 {p95:.2f} ms "
            f"(target p95 < 20 ms: {'ok' if p95 < 20 else 'MISSED'})"
        )


if __name__ == "__main__":
    main()
