"""Detectors on synthetic series, and the engine's correlation and lifecycle (real SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devmesh_core.detect.detectors import (
    ErrorSpikeDetector,
    HealthDetector,
    NewSignatureDetector,
    RunbookDetector,
)
from devmesh_core.detect.engine import Detector
from devmesh_core.detect.replay import SCENARIO_DEPENDENCIES, outage_scenario, replay, stored
from devmesh_core.detect.service import IncidentService
from devmesh_core.detect.settings import DetectSettings
from devmesh_core.errors import InvalidInput, NotFound
from devmesh_core.models import StoredEvent
from devmesh_core.reason.runbooks import parse_runbook
from devmesh_core.store import LogStore, open_store

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    s = open_store(f"sqlite:///{tmp_path / 'd.db'}")
    yield s
    s.close()


def errors(
    start: datetime,
    n: int,
    *,
    service: str = "svc",
    host: str = "h1",
    spread: float = 200.0,
    first_id: int = 1,
    message: str = "request failed with code {i}",
) -> list[StoredEvent]:
    return [
        stored(
            first_id + i,
            start + timedelta(seconds=spread * i / max(n, 1)),
            service,
            host,
            "ERROR",
            message.format(i=i),
        )
        for i in range(n)
    ]


# ---------------------------------------------------------------------------- spike


def test_quiet_service_with_two_errors_is_no_spike() -> None:
    spike = ErrorSpikeDetector(DetectSettings())
    found = [s for e in errors(T0, 2) for s in spike.observe(e)]
    assert found == []


def test_new_service_burst_over_minimum_is_a_spike() -> None:
    spike = ErrorSpikeDetector(DetectSettings(spike_min_errors=10))
    found = [s for e in errors(T0, 15) for s in spike.observe(e)]
    kinds = {(s.service, s.host) for s in found}
    assert kinds == {("svc", "h1"), (None, "h1")}  # per service and per host, once each
    assert all(s.count == 10 for s in found)


def test_chatty_service_usual_volume_is_no_spike_but_a_jump_is() -> None:
    settings = DetectSettings(spike_window=60, spike_buckets=1, spike_history=12)
    spike = ErrorSpikeDetector(settings)
    found = []
    row = 1
    for window in range(10):  # ten windows of ~500 errors each
        n = 480 + (window % 3) * 20
        batch = errors(T0 + timedelta(minutes=window), n, spread=59, first_id=row)
        row += n
        signals = [s for e in batch for s in spike.observe(e)]
        if window > 0:  # the very first window has no baseline yet: a new service's burst
            found += signals
    assert found == []
    jump = errors(T0 + timedelta(minutes=10), 3000, spread=59, first_id=row)
    found = [s for e in jump for s in spike.observe(e)]
    assert {s.service for s in found} == {"svc", None}
    first = found[0]
    assert first.count > 500 and "usual 500" in first.detail


# ---------------------------------------------------------------------------- signatures


def test_new_signature_only_after_warmup_and_at_error_level() -> None:
    det = NewSignatureDetector(DetectSettings(new_signature_warmup=600))
    early = stored(1, T0, "api", "a1", "ERROR", "boom during start")
    assert det.observe(early) == []  # warming up: everything is new
    info = stored(2, T0 + timedelta(minutes=20), "api", "a1", "INFO", "a new info line 1")
    assert det.observe(info) == []
    late = stored(3, T0 + timedelta(minutes=20), "api", "a1", "ERROR", "disk quota exceeded")
    (signal,) = det.observe(late)
    assert signal.kind == "new_signature" and signal.event_ids == [3]
    again = stored(4, T0 + timedelta(minutes=21), "api", "a1", "ERROR", "disk quota exceeded")
    assert det.observe(again) == []


def test_known_signature_at_a_new_host() -> None:
    det = NewSignatureDetector(DetectSettings(new_signature_warmup=0))
    det.observe(stored(1, T0, "api", "a1", "CRITICAL", "out of memory: killed process 12"))
    (signal,) = det.observe(
        stored(
            2,
            T0 + timedelta(minutes=1),
            "api",
            "a2",
            "CRITICAL",
            "out of memory: killed process 99",
        )
    )
    assert signal.kind == "new_host_signature" and signal.host == "a2"
    assert signal.severity == "medium"


def test_state_round_trip_keeps_known_signatures() -> None:
    det = NewSignatureDetector(DetectSettings(new_signature_warmup=0))
    det.observe(stored(1, T0, "api", "a1", "ERROR", "thing broke"))
    again = NewSignatureDetector(DetectSettings(new_signature_warmup=0))
    again.load(det.state())
    assert again.observe(stored(2, T0, "api", "a1", "ERROR", "thing broke")) == []


# ---------------------------------------------------------------------------- health


def test_health_events_and_missing_heartbeat() -> None:
    det = HealthDetector(DetectSettings(heartbeat_timeout=60))
    (unhealthy,) = det.observe(
        stored(
            1,
            T0,
            "nginx",
            "web1",
            "ERROR",
            "service_unhealthy nginx",
            event_type="service_unhealthy",
        )
    )
    assert unhealthy.kind == "health_event" and unhealthy.severity == "high"
    det.observe(stored(2, T0, "devmesh-shipper", "n1", "DEBUG", "hb", event_type="heartbeat"))
    assert det.tick(T0 + timedelta(seconds=59)) == []
    (missing,) = det.tick(T0 + timedelta(seconds=61))
    assert missing.kind == "heartbeat_missing" and missing.host == "n1"
    assert det.tick(T0 + timedelta(seconds=120)) == []  # once, not every tick
    det.observe(
        stored(
            3,
            T0 + timedelta(seconds=130),
            "devmesh-shipper",
            "n1",
            "DEBUG",
            "hb",
            event_type="heartbeat",
        )
    )
    (back,) = det.take_recoveries()
    assert back.host == "n1"


def test_runbook_trigger_attaches_the_runbook() -> None:
    runbook = parse_runbook(
        "---\nid: disk-full\ntitle: Disk full\ntriggers:\n"
        "  - pattern: 'No space left on device'\n    level: ERROR\n    severity: high\n---\n"
        "Free some space.\n"
    )
    det = RunbookDetector(DetectSettings(), [runbook])
    assert det.observe(stored(1, T0, "pg", "db1", "INFO", "No space left on device")) == []
    (signal,) = det.observe(stored(2, T0, "pg", "db1", "ERROR", "write: No space left on device"))
    assert signal.runbook_id == "disk-full" and signal.severity == "high"


def test_runbook_triggers_without_needles_are_still_checked() -> None:
    """The needle pre-check skips runbooks only when none of their triggers can fire."""
    words = parse_runbook(
        "---\nid: disk-full\ntitle: Disk full\ntriggers:\n"
        "  - pattern: 'No space left on device'\n---\nbody\n"
    )
    shapes = parse_runbook(
        "---\nid: slow\ntitle: Slow\ntriggers:\n  - pattern: '\\d{5,} ?ms'\n---\nbody\n"
    )
    assert words.triggers[0].needles is not None and shapes.triggers[0].needles is None
    det = RunbookDetector(DetectSettings(), [words, shapes])
    (slow,) = det.observe(stored(1, T0, "api", "h1", "WARNING", "GET / took 123456 ms"))
    assert slow.runbook_id == "slow"
    assert det.observe(stored(2, T0, "api", "h1", "ERROR", "GET / took 12 ms")) == []
    (full,) = det.observe(stored(3, T0, "pg", "h1", "ERROR", "write: NO SPACE LEFT ON DEVICE"))
    assert full.runbook_id == "disk-full"


# ---------------------------------------------------------------------------- engine


def test_outage_scenario_is_one_incident_with_the_database_as_origin(store: LogStore) -> None:
    events, outage = outage_scenario(T0)
    result = replay(store, events, dependencies=SCENARIO_DEPENDENCIES)
    assert len(result.incidents) == 1
    incident = result.incidents[0]
    assert incident.origin_service == "postgres"
    assert set(incident.services) == {"postgres", "api", "web"}
    first_signal = min(s.at for s in result.detector.signals)
    assert incident.opened_at - first_signal <= timedelta(seconds=60)
    assert incident.opened_at - outage <= timedelta(seconds=60)


def test_origin_is_upstream_even_when_a_client_complains_first(store: LogStore) -> None:
    settings = DetectSettings(new_signature_warmup=0)
    events = [
        stored(1, T0, "api", "app1", "INFO", "started"),
        stored(2, T0, "postgres", "db1", "INFO", "started"),
        stored(3, T0 + timedelta(minutes=5), "api", "app1", "CRITICAL", "db connection refused"),
        stored(
            4,
            T0 + timedelta(minutes=5, seconds=20),
            "postgres",
            "db1",
            "ERROR",
            "could not write block: I/O error",
        ),
    ]
    result = replay(store, events, settings=settings, dependencies={"api": ["postgres"]})
    (incident,) = result.incidents
    assert incident.origin_service == "postgres"


def test_unrelated_services_get_separate_incidents(store: LogStore) -> None:
    settings = DetectSettings(new_signature_warmup=0)
    events = [
        stored(1, T0, "mail", "m1", "CRITICAL", "smtp relay down"),
        stored(2, T0 + timedelta(seconds=5), "backup", "b1", "CRITICAL", "snapshot failed"),
    ]
    assert len(replay(store, events, settings=settings).incidents) == 2


def test_auto_resolve_then_reopen_then_flapping_collapses(store: LogStore) -> None:
    settings = DetectSettings(
        new_signature_warmup=0, auto_resolve_after=600, reopen_window=3600, spike_enabled=False
    )
    service = IncidentService(store)
    det = Detector(service, settings)
    boot = stored(1, T0, "nginx", "web1", "INFO", "started")
    flap = [
        stored(
            10 + i,
            T0 + timedelta(minutes=1 + 5 * i),
            "nginx",
            "web1",
            "ERROR",
            "service_unhealthy nginx",
            event_type="service_unhealthy",
        )
        for i in range(6)  # flapping every 5 minutes
    ]
    det.process([boot, *flap])
    (incident,) = service.list()
    assert incident.state == "open"
    det.tick(flap[-1].timestamp + timedelta(minutes=11))
    assert service.get(incident.id).state == "resolved"
    det.process(
        [
            stored(
                50,
                flap[-1].timestamp + timedelta(minutes=30),
                "nginx",
                "web1",
                "ERROR",
                "service_unhealthy nginx",
                event_type="service_unhealthy",
            )
        ]
    )
    (again,) = service.list()  # the same incident reopened, not a new one
    assert again.id == incident.id and again.state == "open"


def test_node_back_online_resolves_its_offline_incident(store: LogStore) -> None:
    service = IncidentService(store)
    det = Detector(service, DetectSettings(heartbeat_timeout=60))
    det.process([stored(1, T0, "devmesh-shipper", "n1", "DEBUG", "hb", event_type="heartbeat")])
    det.tick(T0 + timedelta(seconds=90))
    (incident,) = service.list()
    assert incident.state == "open" and incident.hosts == ["n1"]
    det.process(
        [
            stored(
                2,
                T0 + timedelta(seconds=200),
                "devmesh-shipper",
                "n1",
                "DEBUG",
                "hb",
                event_type="heartbeat",
            )
        ]
    )
    assert service.get(incident.id).resolved_by == "system:recovered"


# ---------------------------------------------------------------------------- service


def test_lifecycle_rules_and_ids(store: LogStore) -> None:
    service = IncidentService(store)
    seen = []
    service.add_listener(lambda e: seen.append(e.kind))
    det = Detector(service, DetectSettings(new_signature_warmup=0))
    det.process([stored(1, T0, "api", "a1", "CRITICAL", "panic: nil map")])
    (incident,) = service.list("active")
    number = incident.number
    assert service.get(f"inc-{number}").id == service.get(str(number)).id == f"INC-{number}"
    with pytest.raises(NotFound):
        service.get("INC-999")
    with pytest.raises(InvalidInput):
        service.get("banana")
    acked = service.acknowledge(incident.id, "alice")
    assert acked.acknowledged_by == "alice"
    with pytest.raises(InvalidInput, match="cannot become acknowledged"):
        service.acknowledge(incident.id, "bob")
    service.mitigate(incident.id, "alice")
    done = service.resolve(incident.id, "alice", note="restarted")
    assert done.state == "resolved" and done.note == "restarted"
    with pytest.raises(InvalidInput):
        service.resolve(incident.id, "alice")
    assert seen == ["opened", "acknowledged", "mitigated", "resolved"]
    service.attach_diagnosis(incident.id, {"root_cause": "nil map"})
    assert service.get(incident.id).diagnosis == {"root_cause": "nil map"}
    assert service.list("resolved")[0].id == incident.id
    assert service.list("active") == []


# ---------------------------------------------------------------------------- noise control


def test_fleet_wide_template_at_a_new_host_joins_but_opens_nothing(store: LogStore) -> None:
    settings = DetectSettings(
        new_signature_warmup=0,
        new_host_fleet_hosts=3,
        new_host_fleet_age=3600,
        spike_enabled=False,
        auto_resolve_after=600,
    )
    det = NewSignatureDetector(settings)
    msg = "job loader: cannot open program image {i}"
    # a fast spread (three hosts in three minutes) is news: medium, it opens incidents
    fast = [stored(i, T0 + timedelta(minutes=i), "app", f"n{i}", "CRITICAL", msg) for i in range(3)]
    signals = [s for e in fast for s in det.observe(e)]
    assert [s.kind for s in signals] == [
        "new_signature",
        "new_host_signature",
        "new_host_signature",
    ]
    assert signals[1].severity == "medium"
    # a day later, on a fourth host: the template is background by now
    (late,) = det.observe(stored(9, T0 + timedelta(days=1), "app", "n9", "CRITICAL", msg))
    assert late.severity == "low" and "fleet-wide" in late.detail

    events = [*fast, stored(9, T0 + timedelta(days=1), "app", "n9", "CRITICAL", msg)]
    result = replay(store, events, settings=settings)
    assert len(result.incidents) == 1  # the late one opened nothing of its own


def test_crash_dump_lines_of_one_host_are_one_signal(store: LogStore, tmp_path: Path) -> None:
    settings = DetectSettings(new_signature_warmup=0, spike_enabled=False)
    boot = stored(1, T0, "kernel", "n1", "INFO", "booted")
    dump = [
        "machine check: instruction fetch error",
        "instruction address: 0x00004ed8",
        "exception syndrome register: 0x00800000",
        "core configuration register: 0x00002000",
    ]
    at = T0 + timedelta(hours=1)
    events = [
        boot,
        *(
            stored(10 + i, at + timedelta(milliseconds=300 * i), "kernel", "n1", "CRITICAL", m)
            for i, m in enumerate(dump)
        ),
    ]
    result = replay(store, events, settings=settings)
    (incident,) = result.incidents
    (entry,) = incident.signals
    assert entry.count == 4 and entry.event_ids == [10, 11, 12, 13]
    assert len(incident.template_ids) == 4  # every template of the dump is listed
    # the same lines far apart in time are separate symptoms (still one incident: one host)
    other = open_store(f"sqlite:///{tmp_path / 'spread.db'}")
    spread = replay(
        other,
        [
            boot,
            *(
                stored(10 + i, at + timedelta(seconds=30 * i), "kernel", "n1", "CRITICAL", m)
                for i, m in enumerate(dump)
            ),
        ],
        settings=settings,
    )
    other.close()
    assert len(spread.incidents[0].signals) == 4


def test_an_ongoing_error_keeps_its_incident_open_and_named(store: LogStore) -> None:
    settings = DetectSettings(
        new_signature_warmup=0, spike_enabled=False, auto_resolve_after=600, reopen_window=3600
    )
    service = IncidentService(store)
    det = Detector(service, settings)
    # the same error every 5 minutes for 2 hours: no new signal after the first, but the
    # incident must neither auto-resolve (10 min quiet) nor lose track of the later lines
    events = [
        stored(i + 1, T0 + timedelta(minutes=5 * i), "api", "a1", "CRITICAL", "TLB miss fault")
        for i in range(24)
    ]
    det.process(events)
    (incident,) = service.list()
    assert incident.state == "open"
    assert incident.last_signal_at == events[-1].timestamp
    named = {i for s in incident.signals for i in s.event_ids}
    assert events[-1].id in named and events[12].id in named
    assert sum(s.count for s in incident.signals) == 24
    # quiet → resolved; the error returning within the reopen window reopens it
    det.tick(events[-1].timestamp + timedelta(minutes=11))
    assert service.get(incident.id).state == "resolved"
    back = stored(
        99, events[-1].timestamp + timedelta(minutes=40), "api", "a1", "CRITICAL", "TLB miss fault"
    )
    det.process([back])
    again = service.get(incident.id)
    assert again.state == "open" and 99 in again.signals[-1].event_ids
    assert len(service.list()) == 1


def test_sample_keeps_how_it_started_and_how_it_goes_on() -> None:
    from devmesh_core.detect.detectors import merge_sample

    ids: list[int] = []
    for i in range(100):
        ids = merge_sample(ids, [i])
    assert len(ids) == 20 and ids[:10] == list(range(10)) and ids[-1] == 99
