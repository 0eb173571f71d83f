"""Benchmark the knowledge graph on the embedded FalkorDB server.

Builds a synthetic fleet of about 100k nodes (``--scale 1``): 20 hosts, 50 services,
~4.6k templates, 40k incidents, 30k fixes, 25k deployments, 200 runbooks, 100 actions,
with about 250k edges, in a fresh embedded server (owned: stopped at the end). Then it
measures the upsert rate per phase, p50/p95 of the reasoning layer's queries
(``neighbourhood`` and ``recall`` are the ones with a < 5 ms p50 target), and how long the
server takes to come back after a clean stop and after ``kill -9``.

    .venv/bin/python bench/graph.py [--scale 1.0] [--queries 300] [--dir DIR]
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import os
import random
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devmesh_core.graph import (
    ActionNode,
    Covers,
    DependsOn,
    DeploymentNode,
    Emits,
    FixRecord,
    GraphRecord,
    HostNode,
    IncidentNode,
    Involves,
    RunbookNode,
    RunsOn,
    ServiceNode,
    TemplateNode,
)
from devmesh_core.graph.falkordb import FalkorDBGraphStore
from devmesh_core.graph.server import EmbeddedServer, ServerConfig
from devmesh_core.log import configure_logging

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def sizes(scale: float) -> dict[str, int]:
    return {
        "hosts": 20,
        "services": 50,
        "templates": int(4_630 * scale),
        "incidents": int(40_000 * scale),
        "fixes": int(30_000 * scale),
        "deployments": int(25_000 * scale),
        "runbooks": 200,
        "actions": 100,
    }


class Zipf:
    """Ranks in [0, n) with P(rank r) proportional to 1/(r+1): a few templates recur in many
    incidents (the top one in ~11% of them), most in a handful."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.cum = list(itertools.accumulate(1.0 / (r + 1) for r in range(n)))

    def pick(self, rng: random.Random) -> int:
        return bisect.bisect_left(self.cum, rng.random() * self.cum[-1])


def build(rng: random.Random, n: dict[str, int]) -> dict[str, list[GraphRecord]]:
    services = [f"svc-{i:02d}" for i in range(n["services"])]
    hosts = [f"host-{i:02d}" for i in range(n["hosts"])]
    templates = [f"tpl-{i:05d}" for i in range(n["templates"])]
    owner = {t: rng.choice(services) for t in templates}
    phases: dict[str, list[GraphRecord]] = {}
    phases["hosts+services"] = [
        *(HostNode(h, address=f"10.0.0.{i}") for i, h in enumerate(hosts)),
        *(ServiceNode(s, kind=rng.choice(["http", "db", "queue", "batch"])) for s in services),
        *(RunsOn(s, h) for s in services for h in rng.sample(hosts, rng.randint(1, 3))),
        # A layered DAG plus some back edges (cycles happen in real fleets).
        *(
            DependsOn(s, d, round(rng.uniform(0.3, 1.0), 2), rng.choice(["traces", "config"]))
            for i, s in enumerate(services)
            for d in rng.sample(services[i + 1 :] or services, min(3, len(services[i + 1 :]) or 1))
        ),
        *(DependsOn(rng.choice(services), rng.choice(services), 0.3, "traces") for _ in range(10)),
    ]
    phases["templates"] = [
        TemplateNode(t, text=f"event {t} <*> failed after <*> ms", level="ERROR") for t in templates
    ]
    emits: list[GraphRecord] = []
    for t in templates:
        emitters = {owner[t], *(rng.choice(services) for _ in range(rng.randint(0, 2)))}
        for s in emitters:
            seen = NOW - timedelta(minutes=rng.randint(0, 60 * 24 * 30))
            emits.append(Emits(s, t, rng.randint(1, 5000), seen, absolute=True))
    phases["emits"] = emits
    incidents: list[GraphRecord] = []
    zipf = Zipf(len(templates))
    for i in range(n["incidents"]):
        iid = f"inc-{i:06d}"
        opened = NOW - timedelta(minutes=rng.randint(0, 60 * 24 * 365))
        # Only recent incidents are still open (a fleet has a handful open at a time).
        status = "open" if NOW - opened < timedelta(hours=12) else "resolved"
        incidents.append(IncidentNode(iid, title=f"incident {i}", status=status, opened_at=opened))
        picked = {templates[zipf.pick(rng)] for _ in range(rng.randint(1, 4))}
        for t in picked:
            incidents.append(Involves(iid, "Template", t))
        for s in {owner[t] for t in picked}:
            incidents.append(Involves(iid, "Service", s))
        if rng.random() < 0.3:
            incidents.append(Involves(iid, "Host", rng.choice(hosts)))
    phases["incidents"] = incidents
    phases["runbooks+actions+deployments"] = [
        *(
            RunbookNode(f"rb-{i:03d}", title=f"Runbook {i}", path=f"runbooks/{i}.md")
            for i in range(n["runbooks"])
        ),
        *(Covers(f"rb-{i:03d}", "Service", rng.choice(services)) for i in range(n["runbooks"])),
        *(Covers(f"rb-{i:03d}", "Template", rng.choice(templates)) for i in range(n["runbooks"])),
        *(
            ActionNode(f"action-{i:03d}", risk=rng.choice(["low", "medium", "high"]))
            for i in range(n["actions"])
        ),
        *(
            DeploymentNode(
                f"dep-{i:06d}",
                rng.choice(services),
                NOW - timedelta(minutes=rng.randint(0, 60 * 24 * 365)),
                version=f"1.{i % 97}.{i % 7}",
            )
            for i in range(n["deployments"])
        ),
    ]
    return phases


