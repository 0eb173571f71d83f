"""Verification with the real incident service over the same store: a fix "worked" only when
no new error of the incident's templates arrives within the window; a worked fix mitigates
the incident; remediation events carry the incident's correlation id."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devmesh_core.actions.models import Identity
from devmesh_core.actions.service import ActionService
from devmesh_core.actions.settings import ActionSettings
from devmesh_core.config import Settings
from devmesh_core.detect.models import Incident
from devmesh_core.detect.service import IncidentService
from devmesh_core.models import Level, LogEvent
from devmesh_core.runtime import Core
from devmesh_core.store import LogQuery, open_store

BOB = Identity(platform="web", user_id="bob")
TEMPLATE = "tpl-upstream-refused"


@dataclass(frozen=True)
class _Template:
    template_id: str
    template: str


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[ActionService, IncidentService, Clock, Incident]]:
    settings = Settings(
        data_dir=tmp_path,
        actions=ActionSettings.model_validate(
            {"allow": {"web1": {"units": ["nginx"]}}, "roles": {"web:bob": ["admin"]},
             "verify_minutes": 5, "record_fixes": False}
        ),
    )  # fmt: skip
    store = open_store(f"sqlite:///{tmp_path / 'devmesh.db'}")
    incidents = IncidentService(store)
    now = datetime.now(UTC)
    incident = incidents.create(
        lambda number, label: Incident(
            id=label, number=number, title="nginx upstream refused", severity="high",
            template_ids=[TEMPLATE], correlation_id="corr-nginx-42", opened_at=now,
            updated_at=now, services=["nginx"], hosts=["web1"],
        ),
        at=now,
    )  # fmt: skip
    core = Core(settings, store)
    core.incidents = incidents
    clock = Clock()
    service = ActionService(settings, store, core=core, clock=clock)
    core.actions = service
    yield service, incidents, clock, incident
    service.stop()
    store.close()


def _run(service: ActionService, incident: Incident) -> str:
    req = service.propose("restart_unit", {"unit": "nginx"}, host="web1",
                          incident_id=incident.id.lower(), requested_by="system:test")  # fmt: skip
    assert req.incident_id == incident.id  # canonical id from the incident service
    service.approve(req.id, BOB)
    service.claim("web1")
    done = service.report_result(
        req.id, {"exit_code": 0, "output": "", "duration": 0.1, "verify": {"ok": True}}
    )
    assert done.verified is None  # the window has not passed yet
    return req.id


def _error(service: ActionService, at: datetime) -> None:
    message = "connect() failed (111: Connection refused) while connecting"
    event = LogEvent(timestamp=at, service="nginx", host="web1", level=Level.ERROR, message=message)
    service.store.insert([event], [_Template(TEMPLATE, "connect() failed <*>")])


def test_new_errors_mean_the_fix_did_not_work(
    world: tuple[ActionService, IncidentService, Clock, Incident],
) -> None:
    service, incidents, clock, incident = world
    rid = _run(service, incident)
    _error(service, clock.now + timedelta(seconds=30))
    assert service.verify(rid).verified is False
    assert incidents.get(incident.id).state == "open"


def test_quiet_window_means_it_worked_and_mitigates(
    world: tuple[ActionService, IncidentService, Clock, Incident],
) -> None:
    service, incidents, clock, incident = world
    _error(service, clock.now - timedelta(minutes=1))  # before the fix: does not count
    rid = _run(service, incident)
    assert service.verify_due() == 0
    clock.now += timedelta(minutes=5, seconds=1)
    assert service.verify_due() == 1
    done = service.get(rid)
    assert done.verified is True
    service.apply_outcome(done)
    assert incidents.get(incident.id).state == "mitigated"
    trail = [a.step for a in service.audit(incident_id=incident.id)]
    assert trail == ["proposed", "approved", "claimed", "executed", "verified"]
    events = service.store.query(LogQuery(host="web1", service="nginx", level=Level.INFO))
    remediation = [e for e in events.events if e.event_type]
    assert {e.event_type for e in remediation} == {"remediation_started", "remediation_completed"}
    assert {e.meta["correlation_id"] for e in remediation} == {"corr-nginx-42"}
