"""Topology files (parsing, errors with lines) and the co-occurrence scoring, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devmesh_core.errors import ConfigError, InvalidInput
from devmesh_core.graph import DependsOn, Emits, ServiceNode, TemplateNode
from devmesh_core.graph.projection import fold_deployment, template_records
from devmesh_core.graph.topology import (
    CooccurrenceSettings,
    load_topology,
    parse_topology,
    score_onsets,
)
from devmesh_core.models import Level, StoredEvent, TemplateInfo, TemplatePlace

GOOD = """\
version: 1
services:
  nginx:
    kind: proxy
    depends_on: [jellyfin, postgres, jellyfin]
  jellyfin:
    depends_on: postgres
  postgres:
  redis: {}
"""


def test_a_good_file() -> None:
    topo = parse_topology(GOOD, source="t.yaml")
    assert [s.name for s in topo.services] == ["nginx", "jellyfin", "postgres", "redis"]
    assert topo.dependencies() == [
        DependsOn("nginx", "jellyfin", 1.0, "config"),
        DependsOn("nginx", "postgres", 1.0, "config"),
        DependsOn("jellyfin", "postgres", 1.0, "config"),
    ]
    assert ServiceNode("nginx", kind="proxy") in topo.service_records()
    assert frozenset(("postgres", "jellyfin")) in topo.pairs()


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_topology(text, source="t.yaml")
    return str(caught.value)


def test_errors_name_the_line_and_the_key() -> None:
    message = _error(
        "services:\n"
        "  nginx:\n"
        "    depends_on: [api, {name: x}, nginx]\n"
        "    replicas: 3\n"
        "  api:\n"
        "    kind: [a]\n"
        "extra: 1\n"
    )
    assert "t.yaml:3: services.nginx.depends_on[1]: expected a service name, got a mapping" in (
        message
    )
    assert "t.yaml:3: services.nginx.depends_on[2]: 'nginx' cannot depend on itself" in message
    assert "t.yaml:4: services.nginx.replicas: unknown key" in message
    assert "t.yaml:6: services.api.kind: expected a name, got a list" in message
    assert "t.yaml:7: extra: unknown key" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "t.yaml: the file is empty"),
        ("- a\n- b\n", "t.yaml:1: expected a mapping, got a list"),
        ("version: 1\n", "t.yaml:1: missing the 'services:' mapping"),
        ("version: 2\nservices: {}\n", "t.yaml:1: version: only version 1 exists"),
        ("services:\n  a: {}\n  a: {}\n", "t.yaml:3: services.a: duplicate key"),
        ("services:\n  a:\n    depends_on: 5\n", "t.yaml:3: services.a.depends_on: expected a"),
        ("services:\n  a:\n    depends_on: {b: 1}\n", "depends_on: expected a service name or"),
        ("services:\n  a:\n    depends_on: ['']\n", "depends_on[0]: a service name cannot be"),
        ("services:\n  1: {}\n", "t.yaml:2: services: keys must be names, got int '1'"),
        ("services: [a, b]\n", "t.yaml:1: services: expected a mapping, got a list"),
        ("services:\n  a: {depends_on: [b\n", "t.yaml:3: not valid YAML: expected ',' or ']'"),
        ("services:\n  a:\n\tkind: x\n", "t.yaml:3: not valid YAML: found character '\\t'"),
    ],
)
def test_each_problem_is_reported(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_load_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_topology(tmp_path / "nope.yaml")
    path = tmp_path / "topology.yaml"
    path.write_text(GOOD)
    assert len(load_topology(path).dependencies()) == 3


# ---------------------------------------------------------------------------- scoring

SPAN = 7 * 86_400  # one-second buckets over a week


def test_the_follower_depends_on_the_leader() -> None:
    leader = [1_000 + 10_000 * k for k in range(10)]
    follower = [t + 30 for t in leader[:8]] + [500_000]
    loner = [7_000 + 13_000 * k for k in range(10)]
    found = score_onsets(
        {"db": leader, "app": follower, "cron": loner},
        CooccurrenceSettings(),
        span_buckets=SPAN,
    )
    assert [(p.service, p.depends_on, p.support, p.onsets, p.reverse) for p in found] == [
        ("app", "db", 8, 9, 0)
    ]
    assert 0.7 < found[0].confidence <= 0.9
    assert found[0].record() == DependsOn("app", "db", found[0].confidence, "cooccurrence")


def test_services_that_lead_each_other_are_not_proposed() -> None:
    a = [10_000 * k for k in range(1, 9)]
    b = [t + (20 if k % 2 else -20) for k, t in enumerate(a)]  # a common cause, either first
    assert score_onsets({"a": a, "b": b}, CooccurrenceSettings(), span_buckets=SPAN) == []


def test_simultaneous_onsets_lead_neither_way_and_support_is_required() -> None:
    a = [10_000 * k for k in range(1, 9)]
    assert score_onsets({"a": a, "b": list(a)}, CooccurrenceSettings(), span_buckets=SPAN) == []
    few = score_onsets(
        {"a": a[:2], "b": [t + 5 for t in a[:2]]}, CooccurrenceSettings(), span_buckets=SPAN
    )
    assert few == []


def test_a_constantly_failing_leader_is_discounted_by_chance() -> None:
    noisy = list(range(0, SPAN, 150))  # an onset every 150 s: any follower looks led
    follower = [1_000 + 20_000 * k for k in range(10)]
    settings = CooccurrenceSettings()
    assert score_onsets({"noisy": noisy, "app": follower}, settings, span_buckets=SPAN) == []


def test_settings_are_checked() -> None:
    with pytest.raises(InvalidInput):
        CooccurrenceSettings(min_confidence=0.95)
    with pytest.raises(InvalidInput):
        CooccurrenceSettings(window=timedelta(0))


# ---------------------------------------------------------------------------- folding

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _place(
    tid: str, service: str, host: str, level: Level, count: int, minute: int
) -> TemplatePlace:
    return TemplatePlace(
        tid, "x <*>", service, host, level, count, T0 + timedelta(minutes=minute), 0
    )


def test_template_records_sum_places_per_service() -> None:
    info = TemplateInfo("T1", "x <*>", ("a", "b"), ("h1", "h2"), 10, T0, T0, {})
    places = [
        _place("T1", "a", "h1", Level.INFO, 3, 1),
        _place("T1", "a", "h2", Level.ERROR, 3, 5),
        _place("T1", "b", "h1", Level.ERROR, 4, 2),
        _place("T9", "a", "h1", Level.INFO, 1, 9),  # merged away meanwhile: no info
    ]
    records, counts = template_records(places, {"T1": info})
    assert counts == {"templates": 1, "emits": 2, "runs_on": 3, "services": 2, "hosts": 2}
    template = records[0]
    assert isinstance(template, TemplateNode)
    assert template.level == "ERROR" and template.props == {"count": 10}
    emits = {(r.service, r.count) for r in records if isinstance(r, Emits)}
    assert emits == {("a", 6), ("b", 4)}


def _event(i: int, kind: str, minute: int, **meta: object) -> StoredEvent:
    return StoredEvent(
        id=i,
        ingested_at=T0,
        timestamp=T0 + timedelta(minutes=minute),
        service="web",
        host="h1",
        message=kind,
        event_type=kind,
        meta={"correlation_id": "c", **meta},
    )


def test_a_deployment_folds_to_its_start_and_latest_outcome() -> None:
    node = fold_deployment(
        "web/c",
        [
            _event(3, "deployment_succeeded", 9, payload={"version": "2"}),
            _event(1, "deployment_started", 1, payload={"version": "1", "author": "me"}),
            _event(2, "deployment_failed", 5),
        ],
    )
    assert node.at == T0 + timedelta(minutes=1)
    assert node.props["status"] == "succeeded"
    assert (node.version, node.author) == ("2", "me")
