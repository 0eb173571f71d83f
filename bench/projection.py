"""Benchmark the projection of the log store into the knowledge graph.

Loads a SQLite store with ``--events`` synthetic events (default 1M) over ~2k templates, 50
services and 20 hosts, plus deployment events, then measures on a fresh embedded FalkorDB
server (owned: stopped at the end):

* a full projection (``Projector.rebuild``), reported as events/s of the store it covers
  (it reads the aggregated ``template_stats``, so its cost follows the number of places,
  not the number of events);
* an incremental pass after ``--increment`` (default 10k) new events, with no overlap
  (``lag=0``: the pass's own cost) and with the default 60 s overlap (what a pass right
  after a busy minute pays);
* the read of all deployment events, which a pass does whenever new ones arrive (a scan
  of ``logs`` while ``event_type`` has no index).

Events are stored with ``store.insert(events, templates)`` and synthetic template refs rather
than through the miner: mining 1M lines would take most of the run and is measured by
``bench/parsing.py``; the store maintains ``template_stats`` the same way either way.

    .venv/bin/python bench/projection.py [--events 1000000] [--increment 10000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import bisect
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synth import HOSTS, SERVICE_HOSTS, SERVICES
from devmesh_core.graph.falkordb import FalkorDBGraphStore
from devmesh_core.graph.projection import DEPLOYMENT_STATUS, Projector
from devmesh_core.graph.server import EmbeddedServer, ServerConfig
from devmesh_core.log import configure_logging
from devmesh_core.models import Level, LogEvent
from devmesh_core.store import LogStore, open_store

T0 = datetime(2026, 10, 1, tzinfo=UTC)
SPAN_US = 30 * 86_400 * 1_000_000
BATCH = 5_000
LEVELS = [Level.DEBUG, Level.INFO, Level.WARNING, Level.ERROR, Level.CRITICAL]


@dataclass(frozen=True, slots=True)
class Ref:
    """A template reference as the miner would hand it to the store."""

    template_id: str
    template: str


class Fleet:
    """~2k templates: 20 fleet-wide ones (sshd, kernel, …) any service may emit, the rest
    owned by one service each; template frequencies follow a Zipf-like curve."""

    def __init__(self, templates: int, rng: random.Random) -> None:
        self.rng = rng
        self.refs = [Ref(f"T{i:05d}", f"template {i} did <*> in <*> ms") for i in range(templates)]
        self.owner = {i: SERVICES[i % len(SERVICES)] for i in range(20, templates)}
        self.level = [rng.choices(LEVELS, weights=[10, 70, 12, 7, 1])[0] for _ in range(templates)]
        weights = [1.0 / (r + 1) ** 0.8 for r in range(templates)]
        total = 0.0
        self.cum = []
        for w in weights:
            total += w
            self.cum.append(total)

    def pick(self) -> int:
        return bisect.bisect_left(self.cum, self.rng.random() * self.cum[-1])

    def event(self, n: int, start_us: int) -> tuple[LogEvent, Ref]:
        i = self.pick()
        service = self.owner.get(i) or self.rng.choice(SERVICES)
        level = self.level[i] if self.rng.random() < 0.9 else self.rng.choice(LEVELS)
        # model_construct: the values are valid by construction, and validating a million
        # events would take a good part of the load
        event = LogEvent.model_construct(
            timestamp=T0 + timedelta(microseconds=start_us + self.rng.randrange(SPAN_US)),
            source="bench",
            service=service,
            host=self.rng.choice(SERVICE_HOSTS[service]),
            level=level,
            message=f"template {i} did {n} in {self.rng.randrange(5000)} ms",
        )
        return event, self.refs[i]


def deployment_events(count: int, rng: random.Random, start_us: int) -> list[tuple[LogEvent, Ref]]:
    """``count`` deployments, each a started and a succeeded/failed event."""
    out = []
    for d in range(count):
        service = rng.choice(SERVICES)
        at = T0 + timedelta(microseconds=start_us + rng.randrange(SPAN_US))
        corr = f"rollout-{start_us}-{d}"
        for kind, delay in (
            ("deployment_started", 0),
            ("deployment_succeeded" if rng.random() < 0.9 else "deployment_failed", 90),
        ):
            ref = Ref(f"D-{kind}", f"{kind} <*>")
            event = LogEvent(
                timestamp=at + timedelta(seconds=delay),
                source="event",
                service=service,
                host=rng.choice(SERVICE_HOSTS[service]),
                level=Level.INFO,
                message=f"{kind} {service}",
                event_type=kind,
                source_id=f"{corr}-{kind}",
                meta={
                    "correlation_id": corr,
                    "event_source": "ci",
                    "payload": {"version": f"1.{d}", "author": "bench"},
                },
            )
            out.append((event, ref))
    return out


def load(
    store: LogStore, fleet: Fleet, count: int, deployments: int, rng: random.Random, start_us: int
) -> float:
    """Insert ``count`` events (deployment events included) in batches; return seconds."""
    extra = deployment_events(deployments, rng, start_us)
    positions = sorted(rng.sample(range(count), len(extra))) if extra else []
    started = time.perf_counter()
    events: list[LogEvent] = []
    refs: list[Ref] = []
    k = 0
    for n in range(count):
        if k < len(positions) and positions[k] == n:
            event, ref = extra[k]
            k += 1
        else:
            event, ref = fleet.event(n, start_us)
        events.append(event)
        refs.append(ref)
        if len(events) == BATCH:
            store.insert(events, refs)
            events, refs = [], []
    if events:
        store.insert(events, refs)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--templates", type=int, default=2_000)
    parser.add_argument("--deployments", type=int, default=300)
    parser.add_argument("--increment", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: temp)")
    args = parser.parse_args()
    configure_logging("console", "WARNING")

    with tempfile.TemporaryDirectory(prefix="devmesh-bench-projection-") as tmp:
        work = args.dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rng = random.Random(7)
        fleet = Fleet(args.templates, rng)
        store = open_store(f"sqlite:///{work / 'bench.db'}")
        server = EmbeddedServer(ServerConfig(directory=work / "graph"), owned=True)
        try:
            print(
                f"loading {args.events:,} events ({args.templates} templates, "
                f"{len(SERVICES)} services, {len(HOSTS)} hosts, {args.deployments} deployments)"
            )
            seconds = load(store, fleet, args.events, args.deployments, rng, 0)
            places = len(store.template_places_since(0))
            print(
                f"  stored in {seconds:.1f}s ({args.events / seconds:,.0f} events/s); "
                f"{store.template_count()} templates, {places:,} places"
            )
            graph = FalkorDBGraphStore.embedded(server, graph="bench")
            graph.ensure_schema()
            projector = Projector(store, graph, lag=timedelta(0))

            full = projector.rebuild()
            stats = graph.stats()
            print(
                f"full projection: {full.seconds:.2f}s = {args.events / full.seconds:,.0f} "
                f"events/s ({full.places:,} places -> {full.templates} templates, "
                f"{full.emits} emits, {full.runs_on} runs-on, {full.deployments} deployments)"
            )
            print(f"  graph: {stats.total_nodes:,} nodes, {stats.total_edges:,} edges")
            # settle the one-pass deployment overlap so the increments measure themselves
            projector.run_once()

            results: list[tuple[str, Any]] = []
            for label, lag in (("no overlap", 0), ("60 s overlap", 60)):
                new_fleet = Fleet(args.templates + 20, rng)  # a few new templates appear
                load(store, new_fleet, args.increment, 3, rng, SPAN_US)
                step = Projector(store, graph, lag=timedelta(seconds=lag)).run_once()
                results.append((label, step))
                print(
                    f"incremental after {args.increment:,} new events ({label}): "
                    f"{step.seconds * 1000:.0f} ms ({step.places:,} places read, "
                    f"{step.templates} templates, {step.emits} emits, "
                    f"{step.deployments} deployments written)"
                )
            started = time.perf_counter()
            found = 0
            last = 0
            while True:
                page = store.events_of_types(sorted(DEPLOYMENT_STATUS), after_id=last, limit=5_000)
                found += len(page)
                if len(page) < 5_000:
                    break
                last = page[-1].id
            print(
                f"reading all {found} deployment events: "
                f"{(time.perf_counter() - started) * 1000:.0f} ms (part of a pass with new ones)"
            )
            graph.close()
        finally:
            store.close()
            server.close()


if __name__ == "__main__":
    main()
