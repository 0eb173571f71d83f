"""The FalkorDB GraphStore against the real embedded server (one graph key per test)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devmesh_core.errors import BackendUnavailable, InvalidInput
from devmesh_core.graph import (
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
    open_graph,
)
from devmesh_core.graph.base import to_millis
from devmesh_core.graph.falkordb import NODE_KEYS, FalkorDBGraphStore
from devmesh_core.graph.server import EmbeddedServer

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def fleet() -> list[GraphRecord]:
    """web → api → db, api → cache; two hosts; templates, incidents, runbooks, deploys."""
    return [
        HostNode("h1", address="10.0.0.1"),
        HostNode("h2"),
        ServiceNode("web", kind="http"),
        ServiceNode("api", kind="http"),
        ServiceNode("db", kind="postgres"),
        ServiceNode("cache"),
        RunsOn("web", "h1"),
        RunsOn("api", "h1", last_seen=T0),
        RunsOn("api", "h2"),
        RunsOn("db", "h2"),
        DependsOn("web", "api", 0.9, "traces"),
        DependsOn("api", "db", 1.0, "config"),
        DependsOn("api", "db", 0.7, "traces"),
        DependsOn("api", "cache", 0.4, "traces"),
        TemplateNode("s-conn", text="connection refused to <*>", level="ERROR", first_seen=T0),
        TemplateNode("s-slow", text="slow query <*> ms", level="WARNING"),
        TemplateNode("s-oom", text="out of memory", level="CRITICAL"),
        Emits("api", "s-conn", 10, T0),
        Emits("api", "s-slow", 3, T0 - timedelta(hours=2)),
        Emits("db", "s-slow", 7, T0),
        Emits("db", "s-oom", 1, T0 - timedelta(days=2)),
        IncidentNode("i-old", title="api cannot reach db", opened_at=T0 - timedelta(days=30)),
        IncidentNode("i-mid", title="db oom", opened_at=T0 - timedelta(days=10)),
        IncidentNode("i-now", title="api errors", severity="high", opened_at=T0),
        Involves("i-old", "Service", "api"),
        Involves("i-old", "Template", "s-conn"),
        Involves("i-old", "Template", "s-slow"),
        Involves("i-mid", "Service", "db"),
        Involves("i-mid", "Template", "s-oom"),
        Involves("i-mid", "Template", "s-slow"),
        Involves("i-now", "Service", "api"),
        Involves("i-now", "Template", "s-conn"),
        Involves("i-now", "Host", "h1"),
        RunbookNode("rb-api", title="API triage", path="runbooks/api.md"),
        RunbookNode("rb-conn", title="Connection refused", path="runbooks/conn.md"),
        Covers("rb-api", "Service", "api"),
        Covers("rb-conn", "Template", "s-conn"),
        DeploymentNode("dep-api-1", "api", T0 - timedelta(days=3), version="1.4.0"),
        DeploymentNode("dep-api-2", "api", T0 - timedelta(hours=5), version="1.5.0", author="bob"),
        DeploymentNode("dep-db-1", "db", T0 - timedelta(hours=1), version="16.2"),
        DeploymentNode("dep-web-1", "web", T0 - timedelta(hours=1), version="3.0"),
    ]


def test_schema_indexes_every_merge_key(graph: FalkorDBGraphStore) -> None:
    graph.ensure_schema()  # a second time is a no-op
    rows = graph._rows("CALL db.indexes() YIELD label, properties RETURN label, properties")
    indexed = {(label, prop) for label, props in rows for prop in props}
    assert set(NODE_KEYS.items()) <= indexed


def test_upsert_is_idempotent(graph: FalkorDBGraphStore) -> None:
    static = [r for r in fleet() if not isinstance(r, Emits)]
    first = graph.upsert(static)
    assert first.nodes_created == 18
    before = graph.stats()
    second = graph.upsert(static)
    assert second.nodes_created == 0
    assert second.relationships_created == 0
    assert graph.stats() == before
    assert before.nodes["Service"] == 4
    assert before.edges["DEPENDS_ON"] == 4  # api→db twice: one edge per source
    assert before.edges["OF"] == 4


def test_duplicates_in_one_call_are_folded(graph: FalkorDBGraphStore) -> None:
    # Merging one edge twice in a batch crashes FalkorDB 4.16; the adapter folds them.
    result = graph.upsert(
        [
            ServiceNode("api", kind="old"),
            ServiceNode("api", kind="http", props={"team": "core"}),
            Emits("api", "s1", 2, T0),
            Emits("api", "s1", 3, T0 + timedelta(minutes=5)),
            Emits("api", "s1", 1, T0 - timedelta(minutes=5)),
            RunsOn("api", "h1"),
            RunsOn("api", "h1"),
            Involves("i1", "Service", "api"),
            Involves("i1", "Service", "api"),
        ]
    )
    assert result.nodes_created == 4  # api, s1, h1, i1
    graph.ping()
    hood = graph.neighbourhood("api")
    assert hood.kind == "http"
    assert [(t.signature, t.count, t.last_seen) for t in hood.templates] == [
        ("s1", 6, T0 + timedelta(minutes=5))
    ]
    props = graph._rows("MATCH (s:Service {name: 'api'}) RETURN s.kind, s.team")
    assert props == [["http", "core"]]


def test_emits_deltas_add_and_absolutes_replace(graph: FalkorDBGraphStore) -> None:
    graph.upsert([Emits("api", "s1", 5, T0)])
    graph.upsert([Emits("api", "s1", 2, T0 - timedelta(hours=1))])  # older: last_seen stays
    (tmpl,) = graph.neighbourhood("api").templates
    assert (tmpl.count, tmpl.last_seen) == (7, T0)

    resync = [Emits("api", "s1", 40, T0, absolute=True)]
    graph.upsert(resync)
    graph.upsert(resync)  # absolute counts are idempotent
    assert graph.neighbourhood("api").templates[0].count == 40

    graph.upsert([Emits("api", "s1", 100, absolute=True), Emits("api", "s1", 1)])
    assert graph.neighbourhood("api").templates[0].count == 101  # absolute, then delta


def test_template_first_seen_only_moves_back(graph: FalkorDBGraphStore) -> None:
    graph.upsert([Emits("api", "s1", 1, T0)])  # creates the template with just its key
    graph.upsert([TemplateNode("s1", text="x", first_seen=T0)])
    graph.upsert([TemplateNode("s1", first_seen=T0 + timedelta(days=1))])
    graph.upsert([TemplateNode("s1", text="x <*>")])
    rows = graph._rows("MATCH (t:Template {signature: 's1'}) RETURN t.text, t.first_seen")
    assert rows == [["x <*>", to_millis(T0)]]
    graph.upsert([TemplateNode("s1", first_seen=T0 - timedelta(days=1))])
    rows = graph._rows("MATCH (t:Template {signature: 's1'}) RETURN t.first_seen")
    assert rows == [[to_millis(T0 - timedelta(days=1))]]


def test_reprojecting_an_incident_keeps_its_status(graph: FalkorDBGraphStore) -> None:
    graph.upsert([IncidentNode("i1", title="x", opened_at=T0), Involves("i1", "Service", "api")])
    assert [i.status for i in graph.neighbourhood("api").open_incidents] == ["open"]
    graph.record_fix(FixRecord("i1", "restart_unit", T0 + timedelta(minutes=3)))
    graph.upsert([IncidentNode("i1", title="x (renamed)")])
    assert graph.neighbourhood("api").open_incidents == ()
    (past,) = graph.recall(service="api")
    assert (past.title, past.status) == ("x (renamed)", "resolved")


def test_neighbourhood(graph: FalkorDBGraphStore) -> None:
    graph.upsert(fleet())
    hood = graph.neighbourhood("api")
    assert hood.known and hood.kind == "http"
    assert hood.hosts == ("h1", "h2")
    assert [(d.service, d.confidence, d.sources) for d in hood.depends_on] == [
        ("cache", 0.4, ("traces",)),
        ("db", 1.0, ("config", "traces")),
    ]
    assert [(d.service, d.confidence) for d in hood.dependents] == [("web", 0.9)]
    assert [t.signature for t in hood.templates] == ["s-conn", "s-slow"]  # most recent first
    assert hood.templates[0].count == 10 and hood.templates[0].level == "ERROR"
    assert [(i.id, i.status, i.severity) for i in hood.open_incidents] == [
        ("i-now", "open", "high"),
        ("i-old", "open", None),
    ]
    assert [(r.id, r.via) for r in hood.runbooks] == [
        ("rb-api", "service"),
        ("rb-conn", "template"),
    ]

    recent = graph.neighbourhood("api", templates=5, incidents=1, since=T0 - timedelta(hours=1))
    assert [t.signature for t in recent.templates] == ["s-conn"]
    assert [i.id for i in recent.open_incidents] == ["i-now"]

    unknown = graph.neighbourhood("nope")
    assert not unknown.known and unknown.hosts == () and unknown.templates == ()


def test_blast_radius(graph: FalkorDBGraphStore) -> None:
    graph.upsert(
        [
            *fleet(),
            DependsOn("edge", "web", 0.5),
            DependsOn("db", "web", 0.2),  # a cycle back through web
            DependsOn("batch", "db", 0.95),
        ]
    )
    radius = graph.blast_radius("db")
    assert [(i.service, i.depth, i.via) for i in radius] == [
        ("api", 1, "db"),
        ("batch", 1, "db"),
        ("web", 2, "api"),
        ("edge", 3, "web"),
    ]
    assert radius[0].confidence == 1.0  # the config edge, not the 0.7 traces one
    assert radius[2].confidence == 0.9
    assert [i.service for i in graph.blast_radius("db", max_depth=1)] == ["api", "batch"]
    assert [i.service for i in graph.blast_radius("db", min_confidence=0.92)] == ["api", "batch"]
    assert graph.blast_radius("nope") == []
    with pytest.raises(InvalidInput):
        graph.blast_radius("db", max_depth=0)


def test_recent_deployments(graph: FalkorDBGraphStore) -> None:
    graph.upsert(fleet())
    found = graph.recent_deployments("api", T0 - timedelta(days=1))
    assert [(d.id, d.service, d.depth) for d in found] == [
        ("dep-db-1", "db", 1),
        ("dep-api-2", "api", 0),
    ]
    assert found[1].version == "1.5.0" and found[1].author == "bob"
    assert found[1].at == T0 - timedelta(hours=5)
    assert [d.id for d in graph.recent_deployments("api", T0 - timedelta(days=7), depth=0)] == [
        "dep-api-2",
        "dep-api-1",
    ]
    assert graph.recent_deployments("api", T0 + timedelta(days=1)) == []


def test_record_fix_and_recall(graph: FalkorDBGraphStore) -> None:
    graph.upsert(fleet())
    fix = FixRecord(
        "i-old",
        "restart_unit",
        T0 - timedelta(days=30) + timedelta(minutes=8),
        parameters={"unit": "api.service", "host": "h1"},
        approver="alice",
        time_to_recover=timedelta(minutes=11),
        notes="pool exhausted",
    )
    fix_id = graph.record_fix(fix)
    assert graph.record_fix(fix) == fix_id  # same fix again: no duplicate
    graph.record_fix(
        FixRecord(
            "i-old",
            "clear_cache",
            T0 - timedelta(days=30) + timedelta(minutes=2),
            outcome="failed",
            approver="bob",
        )
    )
    assert graph.stats().nodes["Fix"] == 2
    assert graph.stats().nodes["Action"] == 2

    past = graph.recall(signature=["s-conn", "s-slow"], service="api", exclude=["i-now"])
    assert [p.id for p in past] == ["i-old", "i-mid"]  # two signatures match, then one
    old = past[0]
    assert old.status == "resolved"
    assert old.resolved_at == T0 - timedelta(days=30) + timedelta(minutes=19)
    assert old.matched_signatures == ("s-conn", "s-slow") and old.involves_service
    assert old.services == ("api",)
    assert [(f.action, f.outcome) for f in old.fixes] == [
        ("restart_unit", "success"),
        ("clear_cache", "failed"),
    ]
    best = old.fixes[0]
    assert best.id == fix_id
    assert best.parameters == {"host": "h1", "unit": "api.service"}
    assert best.approver == "alice" and best.notes == "pool exhausted"
    assert best.time_to_recover == timedelta(minutes=11)
    assert past[1].matched_signatures == ("s-slow",) and not past[1].involves_service
    assert past[1].fixes == ()

    # By service only: newest first; the open incident is there unless excluded.
    assert [p.id for p in graph.recall(service="api")] == ["i-now", "i-old"]
    assert [p.id for p in graph.recall(signature="s-conn", limit=1)] == ["i-now"]
    # Signature matches rank before service-only matches.
    assert [p.id for p in graph.recall(signature="s-oom", service="api")] == [
        "i-mid",
        "i-now",
        "i-old",
    ]
    assert graph.recall(signature="unknown-signature") == []
    with pytest.raises(InvalidInput):
        graph.recall()


def test_clear_and_stats(graph: FalkorDBGraphStore) -> None:
    graph.upsert(fleet())
    stats = graph.stats()
    assert stats.total_nodes == 18 and stats.edges["INVOLVES"] == 9
    graph.clear()
    assert graph.stats().total_nodes == 0
    assert graph.stats().total_edges == 0
    test_schema_indexes_every_merge_key(graph)  # indexes are back
    graph.clear()  # clearing an empty graph is fine


def test_reads_on_a_graph_that_does_not_exist_yet(graph_server: EmbeddedServer) -> None:
    store = FalkorDBGraphStore.embedded(graph_server, graph="never_written")
    try:
        assert store.stats().total_nodes == 0
        assert not store.neighbourhood("api").known
        assert store.recall(service="api") == []
    finally:
        store.close()


def test_external_server_url(graph_server: EmbeddedServer, tmp_path: Path) -> None:
    info = graph_server.ensure_running()
    url = f"redis://:{info.password}@{info.host}:{info.port}/ext_test"
    store = open_graph(url, tmp_path)
    try:
        assert isinstance(store, FalkorDBGraphStore)
        assert store.server is None and store.graph_name == "ext_test"
        store.upsert([ServiceNode("api"), DependsOn("web", "api")])
        assert [i.service for i in store.blast_radius("api")] == ["web"]
        store.clear()
    finally:
        store.close()
    assert graph_server.running() == info  # closing an external store leaves servers alone

    with pytest.raises(BackendUnavailable, match="cannot connect"):
        open_graph(f"redis://:wrong@{info.host}:{info.port}/x", tmp_path)
    with pytest.raises(BackendUnavailable, match="cannot connect") as caught:
        open_graph("redis://:secret@127.0.0.1:1/x", tmp_path)
    assert "secret" not in str(caught.value)


def test_invalid_records_are_rejected_before_any_write(graph: FalkorDBGraphStore) -> None:
    with pytest.raises(InvalidInput):
        graph.upsert([ServiceNode("ok"), ServiceNode("bad", props={"not valid": 1})])
    with pytest.raises(InvalidInput):
        graph.upsert([ServiceNode("ok"), DependsOn("a", "b", confidence=1.5)])
    assert graph.stats().total_nodes == 0


def test_first_write_creates_the_schema(graph_server: EmbeddedServer) -> None:
    store = FalkorDBGraphStore.embedded(graph_server, graph="t_lazy_schema")
    try:
        store.upsert([ServiceNode("api")])
        rows = store._rows("CALL db.indexes() YIELD label, properties RETURN label, properties")
        assert ("Service", "name") in {(label, prop) for label, props in rows for prop in props}
    finally:
        store.clear()
        store._db.execute_command("GRAPH.DELETE", store.graph_name)
        store.close()


def test_record_fixes_in_bulk(graph: FalkorDBGraphStore) -> None:
    fixes = [
        FixRecord("i1", "restart_unit", T0, outcome="failed"),
        FixRecord(
            "i1", "rollback", T0 + timedelta(minutes=9), time_to_recover=timedelta(minutes=1)
        ),
        FixRecord("i1", "restart_unit", T0 + timedelta(minutes=5)),
        FixRecord("i2", "clear_disk", T0, parameters={"path": "/var/log"}),
        FixRecord("i2", "clear_disk", T0, parameters={"path": "/var/log"}),  # same fix twice
    ]
    ids = graph.record_fixes(fixes)
    assert len(ids) == 5 and ids[3] == ids[4] and len(set(ids)) == 4
    stats = graph.stats()
    assert stats.nodes["Fix"] == 4 and stats.nodes["Action"] == 3 and stats.nodes["Incident"] == 2
    assert stats.edges["RESOLVED_BY"] == 4 and stats.edges["USED"] == 4
    assert graph.recall(service="none-such", signature="none-such") == []
    graph.upsert([Involves("i1", "Service", "api"), Involves("i2", "Service", "api")])
    past = {p.id: p for p in graph.recall(service="api")}
    # The latest success sets resolved_at: rollback at +9 min, recovered a minute later.
    assert past["i1"].status == "resolved"
    assert past["i1"].resolved_at == T0 + timedelta(minutes=10)
    assert [f.action for f in past["i1"].fixes] == ["rollback", "restart_unit", "restart_unit"]
    assert past["i2"].fixes[0].parameters == {"path": "/var/log"}
    assert graph.neighbourhood("api").open_incidents == ()


def test_neighbourhood_of_a_bare_service(graph: FalkorDBGraphStore) -> None:
    graph.upsert([ServiceNode("lonely"), Emits("lonely", "s1", 1, T0)])
    hood = graph.neighbourhood("lonely", templates=0)
    assert hood.known and hood.kind is None
    assert hood.hosts == ()
    assert hood.depends_on == ()
    assert hood.dependents == ()
    assert hood.runbooks == ()
    assert hood.templates == ()
    assert hood.open_incidents == ()
    assert [t.signature for t in graph.neighbourhood("lonely").templates] == ["s1"]


def test_concurrent_writers_and_readers(graph: FalkorDBGraphStore) -> None:
    import threading

    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                graph.upsert([DependsOn(f"w{n}-{i}", "core"), Emits("core", f"s{n}", 1, T0)])
                graph.neighbourhood("core")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    hood = graph.neighbourhood("core")
    assert len(hood.dependents) == 80
    assert sorted((t.signature, t.count) for t in hood.templates) == [
        (f"s{n}", 20) for n in range(4)
    ]


# ---------------------------------------------------------------- reads against an oracle
# neighbourhood and recall are single queries built for speed (branches cut early, labels
# implied by edge types left out); these tests compare them with a plain Python reading of
# the same records, on small random graphs with ties, missing timestamps and exclusions.


def _random_history(seed: int) -> tuple[list[GraphRecord], dict[str, Any]]:
    """Incidents over a few services and templates, with tied and missing ``opened_at``."""
    rng = random.Random(seed)
    services = [f"svc{i}" for i in range(4)]
    templates = [f"sig{i}" for i in range(6)]
    records: list[GraphRecord] = [ServiceNode(s) for s in services]
    truth: dict[str, Any] = {"opened": {}, "services": {}, "templates": {}}
    for n in range(70):
        iid = f"inc-{n:03d}"
        # Few distinct times, so ties at the cut are common; some incidents have none.
        opened = None if rng.random() < 0.1 else T0 + timedelta(hours=rng.randrange(12))
        records.append(IncidentNode(iid, title=f"incident {n}", opened_at=opened))
        sigs = set(rng.sample(templates, rng.choice([0, 1, 1, 2, 3])))
        svcs = set(rng.sample(services, rng.choice([0, 1, 1, 2])))
        records += [Involves(iid, "Template", t) for t in sorted(sigs)]
        records += [Involves(iid, "Service", s) for s in sorted(svcs)]
        if rng.random() < 0.2:
            records.append(Involves(iid, "Host", "h1"))
        truth["opened"][iid] = to_millis(opened) if opened else 0
        truth["services"][iid] = svcs
        truth["templates"][iid] = sigs
    return records, truth


def _expected_recall(
    truth: dict[str, Any], sigs: list[str], service: str | None, limit: int, exclude: set[str]
) -> list[tuple[str, tuple[str, ...], bool]]:
    """The documented ranking: signatures matched, involves the service, newest, then id."""
    rows = []
    for iid, templates in truth["templates"].items():
        matched = tuple(sorted(templates & set(sigs)))
        involves = service is not None and service in truth["services"][iid]
        if iid in exclude or not (matched or involves):
            continue
        rows.append((iid, matched, involves))
    rows.sort(key=lambda r: (-len(r[1]), not r[2], -truth["opened"][r[0]], r[0]))
    return rows[:limit]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_recall_matches_the_documented_ranking(graph: FalkorDBGraphStore, seed: int) -> None:
    records, truth = _random_history(seed)
    graph.upsert(records)
    rng = random.Random(seed)
    ids = sorted(truth["opened"])
    for _ in range(60):
        sigs = rng.sample([f"sig{i}" for i in range(7)], rng.choice([0, 1, 1, 2, 3]))  # sig6: none
        service = rng.choice(["svc0", "svc1", "svc2", "svc3", "nope", None])
        if not sigs and service is None:
            service = "svc1"
        limit = rng.choice([1, 2, 5, 10, 100])
        exclude = set(rng.sample(ids, rng.choice([0, 0, 1, 5])))
        got = graph.recall(
            signature=sigs[0] if len(sigs) == 1 else sigs,
            service=service,
            limit=limit,
            exclude=exclude,
        )
        expected = _expected_recall(truth, sigs, service, limit, exclude)
        assert [(p.id, p.matched_signatures, p.involves_service) for p in got] == expected, (
            sigs,
            service,
            limit,
            sorted(exclude),
        )
        for past in got:
            assert past.services == tuple(sorted(truth["services"][past.id]))


def test_recall_service_incidents_fill_up_behind_signature_matches(
    graph: FalkorDBGraphStore,
) -> None:
    # The service-only candidates are looked at only when the signatures have fewer than
    # limit (+ excluded) incidents; both sides of that boundary.
    records: list[GraphRecord] = []
    for n in range(3):  # old incidents with the signature, elsewhere
        iid = f"sig-{n}"
        records += [
            IncidentNode(iid, opened_at=T0 - timedelta(days=10 + n)),
            Involves(iid, "Template", "s1"),
            Involves(iid, "Service", "other"),
        ]
    for n in range(3):  # newer incidents of the service, no signature
        iid = f"svc-{n}"
        records += [
            IncidentNode(iid, opened_at=T0 - timedelta(days=n)),
            Involves(iid, "Service", "api"),
        ]
    graph.upsert(records)

    def ids(limit: int, exclude: tuple[str, ...] = ()) -> list[str]:
        found = graph.recall(signature="s1", service="api", limit=limit, exclude=exclude)
        return [p.id for p in found]

    assert ids(limit=2) == ["sig-0", "sig-1"]
    assert ids(limit=3) == ["sig-0", "sig-1", "sig-2"]
    assert ids(limit=4) == ["sig-0", "sig-1", "sig-2", "svc-0"]
    assert ids(limit=3, exclude=("sig-1",)) == ["sig-0", "sig-2", "svc-0"]
    assert ids(limit=10, exclude=("sig-0", "svc-0")) == ["sig-1", "sig-2", "svc-1", "svc-2"]


def test_neighbourhood_cuts_and_orders(graph: FalkorDBGraphStore) -> None:
    records: list[GraphRecord] = [ServiceNode("api", kind="http")]
    for n in range(8):  # last_seen ties broken by signature; one never seen
        seen = None if n == 7 else T0 - timedelta(hours=n // 2)
        records.append(Emits("api", f"t{n}", n + 1, seen))
    records += [
        RunbookNode("rb-old", title="old template"),
        Covers("rb-old", "Template", "t6"),  # a template outside the most recent few
        Covers("rb-old", "Template", "t5"),
        RunbookNode("rb-both", title="both"),
        Covers("rb-both", "Template", "t0"),
        Covers("rb-both", "Service", "api"),
    ]
    for n in range(4):
        iid = f"i{n}"
        records += [
            IncidentNode(iid, opened_at=T0 - timedelta(minutes=n)),
            Involves(iid, "Service", "api"),
        ]
    records.append(IncidentNode("i3", status="resolved"))
    graph.upsert(records)

    hood = graph.neighbourhood("api", templates=3, incidents=2)
    assert [(t.signature, t.count) for t in hood.templates] == [("t0", 1), ("t1", 2), ("t2", 3)]
    assert [i.id for i in hood.open_incidents] == ["i0", "i1"]
    assert [(r.id, r.via) for r in hood.runbooks] == [
        ("rb-both", "service"),
        ("rb-old", "template"),
    ]

    everything = graph.neighbourhood("api", templates=100, incidents=100)
    assert [t.signature for t in everything.templates] == [f"t{n}" for n in range(8)]
    assert everything.templates[-1].last_seen is None
    assert [i.id for i in everything.open_incidents] == ["i0", "i1", "i2"]  # i3 resolved

    recent = graph.neighbourhood("api", since=T0 - timedelta(hours=1), incidents=0)
    assert [t.signature for t in recent.templates] == ["t0", "t1", "t2", "t3"]
    assert recent.open_incidents == ()
    assert [r.id for r in recent.runbooks] == ["rb-both", "rb-old"]  # through any template


def test_compact_rows_parse_scalars_and_fall_back(graph: FalkorDBGraphStore) -> None:
    graph.upsert([ServiceNode("api", kind="http")])
    (scalars, nodes) = graph._read_many(
        [
            ("RETURN 1, 'x', 1.5, true, false, null, [1, [2.0, 'y']], {a: 1, b: [null]}", {}),
            ("MATCH (s:Service) RETURN s, s.name", {}),
        ]
    )
    assert scalars == [[1, "x", 1.5, True, False, None, [1, [2.0, "y"]], {"a": 1, "b": [None]}]]
    ((node, name),) = nodes
    assert node.properties == {"name": "api", "kind": "http"} and name == "api"


def test_reads_planned_before_their_types_exist(graph: FalkorDBGraphStore) -> None:
    # FalkorDB caches a plan per query text; one made while DEPENDS_ON, RESOLVED_BY … did not
    # exist yet must still read their properties once they do (a pattern comprehension does
    # not: its edge properties stay null).
    graph.upsert([ServiceNode("api"), IncidentNode("i1", opened_at=T0)])
    assert graph.neighbourhood("api").depends_on == ()
    assert graph.recall(service="api", signature=["s1", "s2"]) == []
    assert graph.recall(service="api", signature="s1") == []
    graph.upsert(fleet())
    graph.record_fix(FixRecord("i-old", "restart_unit", T0, approver="alice"))
    hood = graph.neighbourhood("api")
    assert [(d.service, d.confidence, d.sources) for d in hood.depends_on] == [
        ("cache", 0.4, ("traces",)),
        ("db", 1.0, ("config", "traces")),
    ]
    assert [(d.service, d.sources) for d in hood.dependents] == [("web", ("traces",))]
    assert hood.templates[0].count == 10
    (old,) = [
        p for p in graph.recall(service="api", signature=["s-conn", "s-slow"]) if p.id == "i-old"
    ]
    assert [(f.action, f.approver) for f in old.fixes] == [("restart_unit", "alice")]
