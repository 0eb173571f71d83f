"""Projection of real stores (SQLite, MariaDB) into the real embedded FalkorDB."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from devmesh.cli.main import app
from devmesh_core import services
from devmesh_core.graph import Covers, IncidentNode, Involves, RunbookNode
from devmesh_core.graph.falkordb import FalkorDBGraphStore
from devmesh_core.graph.projection import META_KEY, Projector, Watermark
from devmesh_core.graph.server import EmbeddedServer
from devmesh_core.graph.topology import CooccurrenceSettings, parse_topology
from devmesh_core.reason.runbooks import bundled_runbooks_dir, lint_runbooks
from devmesh_core.store import LogStore, open_store
from devmesh_core.templates import MinerConfig, SignatureMiner

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
USERS = ["alice", "bob", "carol", "dave", "erin", "frank"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    s = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    yield s
    s.close()


def _log(i: int, service: str, host: str, level: str, message: str, **kw: Any) -> dict[str, Any]:
    return {
        "timestamp": (T0 + timedelta(seconds=i)).isoformat(),
        "service": service,
        "host": host,
        "level": level,
        "message": message,
        **kw,
    }


def _deploy(
    i: int, kind: str, service: str, corr: str | None, version: str, at: datetime | None = None
) -> dict[str, Any]:
    return {
        "timestamp": (at or T0 + timedelta(seconds=i)).isoformat(),
        "source": "event",
        "service": service,
        "host": "h1",
        "level": "info",
        "message": f"{kind} {service}",
        "event_type": kind,
        "source_id": f"{kind}-{service}-{i}-{uuid.uuid4().hex[:6]}",
        "meta": {
            "correlation_id": corr,
            "event_source": "ci",
            "payload": {"version": version, "author": "ops"},
        },
    }


def increments() -> list[list[dict[str, Any]]]:
    """Four batches over three services and two hosts, with a template merge in the last
    (the fifth distinct user makes the miner fold four templates into one) and a deployment
    whose events span two batches."""
    batches: list[list[dict[str, Any]]] = []
    for n in range(4):
        batch = [
            _log(n * 100 + i, "web", f"h{1 + i % 2}", "info", f"GET /items/{i * 7 + n} 200")
            for i in range(6)
        ]
        batch += [
            _log(n * 100 + 10 + i, "db", "h2", "error", f"connection refused from 10.0.0.{i + n}")
            for i in range(3)
        ]
        batch.append(
            _log(n * 100 + 20, "auth", "h1", "info", f"Accepted publickey for {USERS[n]} via ssh")
        )
        batches.append(batch)
    batches[-1].append(
        _log(390, "auth", "h2", "warning", f"Accepted publickey for {USERS[4]} via ssh")
    )
    batches[0].append(_deploy(50, "deployment_started", "web", "rollout-1", "1.2.0"))
    batches[1].append(_deploy(150, "deployment_succeeded", "web", "rollout-1", "1.2.0"))
    batches[2].append(_deploy(250, "deployment_failed", "db", None, "15.2"))
    return batches


def snapshot(graph: FalkorDBGraphStore) -> dict[str, Any]:
    """Everything the projection writes, in comparable form."""
    rows = graph._rows
    return {
        "stats": graph.stats(),
        "emits": sorted(
            map(
                tuple,
                rows(
                    "MATCH (s:Service)-[e:EMITS]->(t:Template) "
                    "RETURN s.name, t.signature, e.count, e.last_seen"
                ),
            )
        ),
        "templates": sorted(
            map(
                tuple,
                rows(
                    "MATCH (t:Template) RETURN t.signature, t.text, t.level, t.first_seen, t.count"
                ),
            )
        ),
        "runs_on": sorted(
            map(
                tuple,
                rows("MATCH (s:Service)-[e:RUNS_ON]->(h:Host) RETURN s.name, h.name, e.last_seen"),
            )
        ),
        "deployments": sorted(
            map(
                tuple,
                rows(
                    "MATCH (d:Deployment)-[:OF]->(s:Service) RETURN d.id, s.name, d.at, d.status, "
                    "d.version, d.author, d.started_at, d.finished_at"
                ),
            )
        ),
        "depends": sorted(
            map(
                tuple,
                rows(
                    "MATCH (a:Service)-[d:DEPENDS_ON]->(b:Service) "
                    "RETURN a.name, b.name, d.source, d.confidence"
                ),
            )
        ),
    }


def store_emits(store: LogStore) -> dict[tuple[str, str], int]:
    """EMITS counts as the store has them: summed over hosts and levels."""
    out: dict[tuple[str, str], int] = {}
    for place in store.template_places_since(0):
        key = (place.service, place.template_id)
        out[key] = out.get(key, 0) + place.count
    return out


def graph_emits(graph: FalkorDBGraphStore) -> dict[tuple[str, str], int]:
    rows = graph._rows(
        "MATCH (s:Service)-[e:EMITS]->(t:Template) RETURN s.name, t.signature, e.count"
    )
    return {(s, t): int(n) for s, t, n in rows}


# ---------------------------------------------------------------------------- projection


def test_incremental_passes_equal_a_rebuild(store_url: str, graph: FalkorDBGraphStore) -> None:
    store = open_store(store_url)
    try:
        miner = SignatureMiner(config=MinerConfig(min_distinct=5))
        projector = Projector(store, graph)
        reports = []
        for batch in increments():
            report = services.ingest(store, batch, default_source="test", miner=miner)
            assert not report.rejected
            reports.append(projector.run_once())
        assert reports[0].mode == "full" and reports[-1].mode == "incremental"
        # the fifth user folds the logins into alice's template: bob's and carol's nodes go
        # (dave's template was born and folded within the last batch, never stored)
        assert reports[-1].merged == 2
        incremental = snapshot(graph)
        assert graph_emits(graph) == store_emits(store)

        rebuilt = projector.rebuild()
        assert rebuilt.mode == "rebuild"
        assert snapshot(graph) == incremental
    finally:
        store.close()

    stats = incremental["stats"]
    assert stats.nodes["Service"] == 3 and stats.nodes["Host"] == 2
    assert stats.nodes["Deployment"] == 2 and stats.edges["OF"] == 2
    auth = [(s, t, n) for s, t, n, _ in incremental["emits"] if s == "auth"]
    assert len(auth) == 1 and auth[0][2] == 5  # one template, the five logins
    deployments = {row[0]: row for row in incremental["deployments"]}
    web = deployments["web/rollout-1"]
    assert web[3] == "succeeded" and web[4] == "1.2.0" and web[5] == "ops"
    assert web[2] == web[6] < web[7]  # at = the start; finished later


def test_passes_are_idempotent_and_read_only_what_changed(
    store: LogStore, graph: FalkorDBGraphStore
) -> None:
    miner = SignatureMiner()
    batches = increments()
    services.ingest(store, batches[0], miner=miner)
    projector = Projector(store, graph, lag=timedelta(0))
    first = projector.run_once()
    assert first.places > 0 and first.templates > 0
    before = snapshot(graph)
    again = projector.run_once()
    assert (again.places, again.templates, again.deployments) == (0, 0, 1)  # one pass overlap
    assert snapshot(graph) == before
    assert projector.run_once().deployments == 0

    # with the default lag the same pass re-reads the last minute: same graph all the same
    overlapping = Projector(store, graph).run_once()
    assert overlapping.places == first.places
    assert snapshot(graph) == before

    services.ingest(store, batches[1], miner=miner)
    step = projector.run_once()
    changed = {p.template_id for p in store.template_places_since(first.watermark.places_us)}
    assert step.templates == len(changed)
    assert graph_emits(graph) == store_emits(store)
    mark = projector.watermark()
    assert mark is not None and mark.places_us == step.watermark.places_us


def test_rebuild_clears_the_watermark_and_starts_from_zero(
    store: LogStore, graph: FalkorDBGraphStore
) -> None:
    services.ingest(store, increments()[0], miner=SignatureMiner())
    projector = Projector(store, graph)
    projector.run_once()
    assert projector.watermark() is not None
    graph.clear()
    assert projector.watermark() is None
    report = projector.run_once()
    assert report.mode == "full" and report.templates > 0
    graph.set_meta(META_KEY, {**Watermark(format=999).to_meta()})
    assert projector.run_once().mode == "full"  # a watermark of another format is not trusted


def test_a_merge_moves_incidents_and_runbooks_to_the_survivor(
    store: LogStore, graph: FalkorDBGraphStore
) -> None:
    miner = SignatureMiner(config=MinerConfig(min_distinct=5))
    projector = Projector(store, graph)
    for i, user in enumerate(USERS[:4]):
        line = _log(i, "auth", "h1", "info", f"Accepted publickey for {user} via ssh")
        services.ingest(store, [line], miner=miner)
    projector.run_once()
    by_text = {t.template: t.template_id for t in store.list_templates(service="auth")}
    assert len(by_text) == 4
    doomed = by_text["Accepted publickey for carol via ssh"]
    graph.upsert(
        [
            IncidentNode("inc-1", title="ssh storm"),
            Involves("inc-1", "Template", doomed),
            RunbookNode("rb-ssh", title="ssh"),
            Covers("rb-ssh", "Template", doomed),
        ]
    )
    services.ingest(
        store, [_log(9, "auth", "h1", "info", "Accepted publickey for erin via ssh")], miner=miner
    )
    report = projector.run_once()
    assert report.merged == 3
    survivor = miner.resolve_id(doomed)
    assert survivor != doomed
    signatures = {row[0] for row in graph._rows("MATCH (t:Template) RETURN t.signature")}
    assert doomed not in signatures and survivor in signatures
    assert [inc.id for inc in graph.recall(signature=survivor)] == ["inc-1"]
    hood = graph.neighbourhood("auth")
    assert [t.signature for t in hood.templates] == [survivor]
    assert hood.templates[0].count == 5
    assert [r.id for r in hood.runbooks] == ["rb-ssh"]
    assert projector.run_once().merged == 0  # folding again is a no-op


def test_deployments_fold_whatever_order_their_events_arrive_in(
    store: LogStore, graph: FalkorDBGraphStore
) -> None:
    projector = Projector(store, graph, lag=timedelta(0))
    start, end = T0, T0 + timedelta(minutes=3)
    # an offline node delivers the success first and the start a pass later
    services.ingest(store, [_deploy(0, "deployment_succeeded", "api", "r9", "2.0", at=end)])
    projector.run_once()
    services.ingest(store, [_deploy(0, "deployment_started", "api", "r9", "2.0", at=start)])
    # one rollout, one correlation id, two services: two deployments
    services.ingest(
        store,
        [
            _deploy(1, "deployment_started", "web", "multi", "3"),
            _deploy(2, "deployment_started", "db", "multi", "3"),
            _deploy(3, "deployment_failed", "db", "multi", "3"),
        ],
    )
    projector.run_once()
    rows = graph._rows(
        "MATCH (d:Deployment)-[:OF]->(s:Service) RETURN d.id, s.name, d.status, d.at, d.version"
    )
    found = {r[0]: r[1:] for r in rows}
    assert found["api/r9"][:2] == ["api", "succeeded"]
    assert found["api/r9"][2] == int(start.timestamp() * 1000)
    assert found["web/multi"][1] == "started" and found["db/multi"][1] == "failed"
    recent = graph.recent_deployments("api", T0 - timedelta(days=1), depth=0)
    assert [(d.id, d.version) for d in recent] == [("api/r9", "2.0")]


# ---------------------------------------------------------------------------- dependencies


TOPOLOGY = """
services:
  web:
    kind: http
    depends_on: [api, cache]
  api:
    depends_on: db
