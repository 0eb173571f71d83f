"""The remediation tables over both SQL dialects (SQLite file, real MariaDB): the life of a
request, the audit trail, and claims that never hand one request to two agents."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devmesh_core.actions.models import Identity
from devmesh_core.actions.service import ActionService
from devmesh_core.actions.settings import ActionSettings
from devmesh_core.config import Settings
from devmesh_core.errors import DevMeshError
from devmesh_core.store import open_store
from devmesh_core.store.base import LogStore

BOB = Identity(platform="web", user_id="bob")
ACTIONS = {
    "allow": {"*": {"units": ["nginx", "app-*"]}},
    "roles": {"web:bob": ["admin"], "web:alice": ["approver"]},
    "verify_minutes": 0,
}


@pytest.fixture
def store(store_url: str) -> Iterator[LogStore]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def _service(tmp_path: Path, store: LogStore) -> ActionService:
    return ActionService(
        Settings(data_dir=tmp_path, actions=ActionSettings.model_validate(ACTIONS)), store
    )


def test_request_life_and_trail(tmp_path: Path, store: LogStore) -> None:
    service = _service(tmp_path, store)
    req = service.propose("restart_unit", {"unit": "app-web"}, host="web1",
                          incident_id="INC-1", requested_by="system:diagnosis")  # fmt: skip
    assert service.get(req.id) == req
    assert [r.id for r in service.pending("web1")] == [req.id]
    assert service.pending("web2") == []
    service.approve(req.id, BOB)
    (running,) = service.claim("web1")
    assert running.status == "running" and running.started_at is not None
    done = service.report_result(
        req.id, {"exit_code": 0, "output": "x" * 10_000, "duration": 1.5, "argv": ["a", "b"]}
    )
    assert done.status == "succeeded" and done.verified is True
    assert done.result is not None and len(done.result["output"]) == 4_000
    assert [r.id for r in service.requests(incident_id="INC-1")] == [req.id]
    steps = [a.step for a in service.audit(incident_id="INC-1")]
    assert steps == ["proposed", "approved", "claimed", "executed", "verified"]
    stored = ActionService(service.settings, store).get(req.id)  # a fresh reader
    assert stored == service.get(req.id)


def test_concurrent_claims_hand_out_each_request_once(tmp_path: Path, store: LogStore) -> None:
    service = _service(tmp_path, store)
    ids = set()
    for _ in range(12):
        req = service.propose("restart_unit", {"unit": "nginx"}, host="web1", incident_id=None,
                              requested_by="system:test")  # fmt: skip
        service.approve(req.id, BOB)
        ids.add(req.id)
    agents = [_service(tmp_path, store) for _ in range(4)]
    got: list[list[str]] = [[] for _ in agents]
    start = threading.Barrier(len(agents))

    def poll(i: int) -> None:
        start.wait()
        for _ in range(4):
            got[i].extend(r.id for r in agents[i].claim("web1", agent=f"agent{i}"))

    threads = [threading.Thread(target=poll, args=(i,)) for i in range(len(agents))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [rid for ids_ in got for rid in ids_]
    assert sorted(claimed) == sorted(ids)  # every request once, none twice
    claims = [a for a in service.audit() if a.step == "claimed"]
    assert len(claims) == len(ids)


def test_audit_is_append_only_on_sqlite(tmp_path: Path, store: LogStore) -> None:
    if store.backend != "sqlite":
        pytest.skip("the database-level guard is SQLite's trigger (see schema_actions)")
    service = _service(tmp_path, store)
    service.propose("restart_unit", {"unit": "nginx"}, host="web1", incident_id=None,
                    requested_by="system:test")  # fmt: skip
    run = store.run  # type: ignore[attr-defined]
    with pytest.raises(DevMeshError):
        run(lambda cur: cur.execute("UPDATE action_audit SET actor = 'x'"), write=True)
    with pytest.raises(DevMeshError):
        run(lambda cur: cur.execute("DELETE FROM action_audit"), write=True)
    assert [a.actor for a in service.audit()] == ["system:test"]


def test_schema_version_six(store: LogStore) -> None:
    assert store.schema_version() >= 6  # type: ignore[attr-defined]
