"""The detection engine: runs the detectors over events, correlates their signals into
incidents and drives the lifecycle (auto-resolve, reopen, escalate).

``Detector.process(events)`` takes events in time order and uses their timestamps as the
clock, so the same code serves the live loop and replays (bench, tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from devmesh_core.detect.detectors import (
    ErrorSpikeDetector,
    HealthDetector,
    NewSignatureDetector,
    Recovery,
    RunbookDetector,
    event_id,
    merge_sample,
    signature_of,
)
from devmesh_core.detect.models import (
    SEVERITY_RANK,
    Incident,
    IncidentEventKind,
    Signal,
    max_severity,
)
from devmesh_core.detect.service import IncidentService
from devmesh_core.detect.settings import DetectSettings
from devmesh_core.log import get_logger
from devmesh_core.models import Level, LogEvent
from devmesh_core.reason.runbooks import Runbook

DependencyMap = Callable[[str], set[str]]
"""``service → services it depends on`` (DEPENDS_ON), from the graph or the topology file."""

log = get_logger(__name__)


def no_dependencies(service: str) -> set[str]:
    """The dependency map when neither a graph nor a topology file is available."""
    return set()


class Detector:
    """Detectors + correlation + lifecycle over an :class:`IncidentService`."""

    def __init__(
        self,
        incidents: IncidentService,
        settings: DetectSettings | None = None,
        *,
        runbooks: Sequence[Runbook] = (),
        dependencies: DependencyMap | None = None,
    ) -> None:
        self.incidents = incidents
        self.s = settings or DetectSettings()
        self.spike = ErrorSpikeDetector(self.s)
        self.signature = NewSignatureDetector(self.s)
        self.health = HealthDetector(self.s)
        self.runbook = RunbookDetector(self.s, runbooks)
        self.dependencies = dependencies or no_dependencies
        self.clock: datetime | None = None
        self.signals: list[Signal] = []  # every signal seen (replays read it)
        self._active: dict[int, Incident] = {}
        self._last_update: dict[int, float] = {}
        self._dirty: set[int] = set()  # incidents changed by evidence only, saved per batch
        self._recent: list[Incident] | None = None  # resolved lately (loaded once per batch)
        self._follow_rank = Level(self.s.new_signature_min_level).rank

    # -- state ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The detectors' learned state, JSON-ready (persisted by the loop)."""
        return {
            "spike": self.spike.state(),
            "signature": self.signature.state(),
            "health": self.health.state(),
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        self.spike.load(state.get("spike", {}))
        self.signature.load(state.get("signature", {}))
        self.health.load(state.get("health", {}))

    # -- running -------------------------------------------------------------------------
    def process(self, events: Iterable[LogEvent]) -> list[Signal]:
        """Feed events (time order); return the signals they raised. Incidents are opened,
        joined, reopened and auto-resolved on the way, with the events' time as the clock."""
        self._refresh()
        raised: list[Signal] = []
        for event in events:
            at = event.timestamp
            if self.clock is None or at > self.clock:
                self.clock = at
                self._auto_resolve(at)
            found = [
                *self.health.observe(event),
                *self.runbook.observe(event),
                *self.signature.observe(event),
                *self.spike.observe(event),
            ]
            for recovery in self.health.take_recoveries():
                self._recover(recovery)
            for signal in found:
                self._correlate(signal)
            if not found:
                self._follow(event)
            raised.extend(found)
        self._flush()
        self.signals.extend(raised)
        return raised

    def tick(self, now: datetime) -> list[Signal]:
        """Time-driven checks: silent hosts, and incidents quiet past the resolve delay."""
        self._refresh()
        if self.clock is None or now > self.clock:
            self.clock = now
        found = self.health.tick(now)
        for signal in found:
            self._correlate(signal)
        self._auto_resolve(now)
        self.signals.extend(found)
        return found

    # -- evidence of open incidents --------------------------------------------------------
    def _follow(self, event: LogEvent) -> None:
        """An event of a template an incident already has (same service) is more evidence
        of it, not a new signal: it counts in the incident's timeline (one entry per
        ``spike_window`` of it, so the timeline shows how long it went on), is named in its
        sample, and keeps the incident from auto-resolving while the error goes on. If that
        incident was resolved within ``reopen_window``, the error is back: it reopens."""
        if event.level.rank < self._follow_rank:
            return
        template = signature_of(event)
        for number, incident in self._active.items():
            latest = self._latest_of(incident, template, event.service)
            if latest is not None:
                self._evidence(incident, latest, event)
                self._dirty.add(number)
                return
        if self.s.reopen_window <= 0:
            return
        if self._recent is None:
            since = event.timestamp - timedelta(seconds=self.s.reopen_window)
            self._recent = self.incidents.resolved_since(since)
        for incident in self._recent:
            resolved = incident.resolved_at or incident.updated_at
            if event.timestamp - resolved > timedelta(seconds=self.s.reopen_window):
                continue
            latest = self._latest_of(incident, template, event.service)
            if latest is not None:
                self._recent.remove(incident)
                self._reopen(incident, self._again(latest, event))
                return

    @staticmethod
    def _latest_of(incident: Incident, template: str, service: str) -> Signal | None:
        """The incident's latest timeline entry of ``template`` in ``service``, if any."""
        if template not in incident.template_ids or service not in incident.services:
            return None
        return next(
            (
                s
                for s in reversed(incident.signals)
                if s.template_id == template and s.service in (None, service)
            ),
            None,
        )

    @staticmethod
    def _again(latest: Signal, event: LogEvent) -> Signal:
        """A timeline entry for ``event``: ``latest``'s symptom, seen again."""
        rid = event_id(event)
        return latest.model_copy(
            update={
                "at": event.timestamp,
                "host": event.host,
                "count": 1,
                "event_ids": [rid] if rid is not None else [],
                "detail": "still occurring: " + latest.detail.split(": ", 1)[-1],
            }
        )

    def _evidence(self, incident: Incident, latest: Signal, event: LogEvent) -> None:
        if event.timestamp - latest.at <= timedelta(seconds=self.s.spike_window):
            latest.count += 1
            rid = event_id(event)
            if rid is not None:
                latest.event_ids = merge_sample(latest.event_ids, [rid])
        else:
            self._append(incident, self._again(latest, event))
        if event.host not in incident.hosts:
            incident.hosts.append(event.host)
        incident.last_signal_at = max(incident.last_signal_at or event.timestamp, event.timestamp)
        incident.updated_at = max(incident.updated_at, event.timestamp)

    def _flush(self) -> None:
        """Store incidents that only gathered evidence (no event for notifiers)."""
        for number in sorted(self._dirty):
            incident = self._active.get(number)
            if incident is not None:
                self.incidents.save(incident, None, at=incident.updated_at)
        self._dirty.clear()

    # -- correlation ---------------------------------------------------------------------
    def _refresh(self) -> None:
        """Pick up changes made elsewhere (acknowledged or resolved through the API)."""
        self._active = {i.number: i for i in self.incidents.active()}
        self._recent = None

    def _related(self, signal: Signal, incident: Incident) -> bool:
        if signal.host and signal.host in incident.hosts:
            return True
        if signal.service is None:
            return False
        if signal.service in incident.services:
            return True
        deps = self.dependencies(signal.service)
        if deps & set(incident.services):
            return True
        return any(signal.service in self.dependencies(s) for s in incident.services)

    def _correlate(self, signal: Signal) -> None:
        window = timedelta(seconds=self.s.correlation_window)
        candidates = [
            inc
            for inc in self._active.values()
            if signal.at - (inc.last_signal_at or inc.updated_at) <= window
            and self._related(signal, inc)
        ]
        if candidates:
            self._join(min(candidates, key=lambda i: i.number), signal)
            return
        if self.s.reopen_window > 0:
            since = signal.at - timedelta(seconds=self.s.reopen_window)
            for inc in self.incidents.resolved_since(since):
                if signal.signature in inc.signatures:
                    self._reopen(inc, signal)
                    return
        if SEVERITY_RANK[signal.severity] >= SEVERITY_RANK[self.s.open_min_severity]:
            self._open(signal)

    def _open(self, signal: Signal) -> None:
        def build(number: int, label: str) -> Incident:
            incident = Incident(
                id=label,
                number=number,
                title=signal.detail or signal.kind,
                severity=signal.severity,
                correlation_id=f"{signal.kind}:{signal.service or signal.host or ''}"[:64],
                opened_at=signal.at,
                updated_at=signal.at,
            )
            self._add(incident, signal)
            return incident

        incident = self.incidents.create(build, at=signal.at)
        self._active[incident.number] = incident
        self._last_update[incident.number] = time.monotonic()

    def _reopen(self, incident: Incident, signal: Signal) -> None:
        incident.state = "open"
        incident.resolved_at = None
        incident.resolved_by = None
        incident.acknowledged_at = None
        incident.acknowledged_by = None
        self._add(incident, signal)
        self.incidents.save(incident, "reopened", at=signal.at)
        self._active[incident.number] = incident

    def _join(self, incident: Incident, signal: Signal) -> None:
        before = (len(incident.services), len(incident.hosts), len(incident.runbook_ids))
        severity = incident.severity
        self._add(incident, signal)
        kind: IncidentEventKind | None = None
        if SEVERITY_RANK[incident.severity] > SEVERITY_RANK[severity]:
            kind = "escalated"
        elif before != (len(incident.services), len(incident.hosts), len(incident.runbook_ids)):
            last = self._last_update.get(incident.number, 0.0)
            if time.monotonic() - last >= self.s.update_interval:
                kind = "updated"
        if kind is not None:
            self._last_update[incident.number] = time.monotonic()
        self.incidents.save(incident, kind, at=signal.at)

    def _add(self, incident: Incident, signal: Signal) -> None:
        """Fold a signal into an incident: timeline (throttled), scope, severity, origin."""
        incident.signal_count += 1
        incident.updated_at = max(incident.updated_at, signal.at)
        incident.last_signal_at = max(incident.last_signal_at or signal.at, signal.at)
        incident.severity = max_severity(incident.severity, signal.severity)
        same = self._same(incident, signal)
        if same is not None:
            same.count += signal.count
            same.event_ids = merge_sample(same.event_ids, signal.event_ids)
        else:
            self._append(incident, signal)
        for attr, value in (
            ("services", signal.service),
            ("hosts", signal.host),
            ("template_ids", signal.template_id),
            ("runbook_ids", signal.runbook_id),
        ):
            values: list[str] = getattr(incident, attr)
            if value and value not in values:
                values.append(value)
        if signal.signature not in incident.signatures:
            incident.signatures.append(signal.signature)
            del incident.signatures[:-200]
        incident.origin_service, incident.origin_host = self._origin(incident)

    def _append(self, incident: Incident, signal: Signal) -> None:
        """Add a timeline entry, keeping the first (how it started) and the latest."""
        incident.signals.append(signal)
        if len(incident.signals) > self.s.max_timeline:
            keep = self.s.max_timeline // 4
            incident.signals = (
                incident.signals[:keep] + incident.signals[-(self.s.max_timeline - keep) :]
            )

    def _same(self, incident: Incident, signal: Signal) -> Signal | None:
        """The timeline entry ``signal`` folds into: a repeat of the same signal within the
        throttle, or — for a new template — the new-template entry of the same host a
        moment earlier (one crash dump split into many lines is one symptom)."""
        throttle = timedelta(seconds=self.s.throttle)
        group = timedelta(seconds=self.s.group_seconds)
        for s in reversed(incident.signals[-20:]):
            if s.signature == signal.signature and signal.at - s.at <= throttle:
                return s
            if (
                signal.kind == "new_signature"
                and s.kind == "new_signature"
                and s.host == signal.host
                and s.service == signal.service
                and timedelta(0) <= signal.at - s.at <= group
            ):
                return s
        return None

    def _origin(self, incident: Incident) -> tuple[str | None, str | None]:
        """The upstream-most service with signals (nothing else in the incident is one of its
        dependencies, directly or through others); ties go to the first in time."""
        first: dict[str, Signal] = {}
        for signal in incident.signals:
            if signal.service and signal.service not in first:
                first[signal.service] = signal
        if not first:
            host = incident.signals[0].host if incident.signals else None
            return None, host
        services = set(first)

        def upstream(service: str) -> set[str]:
            seen: set[str] = set()
            todo = [service]
            while todo:
                for dep in self.dependencies(todo.pop()):
                    if dep not in seen:
                        seen.add(dep)
                        todo.append(dep)
            return seen

        roots = [s for s in services if not (upstream(s) & (services - {s}))]
        candidates = roots or list(services)
        origin = min(candidates, key=lambda s: (first[s].at, s))
        return origin, first[origin].host

    # -- lifecycle -----------------------------------------------------------------------
    def _auto_resolve(self, now: datetime) -> None:
        quiet = timedelta(seconds=self.s.auto_resolve_after)
        for number, incident in list(self._active.items()):
            last = incident.last_signal_at or incident.updated_at
            if now - last >= quiet:
                incident.state = "resolved"
                incident.resolved_at = now
                incident.resolved_by = "system:auto"
                incident.note = f"quiet for {self.s.auto_resolve_after:g}s"
                incident.updated_at = now
                self.incidents.save(incident, "resolved", at=now)
                del self._active[number]
                if self._recent is not None:
                    self._recent.append(incident)

    def _recover(self, recovery: Recovery) -> None:
        """Resolve incidents made only of the recovered host's (or service's) health
        signals: the node is back, the service recovered."""
        for number, incident in list(self._active.items()):
            health = [
                s
                for s in incident.signals
                if s.kind in ("heartbeat_missing", "health_event")
                and s.host == recovery.host
                and (recovery.service is None or s.service in (None, recovery.service))
            ]
            if not health or len(health) != len(incident.signals):
                continue
            incident.state = "resolved"
            incident.resolved_at = recovery.at
            incident.resolved_by = "system:recovered"
            incident.note = f"{recovery.service or recovery.host} is back"
            incident.updated_at = recovery.at
            self.incidents.save(incident, "resolved", at=recovery.at)
            del self._active[number]
