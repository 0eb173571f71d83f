"""Incidents and the real knowledge graph (embedded FalkorDB): projection as ``Incident``
nodes with ``INVOLVES`` edges, dependencies read from ``DEPENDS_ON``, past fixes recalled
into summaries, and when detection uses the graph at all (``detect.use_graph``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devmesh_core.config import Settings
from devmesh_core.detect.detectors import signature_of
from devmesh_core.detect.engine import Detector
from devmesh_core.detect.loop import (
    CachedDependencies,
    build_detector,
    graph_ready,
    incident_service,
)
from devmesh_core.detect.replay import stored
from devmesh_core.detect.settings import DetectSettings
from devmesh_core.graph.base import DependsOn, FixRecord
from devmesh_core.graph.falkordb import FalkorDBGraphStore
from devmesh_core.runtime import Core
from devmesh_core.store import open_store

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def _settings(tmp_path: Path, **detect: object) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path,
        vectors_enabled=False,
        detect=DetectSettings(new_signature_warmup=0, **detect),  # type: ignore[arg-type]
    )


@pytest.fixture
def core(tmp_path: Path) -> Iterator[Core]:
    settings = _settings(tmp_path)
    c = Core(settings, open_store(settings.effective_database_url))
    yield c
    c.store.close()


def test_incident_is_projected_with_involves_edges_and_leaves_open_set_on_resolve(
    core: Core, graph: FalkorDBGraphStore
) -> None:
    core.set_graph(graph)
    service = incident_service(core)
    det = Detector(service, core.settings.detect)
    event = stored(1, T0, "api", "app1", "CRITICAL", "panic: nil map in handler")
    det.process([event])
    (incident,) = service.list()

    nb = graph.neighbourhood("api", templates=0)
    assert [i.id for i in nb.open_incidents] == [incident.id]
    assert nb.open_incidents[0].severity == "high"
    rows = graph._rows(  # the INVOLVES edges themselves
        "MATCH (i:Incident {id: $id})-[:INVOLVES]->(n) "
        "RETURN labels(n)[0], coalesce(n.name, n.signature)",
        {"id": incident.id},
    )
    involved = {(str(label), str(key)) for label, key in rows}
    assert involved == {("Host", "app1"), ("Service", "api"), ("Template", signature_of(event))}

    service.resolve(incident.id, "alice", note="fixed the map")
    assert graph.neighbourhood("api", templates=0).open_incidents == ()


def test_dependencies_from_the_graph_make_the_database_the_origin(
    core: Core, graph: FalkorDBGraphStore
) -> None:
    core.set_graph(graph)
    graph.upsert([DependsOn("web", "api"), DependsOn("api", "postgres")])
    deps = CachedDependencies(core)
    assert deps("api") == {"postgres"} and deps("postgres") == set()
    det = build_detector(core)  # the server's wiring: graph-backed dependency map
    det.process(
        [
            stored(1, T0, "api", "app1", "CRITICAL", "connection refused to db1:5432"),
            stored(2, T0 + timedelta(seconds=20), "postgres", "db1", "CRITICAL", "PANIC: no space"),
        ]
    )
    (incident,) = incident_service(core).list()
    assert set(incident.services) == {"api", "postgres"}  # one incident: api depends on pg
    assert incident.origin_service == "postgres"


def test_summary_lists_past_fixes_of_the_same_signature(
    core: Core, graph: FalkorDBGraphStore
) -> None:
    core.set_graph(graph)
    service = incident_service(core)
    det = Detector(service, core.settings.detect.model_copy(update={"reopen_window": 0}))
    first = stored(1, T0, "nginx", "web1", "CRITICAL", "worker process exited on signal 9")
    det.process([first])
    (old,) = service.list()
    service.resolve(old.id, "alice")
    graph.record_fix(
        FixRecord(incident_id=old.id, action="restart_unit", applied_at=T0, outcome="success")
    )
    # the same signature on another host, a day later: a new incident, with the old fix
    det.process(
        [
            stored(
                2,
                T0 + timedelta(days=1),
                "nginx",
                "web2",
                "CRITICAL",
                "worker process exited on signal 9",
            )
        ]
    )
    new = next(i for i in service.list() if i.id != old.id)
    assert service.summary(new).past_fixes == [f"{old.id}: restart_unit (success)"]


def test_detection_uses_the_graph_only_when_it_is_there(tmp_path: Path) -> None:
    fresh = Core(_settings(tmp_path / "a"), open_store(f"sqlite:///{tmp_path / 'a.db'}"))
    try:
        assert not graph_ready(fresh)  # default: nothing opened, nothing projected
        service = incident_service(fresh)
        Detector(service, fresh.settings.detect).process(
            [stored(1, T0, "api", "app1", "CRITICAL", "panic")]
        )
        assert len(service.list()) == 1
        assert not (tmp_path / "a" / "graph").exists()  # no embedded server was started
        assert graph_ready(Core(_settings(tmp_path / "a", start_graph=True), fresh.store))
        (tmp_path / "a" / "graph").mkdir(parents=True)  # an embedded graph exists: use it
        assert graph_ready(fresh)
        off = Core(_settings(tmp_path / "a", use_graph=False), fresh.store)
        assert not graph_ready(off)
    finally:
        fresh.store.close()


def test_an_open_graph_is_used_and_use_graph_false_ignores_it(
    tmp_path: Path, graph: FalkorDBGraphStore
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        on = Core(_settings(tmp_path), store)
        on.set_graph(graph)
        assert graph_ready(on)
        off = Core(_settings(tmp_path, use_graph=False), store)
        off.set_graph(graph)
        assert not graph_ready(off)
        service = incident_service(off)
        Detector(service, off.settings.detect).process(
            [stored(1, T0, "mail", "m1", "CRITICAL", "smtp relay down")]
        )
        assert graph.neighbourhood("mail", templates=0).known is False  # nothing projected
    finally:
        store.close()
