"""A verified fix is written to the real knowledge graph (FalkorDB) as a Fix that USED the
catalog Action, with its outcome and approvers."""

from __future__ import annotations

from pathlib import Path

from devmesh_core.actions.models import Identity
from devmesh_core.actions.service import ActionService
from devmesh_core.actions.settings import ActionSettings
from devmesh_core.config import Settings
from devmesh_core.graph.falkordb import FalkorDBGraphStore
from devmesh_core.runtime import Core
from devmesh_core.store import open_store
from tests.integration.graph.conftest import graph, graph_server  # noqa: F401  (fixtures)


def test_verified_fix_lands_in_the_graph(tmp_path: Path, graph: FalkorDBGraphStore) -> None:  # noqa: F811
    settings = Settings(
        data_dir=tmp_path,
        actions=ActionSettings.model_validate(
            {"allow": {"web1": {"units": ["nginx"]}}, "roles": {"web:bob": ["admin"]},
             "verify_minutes": 0}
        ),
    )  # fmt: skip
    store = open_store(f"sqlite:///{tmp_path / 'devmesh.db'}")
    try:
        core = Core(settings, store)
        core.set_graph(graph)
        service = ActionService(settings, store, core=core)
        req = service.propose("restart_unit", {"unit": "nginx"}, host="web1",
                              incident_id="INC-77", requested_by="system:test")  # fmt: skip
        service.approve(req.id, Identity(platform="web", user_id="bob"))
        service.claim("web1")
        done = service.report_result(req.id, {"exit_code": 0, "output": "", "duration": 0.1})
        assert done.verified is True
        service.apply_outcome(done)
        rows = graph._rows(
            "MATCH (f:Fix {id: $id})-[:USED]->(a:Action) RETURN f.outcome, a.name, f.approver",
            {"id": f"fix-{req.id}"},
        )
        assert rows == [["success", "restart_unit", "web:bob"]]
    finally:
        core.set_graph(None)  # the fixture owns and closes the graph
        store.close()
