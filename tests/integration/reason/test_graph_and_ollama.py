"""Retrieval through the real knowledge graph (embedded FalkorDB) and a diagnosis through
the real Ollama adapter against the fake Ollama server."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from devmesh_core.graph.base import FixRecord, IncidentNode, Involves
from devmesh_core.graph.falkordb import FalkorDBGraphStore
from devmesh_core.graph.projection import Projector
from devmesh_core.graph.topology import load_topology
from devmesh_core.reason import ask
from tests.evals.harness import CASES_DIR, load_case, loaded_core
from tests.integration.reason_llm.conftest import FakeOllama

CASE = load_case(CASES_DIR / "oom-no-topology")  # no topology file: the graph must supply it
TOPOLOGY = CASES_DIR / "oom-killed-dependency" / "topology.yaml"


def test_graph_expansion_brings_dependencies_past_incidents_and_fixes(
    graph: FalkorDBGraphStore, tmp_path: Path
) -> None:
    with loaded_core(CASE, tmp_path) as core:
        core.settings.reason.use_graph = True
        core.set_graph(graph)
        Projector(core.store, graph, topology=load_topology(TOPOLOGY)).run_once(propose=False)
        # A past incident that involved the kernel's OOM template, and what fixed it.
        oom = next(
            t
            for t in core.store.list_templates(service="kernel", limit=50)
            if "Out of memory" in t.template
        )
        opened = CASE.since - timedelta(days=3)
        graph.upsert(
            [
                IncidentNode(
                    "INC-3", title="postgres OOM-killed", status="resolved", opened_at=opened
                ),
                Involves("INC-3", "Template", oom.template_id),
                Involves("INC-3", "Service", "postgres"),
            ]
        )
        graph.record_fix(
            FixRecord(
                "INC-3",
                "restart_unit",
                opened + timedelta(minutes=20),
                parameters={"unit": "postgresql.service"},
                notes="raised shared memory",
            )
        )
        diagnosis = ask(core, "why is nginx failing?", since=CASE.since, until=CASE.until)
        core.set_graph(None)
    ids = {e.id for e in diagnosis.evidence}
    assert diagnosis.origin_service == "postgres"
    assert "incident:INC-3" in ids
    assert any(i.startswith("fix:") for i in ids)
    assert "restart_unit" in diagnosis.root_cause  # "fixed before by …"
    # The dependency chain came from the graph (there is no topology file in this case).
    assert core.settings.topology_file is None
    assert "jellyfin" in diagnosis.root_cause and "nginx" in diagnosis.root_cause


def test_diagnosis_through_the_real_ollama_adapter(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    with loaded_core(CASE, tmp_path) as core:
        spec = "ollama://" + fake_ollama.url.split("://", 1)[1] + "/qwen2.5:7b-instruct"
        # 1. The model answers prose: one repair, then the rule-based fallback.
        fake_ollama.answer = "postgres died, probably."
        fallback = ask(core, CASE.question, since=CASE.since, until=CASE.until, llm=spec)
        assert len(fake_ollama.requests) == 2
        assert fallback.backend == "none" and fallback.fallback_reason
        # The schema went to Ollama as `format`, bounded to the bundle's ids.
        fmt = fake_ollama.requests[0]["format"]
        allowed = fmt["properties"]["evidence_ids"]["items"]["enum"]
        assert fmt["properties"]["evidence_ids"]["maxItems"] <= 8
        # 2. A valid answer citing one real id and one invented one.
        fake_ollama.answer = json.dumps(
            {
                "root_cause": "postgres on db1 was OOM-killed; jellyfin and nginx fail after it",
                "origin_service": "postgres",
                "confidence": 0.8,
                "evidence_ids": [allowed[0], "event:424242"],
                "next_steps": ["Give postgres more memory"],
                "runbook_ids": ["oom-kill"],
            }
        )
        answer = ask(core, CASE.question, since=CASE.since, until=CASE.until, llm=spec)
    assert answer.backend == "ollama"
    assert answer.fallback_reason is None
    assert [e.id for e in answer.evidence] == [allowed[0]]
    assert answer.dropped_evidence_ids == 1
    assert answer.next_steps == ["Give postgres more memory"]
