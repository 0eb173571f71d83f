"""``IncidentService``: incidents in the SQL store, their lifecycle, and the events notifiers get.

Every front end (API, CLI, bots) and the detector go through it, so a state change is
validated in one place, stored once, projected to the graph once and published once to the
listeners (the notifier hub). Sync and thread-safe: the detector runs it in its own thread
while API handlers acknowledge from the thread pool.
"""

from __future__ import annotations

import builtins
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from devmesh_core.detect.models import (
    Incident,
    IncidentEvent,
    IncidentEventKind,
    IncidentState,
    IncidentSummary,
    TemplateCount,
)
from devmesh_core.errors import DevMeshError, InvalidInput, NotFound
from devmesh_core.log import get_logger
from devmesh_core.models import from_micros, to_micros
from devmesh_core.store.base import LogStore

Listener = Callable[[IncidentEvent], None]
GraphProvider = Callable[[], Any]  # () -> GraphStore | None

_COLUMNS = "number, body"
_ALLOWED: dict[str, tuple[str, ...]] = {
    # target state: states it may be reached from
    "acknowledged": ("open",),
    "mitigated": ("open", "acknowledged"),
    "resolved": ("open", "acknowledged", "mitigated"),
}

_EVENT_OF: dict[IncidentState, IncidentEventKind] = {
    "acknowledged": "acknowledged",
    "mitigated": "mitigated",
    "resolved": "resolved",
    "open": "reopened",
}

log = get_logger(__name__)


def parse_incident_id(incident_id: str) -> int:
    """The number of ``"INC-42"``, ``"inc-42"`` or ``"42"``; ``InvalidInput`` otherwise."""
    text = incident_id.strip()
    if text.lower().startswith("inc-"):
        text = text[4:]
    if not text.isdigit():
        raise InvalidInput(f"not an incident id: {incident_id!r} (use INC-42 or 42)")
    return int(text)


def incident_label(number: int) -> str:
    """The short id of incident ``number``: ``INC-<number>``."""
    return f"INC-{number}"


def _now() -> datetime:
    return datetime.now(UTC)


class IncidentRepository:
    """SQL access to the ``incidents`` and ``detect_state`` tables (schema version 5), in
    the log database, through the store's transaction runner."""

    def __init__(self, store: LogStore) -> None:
        run = getattr(store, "run", None)
        if run is None:
            raise InvalidInput(f"the {store.backend} store cannot hold incidents (not SQL)")
        self.store = store
        self._run: Callable[..., Any] = run
        self._p: str = getattr(store, "placeholder", "?")

    # -- incidents -----------------------------------------------------------------------
    def insert(self, build: Callable[[int], Incident]) -> Incident:
        """Insert a new incident; ``build(number)`` makes it once its number is known."""
        p = self._p

        def work(cur: Any) -> Incident:
            now = to_micros(_now())
            cur.execute(
                "INSERT INTO incidents (state, severity, correlation_id, opened_at, updated_at, "
                f"body) VALUES ({p}, {p}, {p}, {p}, {p}, {p})",
                ("open", "low", "", now, now, "{}"),
            )
            incident = build(int(cur.lastrowid))
            self._write(cur, incident)
            return incident

        # not retried: a lost connection after the insert would number the incident twice
        result: Incident = self.store._run(work, write=True, retry=False)  # type: ignore[attr-defined]
        return result

    def _write(self, cur: Any, incident: Incident) -> None:
        p = self._p
        cur.execute(
            f"UPDATE incidents SET state = {p}, severity = {p}, correlation_id = {p}, "
            f"opened_at = {p}, updated_at = {p}, resolved_at = {p}, body = {p} "
            f"WHERE number = {p}",
            (
                incident.state,
                incident.severity,
                incident.correlation_id[:64],
                to_micros(incident.opened_at),
                to_micros(incident.updated_at),
                to_micros(incident.resolved_at) if incident.resolved_at else None,
                incident.model_dump_json(),
                incident.number,
            ),
        )

    def update(self, incident: Incident) -> None:
        """Store the incident's new form (idempotent: a retry writes the same row)."""
        self._run(lambda cur: self._write(cur, incident), write=True)

    def get(self, number: int) -> Incident | None:
        p = self._p

        def read(cur: Any) -> Any:
            cur.execute(f"SELECT {_COLUMNS} FROM incidents WHERE number = {p}", (number,))
            return cur.fetchone()

        row = self._run(read, write=False)
        return self._incident(row) if row else None

    def list(self, state: str | None = None, *, limit: int = 50) -> builtins.list[Incident]:
        p = self._p
        where, params = "", []
        if state == "active":
            where, params = f"WHERE state <> {p}", ["resolved"]
        elif state is not None:
            where, params = f"WHERE state = {p}", [state]

        def read(cur: Any) -> builtins.list[Any]:
            cur.execute(
                f"SELECT {_COLUMNS} FROM incidents {where} ORDER BY number DESC LIMIT {int(limit)}",
                params,
            )
            return list(cur.fetchall())

        return [self._incident(row) for row in self._run(read, write=False) if row[1] != "{}"]

    def resolved_since(self, since: datetime, *, limit: int = 200) -> builtins.list[Incident]:
        p = self._p

        def read(cur: Any) -> builtins.list[Any]:
            cur.execute(
                f"SELECT {_COLUMNS} FROM incidents WHERE state = {p} AND resolved_at >= {p} "
                f"ORDER BY number DESC LIMIT {int(limit)}",
                ("resolved", to_micros(since)),
            )
            return list(cur.fetchall())

        return [self._incident(row) for row in self._run(read, write=False)]

    def counts_by_severity(self) -> dict[str, int]:
        def read(cur: Any) -> builtins.list[Any]:
            cur.execute(
                "SELECT severity, COUNT(*) FROM incidents WHERE state <> 'resolved' "
                "GROUP BY severity"
            )
            return list(cur.fetchall())

        return {str(sev): int(n) for sev, n in self._run(read, write=False)}

    @staticmethod
    def _incident(row: Sequence[Any]) -> Incident:
        return Incident.model_validate_json(row[1])

    # -- detector state ------------------------------------------------------------------
    def get_state(self, name: str) -> dict[str, Any] | None:
        p = self._p

        def read(cur: Any) -> Any:
            cur.execute(f"SELECT value FROM detect_state WHERE name = {p}", (name,))
            return cur.fetchone()

        row = self._run(read, write=False)
        return orjson.loads(row[0]) if row else None

    def set_state(self, name: str, value: dict[str, Any]) -> None:
        sql = self.store.upsert_statement(  # type: ignore[attr-defined]
            "detect_state",
            ("name", "value", "updated_at"),
            ("name",),
            replace=("value", "updated_at"),
        )
        payload = orjson.dumps(value).decode()
        self._run(lambda cur: cur.execute(sql, (name, payload, to_micros(_now()))), write=True)