"""


def test_topology_edges_are_replaced_not_accumulated(
    store: LogStore, graph: FalkorDBGraphStore
) -> None:
    first = Projector(store, graph, topology=parse_topology(TOPOLOGY))
    assert first.run_once().config_dependencies == 3
    hood = graph.neighbourhood("web")
    assert hood.kind == "http"
    assert [(d.service, d.confidence, d.sources) for d in hood.depends_on] == [
        ("api", 1.0, ("config",)),
        ("cache", 1.0, ("config",)),
    ]
    edited = TOPOLOGY.replace("[api, cache]", "[api]")
    report = Projector(store, graph, topology=parse_topology(edited)).run_once()
    assert report.removed_dependencies == 1
    assert [d.service for d in graph.neighbourhood("web").depends_on] == ["api"]
    # a pass without the file leaves the config edges alone
    Projector(store, graph).run_once()
    assert [d.service for d in graph.neighbourhood("api").depends_on] == ["db"]


def _episodes(now: datetime) -> list[dict[str, Any]]:
    """postgres fails every ~3 h; app's errors follow 20-40 s later; cron fails on its own
    schedule, far from both; a little noise from app without postgres."""
    out: list[dict[str, Any]] = []
    base = now - timedelta(days=2)
    for k in range(8):
        t = base + timedelta(hours=3 * k, minutes=k)
        for j in range(3):
            out.append(_at(t + timedelta(seconds=j), "postgres", f"FATAL: too many clients {j}"))
        for j in range(4):
            out.append(_at(t + timedelta(seconds=20 + k + 5 * j), "app", f"db timeout {j}"))
        out.append(_at(t + timedelta(minutes=70 + 3 * k), "cron", f"job {k} failed"))
    out.append(_at(base + timedelta(hours=40), "app", "db timeout x"))
    return out


def _at(when: datetime, service: str, message: str) -> dict[str, Any]:
    return {
        "timestamp": when.isoformat(),
        "service": service,
        "host": "h1",
        "level": "error",
        "message": message,
    }


def test_cooccurrence_proposes_the_upstream_and_never_overrides_config(
    store: LogStore, graph: FalkorDBGraphStore
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    services.ingest(store, _episodes(now))
    settings = CooccurrenceSettings()
    report = Projector(store, graph, cooccurrence=settings).run_once(now=now)
    assert report.proposed_dependencies == 1
    app_deps = graph.neighbourhood("app").depends_on
    assert [(d.service, d.sources) for d in app_deps] == [("postgres", ("cooccurrence",))]
    assert 0.5 <= app_deps[0].confidence <= settings.max_confidence
    assert graph.neighbourhood("postgres").depends_on == ()  # no reverse edge
    assert graph.neighbourhood("cron").depends_on == ()
    assert graph.neighbourhood("cron").dependents == ()

    # not due again within the interval; forced, it still finds the same
    assert (
        Projector(store, graph, cooccurrence=settings).run_once(now=now).proposed_dependencies
        is None
    )
    # the file says the opposite direction: the proposal goes, the declared edge stays
    declared = parse_topology("services:\n  postgres:\n    depends_on: [app]\n")
    again = Projector(store, graph, topology=declared, cooccurrence=settings)
    assert again.run_once(now=now, propose=True).proposed_dependencies == 0
    assert graph.neighbourhood("app").depends_on == ()
    assert [(d.service, d.sources) for d in graph.neighbourhood("postgres").depends_on] == [
        ("app", ("config",))
    ]
    # and with the config edge already in the graph, a projector without the file agrees
    plain = Projector(store, graph, cooccurrence=settings)
    assert plain.run_once(now=now, propose=True).proposed_dependencies == 0


# ---------------------------------------------------------------------------- CLI


def test_cli_project_show_tree_and_dot(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    graph_server: EmbeddedServer,
    graph: FalkorDBGraphStore,
) -> None:
    info = graph_server.ensure_running()
    monkeypatch.setenv("DEVMESH_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("DEVMESH_DATABASE_URL", raising=False)
    monkeypatch.setenv(
        "DEVMESH_GRAPH_URL", f"redis://:{info.password}@{info.host}:{info.port}/{graph.graph_name}"
    )
    monkeypatch.setenv("DEVMESH_LOG_FORMAT", "json")
    store = open_store(f"sqlite:///{tmp_path / 'state' / 'devmesh.db'}")
    now = datetime.now(UTC)
    services.ingest(
        store,
        [
            {**_at(now - timedelta(minutes=5), "web", 'upstream "api" timed out'), "host": "h1"},
            _deploy(0, "deployment_succeeded", "web", "r1", "4.2", at=now - timedelta(hours=1)),
        ],
        miner=SignatureMiner(),
    )
    store.close()
    topology = tmp_path / "topology.yaml"
    topology.write_text(
        "services:\n  web:\n    depends_on: [api]\n  edge:\n    depends_on: [web]\n"
    )
    runner = CliRunner()

    result = runner.invoke(app, ["graph", "project", "--topology", str(topology), "--no-propose"])
    assert result.exit_code == 0, result.output
    assert "full:" in result.output and "2 config dependencies" in result.output
    bundled = len(lint_runbooks(bundled_runbooks_dir())[0])
    assert bundled >= 10 and graph.stats().nodes["Runbook"] == bundled  # linked by the pass

    dot_file = tmp_path / "web.dot"
    result = runner.invoke(app, ["graph", "show", "web", "--dot", str(dot_file)])
    assert result.exit_code == 0, result.output
    for expected in ("depends on", "api", "dependents", "edge", "h1", "timed out", "4.2"):
        assert expected in result.output
    dot = dot_file.read_text()
    assert dot.startswith("digraph devmesh {") and dot.rstrip().endswith("}")
    assert '"service:web" -> "service:api" [label="DEPENDS_ON 1.00\\nconfig"];' in dot
    assert '"service:edge" -> "service:web"' in dot
    assert '"service:web" -> "host:h1" [label="RUNS_ON"];' in dot
    assert 'upstream \\"api\\" timed out' in dot  # quotes in a template are escaped
    assert '"deployment:web/r1" -> "service:web" [label="OF"];' in dot

    stdout = runner.invoke(app, ["graph", "show", "web", "--dot", "-"])
    assert stdout.exit_code == 0 and stdout.stdout == dot

    missing = runner.invoke(app, ["graph", "show", "nope"])
    assert missing.exit_code == 1 and "no service 'nope'" in missing.output

    graph.upsert([IncidentNode("inc-9", title="kept")])
    refused = runner.invoke(app, ["graph", "rebuild", "--no-propose"])
    assert refused.exit_code == 1 and "1 incident," in refused.output
    forced = runner.invoke(app, ["graph", "rebuild", "--no-propose", "--yes"])
    assert forced.exit_code == 0, forced.output
    assert "rebuild:" in forced.output
    assert graph.stats().nodes["Incident"] == 0
    assert graph.stats().nodes["Runbook"] == bundled  # cleared, then linked again
    # the config edges went with the clear, as the help says: no file, no config edges
    assert graph.neighbourhood("web").depends_on == ()
