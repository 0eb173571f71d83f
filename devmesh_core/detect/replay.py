"""Replays: feed recorded events through the detectors with their own timestamps as the
clock, against a scratch incident store. Used by the bench, the tests and anyone tuning
``DetectSettings`` on their own history.

Also holds the scripted outage scenario (a database dies → its clients log connection
refused → the web tier returns 502s) that checks correlation and origin end to end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from devmesh_core.detect.engine import Detector
from devmesh_core.detect.models import Incident
from devmesh_core.detect.service import IncidentService
from devmesh_core.detect.settings import DetectSettings
from devmesh_core.models import Level, StoredEvent
from devmesh_core.reason.runbooks import Runbook
from devmesh_core.store.base import LogStore


def stored(
    row_id: int,
    at: datetime,
    service: str,
    host: str,
    level: Level | str,
    message: str,
    *,
    event_type: str | None = None,
    template_id: str | None = None,
) -> StoredEvent:
    """A replayable event with a row id (so signals can name the events behind them)."""
    return StoredEvent(
        id=row_id,
        ingested_at=at,
        timestamp=at,
        service=service,
        host=host,
        level=Level.parse(level),
        message=message,
        event_type=event_type,
        template_id=template_id,
        source="replay",
    )


@dataclass
class ReplayResult:
    """The incidents a replay produced (all of them, any state) and its detector."""

    incidents: list[Incident]
    detector: Detector


def replay(
    store: LogStore,
    events: Iterable[StoredEvent],
    *,
    settings: DetectSettings | None = None,
    dependencies: Mapping[str, Sequence[str]] | None = None,
    runbooks: Sequence[Runbook] = (),
    until: datetime | None = None,
) -> ReplayResult:
    """Run ``events`` (time order) through a fresh detector whose incidents go to ``store``
    (a scratch SQL store). ``until`` advances the clock afterwards (auto-resolve)."""
    deps = {k: set(v) for k, v in (dependencies or {}).items()}
    service = IncidentService(store)
    detector = Detector(
        service,
        settings or DetectSettings(),
        runbooks=runbooks,
        dependencies=lambda s: deps.get(s, set()),
    )
    ordered: list[StoredEvent] = sorted(events, key=lambda e: (e.timestamp, e.id))
    detector.process(ordered)
    if until is not None:
        detector.tick(until)
    return ReplayResult(service.list(limit=1_000), detector)


SCENARIO_DEPENDENCIES: dict[str, list[str]] = {"web": ["api"], "api": ["postgres"]}


def outage_scenario(start: datetime) -> tuple[list[StoredEvent], datetime]:
    """Thirty quiet minutes of three services, then the database dies at ``start + 30
    min``: postgres logs its shutdown and a health check fails, the API's connections are
    refused, the web tier answers 502. Returns the events and the moment it starts."""
    events: list[StoredEvent] = []
    n = 0

    def add(at: datetime, service: str, host: str, level: str, message: str, **kw: Any) -> None:
        nonlocal n
        n += 1
        events.append(stored(n, at, service, host, level, message, **kw))

    for i in range(180):  # 30 minutes, every 10 s
        at = start + timedelta(seconds=10 * i)
        add(at, "postgres", "db1", "INFO", f"checkpoint complete: wrote {i % 7 + 3} buffers")
        add(at, "api", "app1", "INFO", f"GET /items 200 in {12 + i % 5} ms")
        add(at, "web", "web1", "INFO", f"10.0.0.{i % 50} GET /items 200")
        if i % 60 == 30:
            add(at, "api", "app1", "WARNING", "slow query took 1200 ms")
    outage = start + timedelta(minutes=30)
    add(outage, "postgres", "db1", "CRITICAL", "FATAL: the database system is shutting down")
    add(
        outage + timedelta(seconds=2),
        "postgres",
        "db1",
        "ERROR",
        "service_unhealthy postgres: pg_isready failed",
        event_type="service_unhealthy",
    )
    for i in range(120):  # two minutes of clients failing
        at = outage + timedelta(seconds=3 + i)
        add(
            at,
            "api",
            "app1",
            "ERROR",
            f"could not connect to server: Connection refused (db1:5432) request {1000 + i}",
        )
        if i >= 5:
            add(at, "web", "web1", "ERROR", f"upstream returned 502 Bad Gateway for /items/{i}")
            add(
                at + timedelta(milliseconds=500),
                "web",
                "web1",
                "ERROR",
                f"upstream returned 502 Bad Gateway for /items/{i + 500}",
            )
    return events, outage