class IncidentService:
    """Incidents: listing, lifecycle changes, and publication of every change to listeners.

    ``graph`` is a callable returning the ``GraphStore`` or ``None`` (the graph is optional
    and opened lazily); incidents are projected to it as ``Incident`` nodes with ``INVOLVES``
    edges and past fixes are recalled from it for summaries.
    """

    def __init__(self, store: LogStore, *, graph: GraphProvider | None = None) -> None:
        self.repo = IncidentRepository(store)
        self.store = store
        self._graph = graph
        self._lock = threading.RLock()
        self._listeners: builtins.list[Listener] = []

    # -- contract ------------------------------------------------------------------------
    def list(self, state: str | None = None, *, limit: int = 50) -> builtins.list[Incident]:
        """Incidents newest first; ``state="active"`` means not resolved."""
        if state is not None and state not in (
            "active",
            "open",
            "acknowledged",
            "mitigated",
            "resolved",
        ):
            raise InvalidInput(
                f"unknown state {state!r} (use active, open, acknowledged, mitigated, resolved)"
            )
        return self.repo.list(state, limit=max(1, min(int(limit), 1_000)))

    def get(self, incident_id: str) -> Incident:
        """The incident with this id (``INC-42``, ``inc-42`` or ``42``); ``NotFound``."""
        found = self.repo.get(parse_incident_id(incident_id))
        if found is None:
            raise NotFound(f"no incident {incident_id}")
        return found

    def acknowledge(self, incident_id: str, by: str) -> Incident:
        """Someone is on it: notifications stop escalating it."""
        return self._transition(incident_id, "acknowledged", by)

    def mitigate(self, incident_id: str, by: str) -> Incident:
        """The impact is stopped (e.g. a restart) though the cause may remain."""
        return self._transition(incident_id, "mitigated", by)

    def resolve(self, incident_id: str, by: str, note: str | None = None) -> Incident:
        """Over. A returning signature within the reopen window reopens it."""
        return self._transition(incident_id, "resolved", by, note=note)

    def attach_diagnosis(self, incident_id: str, diagnosis: dict[str, Any]) -> None:
        """Keep the latest reasoning result with the incident (no notification)."""
        with self._lock:
            incident = self.get(incident_id)
            incident.diagnosis = diagnosis
            self.repo.update(incident)

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback`` with every ``IncidentEvent`` (the notifier hub subscribes here)."""
        self._listeners.append(callback)

    # -- for the detector ----------------------------------------------------------------
    def active(self) -> builtins.list[Incident]:
        """Every incident not resolved (the detector correlates new signals against them)."""
        return self.repo.list("active", limit=1_000)

    def resolved_since(self, since: datetime) -> builtins.list[Incident]:
        """Incidents resolved at or after ``since`` (candidates for reopening)."""
        return self.repo.resolved_since(since)

    def create(self, build: Callable[[int, str], Incident], *, at: datetime) -> Incident:
        """Store a new incident built by ``build(number, id)`` and publish ``opened``."""
        with self._lock:
            incident = self.repo.insert(lambda n: build(n, incident_label(n)))
            self._changed(incident, "opened", at)
            return incident

    def save(self, incident: Incident, kind: IncidentEventKind | None, *, at: datetime) -> None:
        """Store the detector's change of an incident; publish ``kind`` unless ``None``."""
        with self._lock:
            self.repo.update(incident)
            self._changed(incident, kind, at)

    def summary(self, incident: Incident) -> IncidentSummary:
        """The evidence in short: top templates with counts, first/last seen, places,
        runbooks and what fixed similar incidents before (from the graph)."""
        counts: Counter[str] = Counter()
        for signal in incident.signals:
            if signal.template_id:
                counts[signal.template_id] += signal.count
        texts: dict[str, str] = {}
        if counts:
            try:
                texts = self.store.template_texts(list(counts))
            except DevMeshError as exc:
                log.warning("summary_templates_unavailable", error=str(exc))
        top = [
            TemplateCount(template_id=tid, template=texts.get(tid, tid), count=n)
            for tid, n in counts.most_common(5)
        ]
        first = min((s.at for s in incident.signals), default=incident.opened_at)
        last = incident.last_signal_at or max(
            (s.at for s in incident.signals), default=incident.updated_at
        )
        where = incident.origin_service or (incident.services[0] if incident.services else None)
        headline = f"{incident.id} [{incident.severity}] {incident.title}"
        if where:
            headline += f" (suspected origin: {where})"
        return IncidentSummary(
            headline=headline,
            top_templates=top,
            first_seen=first,
            last_seen=last,
            hosts=list(incident.hosts),
            services=list(incident.services),
            runbook_ids=list(incident.runbook_ids),
            past_fixes=self._past_fixes(incident),
        )

    # -- internals -----------------------------------------------------------------------
    def _transition(
        self, incident_id: str, target: IncidentState, by: str, *, note: str | None = None
    ) -> Incident:
        with self._lock:
            incident = self.get(incident_id)
            if incident.state not in _ALLOWED[target]:
                raise InvalidInput(f"{incident.id} is {incident.state}; it cannot become {target}")
            now = _now()
            incident.state = target
            incident.updated_at = now
            if target == "acknowledged":
                incident.acknowledged_at, incident.acknowledged_by = now, by
            elif target == "mitigated":
                incident.acknowledged_at = incident.acknowledged_at or now
                incident.acknowledged_by = incident.acknowledged_by or by
            else:
                incident.resolved_at, incident.resolved_by = now, by
                incident.note = note
            self.repo.update(incident)
            self._changed(incident, _EVENT_OF[target], now)
            return incident

    def _changed(self, incident: Incident, kind: IncidentEventKind | None, at: datetime) -> None:
        self._project(incident)
        if kind is None or not self._listeners:
            return
        event = IncidentEvent(kind=kind, incident=incident, summary=self.summary(incident), at=at)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as exc:  # one broken listener must not stop the others
                log.warning("incident_listener_failed", error=repr(exc), kind=kind)

    def _graph_store(self) -> Any:
        if self._graph is None:
            return None
        try:
            return self._graph()
        except DevMeshError as exc:
            log.warning("incident_graph_unavailable", error=str(exc))
            return None

    def _project(self, incident: Incident) -> None:
        graph = self._graph_store()
        if graph is None:
            return
        from devmesh_core.graph.base import IncidentNode, Involves

        records: builtins.list[Any] = [
            IncidentNode(
                id=incident.id,
                title=incident.title,
                status=incident.state,
                severity=incident.severity,
                opened_at=incident.opened_at,
                resolved_at=incident.resolved_at,
            )
        ]
        records += [Involves(incident.id, "Service", s) for s in incident.services]
        records += [Involves(incident.id, "Host", h) for h in incident.hosts]
        records += [Involves(incident.id, "Template", t) for t in incident.template_ids]
        try:
            graph.upsert(records)
        except DevMeshError as exc:
            log.warning("incident_projection_failed", incident=incident.id, error=str(exc))

    def _past_fixes(self, incident: Incident) -> builtins.list[str]:
        graph = self._graph_store()
        if graph is None or not (incident.template_ids or incident.origin_service):
            return []
        try:
            past = graph.recall(
                signature=incident.template_ids or None,
                service=incident.origin_service,
                limit=5,
                exclude=[incident.id],
            )
        except DevMeshError as exc:
            log.warning("incident_recall_failed", incident=incident.id, error=str(exc))
            return []
        out: builtins.list[str] = []
        for item in past:
            for fix in item.fixes:
                out.append(f"{item.id}: {fix.action or 'fix'} ({fix.outcome or 'unknown'})")
        return out[:5]


def from_us(value: int | None) -> datetime | None:
    """A stored µs timestamp as a datetime (``None`` stays ``None``)."""
    return from_micros(value) if value is not None else None
