"""``serve_services``: the one wiring of runbooks, remediation, the notifier hub and
detection that the API server and both bot commands use, over a real SQLite-backed ``Core``
(real runbook folder, real action service and sweeper, real detection loop)."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from devmesh_core import services
from devmesh_core.actions.models import ActionRequest
from devmesh_core.actions.settings import ActionSettings, HostAllow
from devmesh_core.config import Settings
from devmesh_core.detect.models import Incident, IncidentEvent, Signal
from devmesh_core.detect.settings import DetectSettings
from devmesh_core.notify.base import Notifier
from devmesh_core.reason.runbooks import bundled_runbooks_dir
from devmesh_core.reason.settings import ReasonSettings
from devmesh_core.runtime import Core
from devmesh_core.wiring import serve_services

BROKEN = "---\nid: [not, a, string\n---\nno closing bracket above\n"


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir(exist_ok=True)
    shutil.copy(bundled_runbooks_dir() / "disk-full.md", runbooks / "disk-full.md")
    (runbooks / "broken.md").write_text(BROKEN, encoding="utf-8")
    config: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": f"sqlite:///{tmp_path / 'devmesh.db'}",
        "vectors_enabled": False,
        "reason": ReasonSettings(use_graph=False, llm="none", runbooks_dir=runbooks),
        "detect": DetectSettings(use_graph=False, interval=0.2),
        "actions": ActionSettings(
            allow={"web1": HostAllow(units=["nginx"])},
            expiry_minutes=0.001,  # a proposal is overdue almost at once
            sweep_seconds=0.1,
        ),
        **overrides,
    }
    return Settings(**config)


@pytest.fixture
def core(tmp_path: Path) -> Iterator[Core]:
    core = Core.open(_settings(tmp_path), vectors=False)
    try:
        yield core
    finally:
        core.close()


class _Recorder(Notifier):
    """A channel on the hub that notes each event and the loop it was delivered on."""

    name = "recorder"

    def __init__(self) -> None:
        self.events: list[tuple[IncidentEvent, asyncio.AbstractEventLoop]] = []
        self.arrived = asyncio.Event()

    async def send(self, event: IncidentEvent) -> None:
        self.events.append((event, asyncio.get_running_loop()))
        self.arrived.set()


def _alive(name: str) -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == name and t.is_alive()}


def _open_incident(core: Core) -> Incident:
    """An incident through the real IncidentService (it publishes ``opened``)."""
    assert core.incidents is not None
    at = datetime.now(UTC)

    def build(number: int, incident_id: str) -> Incident:
        signal = Signal(kind="error_spike", at=at, service="nginx", host="web1", count=3)
        return Incident(
            id=incident_id,
            number=number,
            title="nginx 502 errors",
            severity="high",
            origin_service="nginx",
            origin_host="web1",
            services=["nginx"],
            hosts=["web1"],
            opened_at=at,
            updated_at=at,
            signals=[signal],
        )

    incident: Incident = core.incidents.create(build, at=at)
    return incident


async def test_wires_runbooks_remediation_hub_and_detection_then_stops_them(core: Core) -> None:
    sweepers, detectors = _alive("actions-sweep"), _alive("devmesh-detect")
    with capture_logs() as logs:
        async with serve_services(core, detect=True) as wired:
            # Runbooks: the good one loaded, the broken one skipped and named in a warning.
            assert [rb.id for rb in core.runbooks] == ["disk-full"]
            assert len(wired.runbook_problems) == 1 and "broken.md" in wired.runbook_problems[0]
            skipped = [e for e in logs if e["event"] == "runbooks_skipped"]
            assert skipped and skipped[0]["problems"] == wired.runbook_problems
            assert skipped[0]["log_level"] == "warning"

            # Remediation: the service is the core's and its sweeper runs (expires proposals).
            assert wired.actions is not None and core.actions is wired.actions
            assert _alive("actions-sweep") - sweepers
            loop = asyncio.get_running_loop()
            expired = asyncio.Event()

            def on_change(changed: ActionRequest) -> None:  # called in the sweeper thread
                if (
                    changed.status == "expired"
                    and threading.current_thread().name == "actions-sweep"
                ):
                    loop.call_soon_threadsafe(expired.set)

            wired.actions.add_listener(on_change)
            request = wired.actions.propose(
                "restart_unit",
                {"unit": "nginx"},
                host="web1",
                incident_id=None,
                requested_by="system:test",
            )
            await asyncio.wait_for(expired.wait(), 30)
            assert wired.actions.get(request.id).status == "expired"

            # Hub and detection: a runbook trigger stored now opens an incident in the
            # detection thread, delivered through the hub on this (the attached) loop.
            assert core.notifiers is wired.hub and wired.detection is not None
            assert _alive("devmesh-detect") - detectors
            recorder = _Recorder()
            wired.hub.subscribe(recorder)
            line = {
                "timestamp": datetime.now(UTC).isoformat(),
                "service": "postgres",
                "host": "db1",
                "level": "error",
                "message": 'could not extend file "base/1/2": No space left on device',
            }
            assert (await asyncio.to_thread(services.ingest, core.store, [line])).accepted == 1
            await asyncio.wait_for(recorder.arrived.wait(), 30)
            event, loop = recorder.events[0]
            assert event.kind == "opened" and "disk-full" in event.incident.runbook_ids
            assert loop is asyncio.get_running_loop()
            handle = wired.detection
    # Everything started is stopped on the way out.
    assert not _alive("actions-sweep") - sweepers
    assert not _alive("devmesh-detect") - detectors
    assert not handle._thread.is_alive()


async def test_without_detect_incidents_still_reach_the_hub(core: Core) -> None:
    detectors = _alive("devmesh-detect")
    async with serve_services(core, detect=False) as wired:
        assert wired.detection is None and not _alive("devmesh-detect") - detectors
        recorder = _Recorder()
        wired.hub.subscribe(recorder)
        # Another process (or a chat command) opens an incident from a worker thread.
        incident = await asyncio.to_thread(_open_incident, core)
        await asyncio.wait_for(recorder.arrived.wait(), 10)
        event, loop = recorder.events[0]
        assert event.incident.id == incident.id and loop is asyncio.get_running_loop()


async def test_teardown_runs_when_the_block_raises(core: Core) -> None:
    sweepers, detectors = _alive("actions-sweep"), _alive("devmesh-detect")
    with pytest.raises(RuntimeError, match="bot crashed"):
        async with serve_services(core, detect=True) as wired:
            assert wired.actions is not None and wired.detection is not None
            assert _alive("actions-sweep") - sweepers and _alive("devmesh-detect") - detectors
            raise RuntimeError("bot crashed")
    assert not _alive("actions-sweep") - sweepers
    assert not _alive("devmesh-detect") - detectors


async def test_teardown_runs_when_the_bot_task_is_cancelled(core: Core) -> None:
    """Ctrl-C in ``asyncio.run`` cancels the main task: the services still stop."""
    sweepers, detectors = _alive("actions-sweep"), _alive("devmesh-detect")
    entered = asyncio.Event()

    async def bot() -> None:
        async with serve_services(core, detect=True):
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(bot())
    await asyncio.wait_for(entered.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _alive("actions-sweep") - sweepers
    assert not _alive("devmesh-detect") - detectors


async def test_bad_actions_config_turns_remediation_off_not_the_process(tmp_path: Path) -> None:
    bad = tmp_path / "actions.yaml"
    bad.write_text("- not\n- a mapping\n", encoding="utf-8")
    core = Core.open(
        _settings(tmp_path, actions=ActionSettings(config_file=bad)),
        vectors=False,
    )
    try:
        with capture_logs() as logs:
            async with serve_services(core, detect=False) as wired:
                assert wired.actions is None and core.actions is None
                assert core.notifiers is wired.hub and core.incidents is not None
                assert [rb.id for rb in core.runbooks] == ["disk-full"]
        off = [e for e in logs if e["event"] == "remediation_off"]
        assert len(off) == 1 and "must be a mapping" in off[0]["reason"]
        assert off[0]["log_level"] == "warning"
    finally:
        core.close()
