"""The incident store (schema v5) over both SQL adapters: ids, lifecycle, detector state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from devmesh_core.detect.engine import Detector
from devmesh_core.detect.replay import stored
from devmesh_core.detect.service import IncidentService
from devmesh_core.detect.settings import DetectSettings
from devmesh_core.store import open_store

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def test_incident_store_contract(store_url: str) -> None:
    store = open_store(store_url)
    try:
        assert store.schema_version() >= 5  # type: ignore[attr-defined]
        service = IncidentService(store)
        det = Detector(service, DetectSettings(new_signature_warmup=0))
        det.process(
            [
                stored(1, T0, "mail", "m1", "CRITICAL", "smtp relay down"),
                stored(2, T0 + timedelta(seconds=1), "backup", "b1", "CRITICAL", "snap failed"),
            ]
        )
        first, second = sorted(service.list(), key=lambda i: i.number)
        assert second.number == first.number + 1  # INC-N numbering from the database
        assert [i.id for i in service.list()] == [second.id, first.id]  # newest first
        assert service.get(first.id).signals[0].event_ids == [1]
        service.acknowledge(first.id, "alice")
        assert [i.id for i in service.list("acknowledged")] == [first.id]
        service.resolve(second.id, "bob", note="rebooted")
        assert [i.id for i in service.list("active")] == [first.id]
        assert service.repo.counts_by_severity() == {"high": 1}
        assert [i.id for i in service.resolved_since(T0)] == [second.id]
        service.repo.set_state("detector", {"watermark": 5})
        service.repo.set_state("detector", {"watermark": 9})
        assert service.repo.get_state("detector") == {"watermark": 9}
        again = IncidentService(store)  # a second process sees the same incidents
        assert again.get(first.id).acknowledged_by == "alice"
    finally:
        store.close()