def fixes(rng: random.Random, n: dict[str, int]) -> list[FixRecord]:
    out = []
    for i in range(n["fixes"]):
        incident = rng.randrange(n["incidents"])
        out.append(
            FixRecord(
                f"inc-{incident:06d}",
                f"action-{rng.randrange(n['actions']):03d}",
                NOW - timedelta(minutes=rng.randint(0, 60 * 24 * 365)),
                outcome=rng.choice(["success", "success", "success", "failed"]),
                parameters={"unit": f"svc-{rng.randrange(n['services']):02d}.service"},
                approver=rng.choice(["alice", "bob", "carol"]),
                time_to_recover=timedelta(seconds=rng.randint(30, 7200)),
                fix_id=f"fix-{i:06d}",
            )
        )
    return out


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p50 = statistics.median(samples)
    p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
    return p50, p95, samples[-1]


def _load() -> str:
    """The 1-, 5- and 15-minute load averages, as ``uptime`` shows them."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def count(records: Sequence[GraphRecord]) -> int:
    return len(records)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument(
        "--dir", type=Path, default=None, help="graph directory (default: a temp dir)"
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    configure_logging("console", "WARNING")

    rng = random.Random(args.seed)
    n = sizes(args.scale)
    tmp = None
    if args.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="devmesh-graph-bench-")
        directory = Path(tmp.name) / "graph"
    else:
        directory = args.dir
    server = EmbeddedServer(ServerConfig(directory=directory), owned=True)
    try:
        start = time.perf_counter()
        server.ensure_running()
        print(f"server start: {(time.perf_counter() - start) * 1000:.0f} ms  ({directory})")
        store = FalkorDBGraphStore.embedded(server)
        store.clear()

        phases = build(rng, n)
        print(f"\nupserts (batches of {store.batch_size}):")
        total_records = 0
        total_time = 0.0
        for name, records in phases.items():
            start = time.perf_counter()
            result = store.upsert(records)
            elapsed = time.perf_counter() - start
            total_records += len(records)
            total_time += elapsed
            print(
                f"  {name:<30} {len(records):>8,} records  {elapsed:6.2f} s  "
                f"{len(records) / elapsed:>9,.0f} rec/s  (+{result.nodes_created:,} nodes, "
                f"+{result.relationships_created:,} edges)"
            )
        fix_list = fixes(rng, n)
        start = time.perf_counter()
        store.record_fixes(fix_list)
        elapsed = time.perf_counter() - start
        total_records += len(fix_list)
        total_time += elapsed
        print(
            f"  {'fixes (record_fixes)':<30} {len(fix_list):>8,} records  {elapsed:6.2f} s  "
            f"{len(fix_list) / elapsed:>9,.0f} rec/s"
        )
        print(
            f"  {'total':<30} {total_records:>8,} records  {total_time:6.2f} s  "
            f"{total_records / total_time:>9,.0f} rec/s"
        )

        # Idempotence at scale: the same static records again create nothing.
        start = time.perf_counter()
        again = store.upsert(phases["templates"])
        print(
            f"  re-upsert templates: +{again.nodes_created} nodes in "
            f"{time.perf_counter() - start:.2f} s"
        )
        start = time.perf_counter()
        delta = store.upsert(
            [
                Emits(
                    f"svc-{rng.randrange(n['services']):02d}",
                    f"tpl-{rng.randrange(n['templates']):05d}",
                    1,
                    NOW,
                )
                for _ in range(5_000)
            ]
        )
        elapsed = time.perf_counter() - start
        print(
            f"  5,000 Emits deltas (live projection): {elapsed:.2f} s "
            f"({5_000 / elapsed:,.0f} rec/s, {delta.batches} batches)"
        )

        stats = store.stats()
        print(f"\ngraph: {stats.total_nodes:,} nodes, {stats.total_edges:,} edges")
        print("  " + ", ".join(f"{k} {v:,}" for k, v in stats.nodes.items()))
        print("  " + ", ".join(f"{k} {v:,}" for k, v in stats.edges.items()))

        services = [f"svc-{i:02d}" for i in range(n["services"])]
        zipf = Zipf(n["templates"])
        hot = [f"tpl-{zipf.pick(rng):05d}" for _ in range(args.queries)]
        uniform = [f"tpl-{rng.randrange(n['templates']):05d}" for _ in range(args.queries)]
        q = args.queries
        cases: list[tuple[str, Callable[[], object]]] = [
            ("neighbourhood(service)", lambda: store.neighbourhood(rng.choice(services))),
            ("recall(signature) zipf", lambda: store.recall(signature=rng.choice(hot))),
            ("recall(signature) uniform", lambda: store.recall(signature=rng.choice(uniform))),
            (
                "recall(3 signatures, service)",
                lambda: store.recall(
                    signature=rng.sample(uniform, 3), service=rng.choice(services)
                ),
            ),
            ("recall(service)", lambda: store.recall(service=rng.choice(services))),
            ("blast_radius(service, 3)", lambda: store.blast_radius(rng.choice(services))),
            (
                "recent_deployments(7 days)",
                lambda: store.recent_deployments(rng.choice(services), NOW - timedelta(days=7)),
            ),
            ("stats()", store.stats),
        ]
        # The machine is shared: latencies mean little without the load they were taken at.
        print(f"\nqueries ({q} each, ms):            p50      p95      max   (load {_load()})")
        for name, fn in cases:
            fn()  # warm the plan cache
            p50, p95, worst = timed(fn, q if name != "stats()" else 20)
            print(f"  {name:<30} {p50:7.2f}  {p95:7.2f}  {worst:7.2f}")
        print(f"  load after the queries: {_load()}")
        store.close()

        # Coming back: clean stop (RDB + AOF saved) and a crash (AOF replay).
        info = server.ensure_running()
        start = time.perf_counter()
        server.stop()
        print(f"\nstop (SHUTDOWN SAVE): {(time.perf_counter() - start) * 1000:.0f} ms")
        start = time.perf_counter()
        info = server.ensure_running()
        print(f"start + load after clean stop: {(time.perf_counter() - start) * 1000:.0f} ms")
        store = FalkorDBGraphStore.embedded(server)
        store.upsert([Emits("svc-00", f"tpl-{i:05d}", 1, NOW) for i in range(2_000)])
        store.close()
        time.sleep(1.5)
        os.kill(info.pid, signal.SIGKILL)
        time.sleep(0.2)
        start = time.perf_counter()
        server.ensure_running()
        print(f"start + load after kill -9:     {(time.perf_counter() - start) * 1000:.0f} ms")
        size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
        print(f"data directory: {size / 1e6:.1f} MB")
    finally:
        server.close()
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
