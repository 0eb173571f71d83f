"""Cypher parameter building and folding (pure: no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from devmesh_core.errors import InvalidInput
from devmesh_core.graph.base import (
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
    RunsOn,
    ServiceNode,
    TemplateNode,
    from_millis,
    to_millis,
)
from devmesh_core.graph.falkordb import (
    DEPENDS_ON_CYPHER,
    EMITS_ABSOLUTE_CYPHER,
    EMITS_DELTA_CYPHER,
    RUNS_ON_CYPHER,
    _dependencies,
    build_statements,
    clean_props,
    fix_id_for,
    fix_params,
    fix_rows,
    involves_cypher,
    node_cypher,
    with_params,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MS = to_millis(T0)


def by_cypher(records: list[Any], batch_size: int = 1000) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for st in build_statements(records, batch_size):
        out.setdefault(st.cypher, []).extend(st.rows)
    return out


def test_millis_round_trip_and_naive_is_utc() -> None:
    assert from_millis(MS) == T0
    assert to_millis(T0.replace(tzinfo=None)) == MS
    assert to_millis(T0.astimezone(timezone(timedelta(hours=2)))) == MS
    assert from_millis(None) is None
    with pytest.raises(InvalidInput):
        from_millis("yesterday")


def test_nodes_fold_to_one_row_per_key_last_value_wins() -> None:
    rows = by_cypher(
        [
            ServiceNode("api", kind="old", props={"team": "a"}),
            ServiceNode("api", kind="http"),
            ServiceNode("db"),
            HostNode("h1", address=None),
        ]
    )
    assert rows[node_cypher("Service")] == [
        {"k": "api", "c": {}, "p": {"team": "a", "kind": "http"}},
        {"k": "db", "c": {}, "p": {}},
    ]
    assert rows[node_cypher("Host")] == [{"k": "h1", "c": {}, "p": {}}]  # None is skipped


def test_incident_status_defaults_only_on_create() -> None:
    rows = by_cypher(
        [IncidentNode("i1", title="t", opened_at=T0), IncidentNode("i2", status="resolved")]
    )
    assert rows[node_cypher("Incident")] == [
        {"k": "i1", "c": {"status": "open"}, "p": {"title": "t", "opened_at": MS}},
        {"k": "i2", "c": {}, "p": {"status": "resolved"}},
    ]


def test_template_first_seen_keeps_the_earliest() -> None:
    rows = by_cypher(
        [
            TemplateNode("s", text="x <*>", first_seen=T0),
            TemplateNode("s", first_seen=T0 - timedelta(seconds=1)),
            TemplateNode("s"),
            TemplateNode("t"),
        ]
    )
    assert rows[node_cypher("Template")] == [
        {"k": "s", "c": {}, "p": {"text": "x <*>"}, "fs": MS - 1000},
        {"k": "t", "c": {}, "p": {}, "fs": None},
    ]
    with pytest.raises(InvalidInput):
        build_statements([TemplateNode("s", props={"first_seen": 1})])


def test_emits_deltas_sum_and_absolutes_replace() -> None:
    rows = by_cypher(
        [
            Emits("api", "s", 2, T0),
            Emits("api", "s", 3, T0 - timedelta(seconds=1)),
            Emits("api", "s", 1),
            Emits("db", "s", 7, T0, absolute=True),
            Emits("db", "s", 9, T0 - timedelta(days=1), absolute=True),
        ]
    )
    assert rows[EMITS_DELTA_CYPHER] == [{"a": "api", "b": "s", "n": 6, "ls": MS}]
    assert rows[EMITS_ABSOLUTE_CYPHER] == [{"a": "db", "b": "s", "n": 9, "ls": MS}]


def test_emits_deltas_are_marked_not_idempotent() -> None:
    statements = build_statements(
        [Emits("a", "s"), Emits("a", "t", absolute=True), RunsOn("a", "h")]
    )
    flags = {st.cypher: st.idempotent for st in statements}
    assert flags == {EMITS_DELTA_CYPHER: False, EMITS_ABSOLUTE_CYPHER: True, RUNS_ON_CYPHER: True}


def test_edges_fold() -> None:
    rows = by_cypher(
        [
            RunsOn("api", "h1", T0 - timedelta(hours=1)),
            RunsOn("api", "h1", T0),
            RunsOn("api", "h1"),
            DependsOn("api", "db", 0.5, "traces"),
            DependsOn("api", "db", 0.6, "traces"),
            DependsOn("api", "db", 1.0, "config"),
            Involves("i1", "Service", "api"),
            Involves("i1", "Service", "api"),
            Involves("i1", "Template", "s"),
        ]
    )
    assert rows[RUNS_ON_CYPHER] == [{"a": "api", "b": "h1", "ls": MS}]
    assert rows[DEPENDS_ON_CYPHER] == [
        {"a": "api", "b": "db", "src": "traces", "conf": 0.6},
        {"a": "api", "b": "db", "src": "config", "conf": 1.0},
    ]
    assert rows[involves_cypher("Service")] == [{"a": "i1", "b": "api"}]
    assert rows[involves_cypher("Template")] == [{"a": "i1", "b": "s"}]


def test_order_and_batching() -> None:
    records: list[GraphRecord] = [
        Involves("i", "Service", "x"),
        *[ServiceNode(f"s{i}") for i in range(5)],
        DeploymentNode("d", "s1", T0),
        ActionNode("restart"),
    ]
    statements = build_statements(records, batch_size=2)
    kinds = [st.cypher for st in statements]
    assert kinds[:3] == [node_cypher("Service")] * 3  # 5 rows in batches of 2
    assert [len(st.rows) for st in statements[:3]] == [2, 2, 1]
    assert kinds.index(node_cypher("Action")) < kinds.index(involves_cypher("Service"))
    deployment = next(st for st in statements if "Deployment" in st.cypher)
    assert deployment.rows == [{"k": "d", "p": {"at": MS, "service": "s1"}, "s": "s1"}]
    assert build_statements([]) == []
    with pytest.raises(InvalidInput):
        build_statements(records, batch_size=0)


@pytest.mark.parametrize(
    "record",
    [
        ServiceNode(""),
        ServiceNode("a", props={"bad key": 1}),
        ServiceNode("a", props={"name": "shadow"}),
        ServiceNode("a", props={"kind": "twice"}),
        ServiceNode("a", props={"nested": {"x": 1}}),  # type: ignore[dict-item]
        ServiceNode("a", props={"nan": float("nan")}),
        ServiceNode("a", props={"deep": [[1]]}),  # type: ignore[list-item]
        DependsOn("a", "b", confidence=-0.1),
        Emits("a", "s", -1),
        Emits("a", "s", True),
        Involves("i", "Runbook", "x"),  # type: ignore[arg-type]
        Covers("r", "Host", "h"),  # type: ignore[arg-type]
        "not a record",
    ],
)
def test_invalid_records(record: Any) -> None:
    with pytest.raises(InvalidInput):
        build_statements([record])


def test_clean_props_converts_values() -> None:
    assert clean_props({"at": T0, "tags": ("a", "b"), "n": 1.5, "on": True, "gone": None}) == {
        "at": MS,
        "tags": ["a", "b"],
        "n": 1.5,
        "on": True,
    }


def test_fix_params_and_stable_ids() -> None:
    fix = FixRecord(
        "i1",
        "restart_unit",
        T0,
        parameters={"unit": "api", "host": "h1"},
        approver="alice",
        time_to_recover=timedelta(minutes=2),
    )
    params = fix_params(fix)
    assert params["incident"] == "i1" and params["action"] == "restart_unit"
    assert params["ok"] is True
    assert params["resolved_at"] == MS + 120_000
    assert params["props"] == {
        "incident": "i1",
        "action": "restart_unit",
        "parameters": '{"host": "h1", "unit": "api"}',
        "approver": "alice",
        "outcome": "success",
        "applied_at": MS,
        "ttr_s": 120.0,
    }
    same = FixRecord("i1", "restart_unit", T0, parameters={"host": "h1", "unit": "api"})
    assert fix_id_for(same) == params["fix"]  # order of parameters does not matter
    assert fix_id_for(FixRecord("i1", "restart_unit", T0 + timedelta(seconds=1))) != params["fix"]
    assert fix_id_for(FixRecord("i1", "x", T0, fix_id="mine")) == "mine"
    failed = fix_params(FixRecord("i1", "x", T0, outcome="failed"))
    assert failed["ok"] is False and failed["resolved_at"] == MS


@pytest.mark.parametrize(
    "fix",
    [
        FixRecord("", "x", T0),
        FixRecord("i", "x", T0, outcome="meh"),  # type: ignore[arg-type]
        FixRecord("i", "x", T0, time_to_recover=timedelta(seconds=-1)),
    ],
)
def test_invalid_fixes(fix: FixRecord) -> None:
    with pytest.raises(InvalidInput):
        fix_params(fix)


def test_fix_rows_give_every_row_of_an_incident_the_latest_success() -> None:
    ids, rows = fix_rows(
        [
            FixRecord("i1", "b", T0 + timedelta(minutes=9), time_to_recover=timedelta(minutes=1)),
            FixRecord("i1", "a", T0, outcome="failed"),
            FixRecord("i1", "c", T0 + timedelta(minutes=5)),
            FixRecord("i2", "a", T0, outcome="partial"),
        ]
    )
    assert len(ids) == 4
    assert [r["action"] for r in rows] == ["a", "a", "c", "b"]  # by time
    i1 = [r for r in rows if r["incident"] == "i1"]
    assert {(r["ok"], r["resolved_at"]) for r in i1} == {(True, MS + 600_000)}
    (i2,) = [r for r in rows if r["incident"] == "i2"]
    assert (i2["ok"], i2["resolved_at"]) == (False, None)


def test_with_params_matches_the_client_header() -> None:
    assert with_params("RETURN 1", None) == "RETURN 1"
    assert with_params("RETURN $a", {"a": 'x"y', "b": [1, None]}) == (
        'CYPHER `a`="x\\"y" `b`=[1,null] RETURN $a'
    )


def test_dependencies_fold_sources_and_skip_empty_matches() -> None:
    refs = _dependencies(
        [["db", 0.7, "traces"], ["db", 1.0, "config"], [None, None, None], ["cache", None, None]]
    )
    assert [(r.service, r.confidence, r.sources) for r in refs] == [
        ("cache", 0.0, ()),
        ("db", 1.0, ("config", "traces")),
    ]
