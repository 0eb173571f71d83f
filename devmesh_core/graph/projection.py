"""Projection of the log store into the knowledge graph.

The reasoning layer asks the graph which services run where, what they emit and what was
deployed; the log store knows all of it, in aggregated form. :class:`Projector` copies it
over:

* ``(Service)-[:RUNS_ON {last_seen}]->(Host)`` and ``(Service)-[:EMITS {count, last_seen}]
  ->(Template {signature, text, level, first_seen, count})`` from the store's per-place
  template statistics (``template_stats``: per template, service, host and level, absolute
  running totals), never from raw events, so a pass costs in proportion to the places that
  changed, not to the event rate;
* template merges of the miner: the merged-away Template node is folded into the survivor
  (incidents and runbooks pointing at it follow; see :meth:`GraphStore.fold_templates`);
* ``(Deployment {id, at, status, version, author, …})-[:OF]->(Service)`` from
  ``deployment_started|succeeded|failed`` events;
* ``DEPENDS_ON`` from a topology file and from error co-occurrence
  (:mod:`devmesh_core.graph.topology`), when the projector is given them.

Design decisions, and why:

* **Absolute writes, so passes are idempotent.** An EMITS count is the *sum* over hosts and
  levels of the store's running totals for that service and template, written with
  ``Emits(absolute=True)``; a place that changed is re-read together with every other place
  of its template. Running a pass twice, or re-reading an overlap, gives the same graph,
  and a rebuild from nothing equals any sequence of incremental passes.
* **The watermark lives in the graph** (``(:Meta {key: 'projection'})``): a cleared graph
  has none, so a rebuild starts from 0 by construction and the watermark can never claim
  data the graph lost. It is written *after* the pass's records: a pass that dies midway is
  redone in full by the next one (harmless, see above).
* **An overlap of ``lag`` behind the watermark.** The store stamps a change with the start
  time of the ingesting transaction, which may commit later than a younger one; a pass
  that already saw the younger stamp would skip the late commit for good. Each pass
  therefore re-reads ``lag`` (default 60 s) behind its watermark. Deployment events are
  read by row id with the same idea: each pass re-reads from the previous pass's mark.
* **Deployments are folded from all their events** (matched on the correlation id), not
  from the newest one: a ``started`` file delivered late by an offline node must not turn
  a succeeded deployment back into a running one, and the deployment's time is its start.
  When new deployment events arrive, the deployment events in the store are re-read (they
  are few; see the report for the index that makes this cheap on large stores).

The graph operations the ``GraphStore`` port lacks so far (a meta node, folding a template,
replacing the edges of one dependency source) are used through the port when it has them,
and otherwise through FalkorDB Cypher here (:class:`_FalkorOps`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from devmesh_core.errors import InvalidInput
from devmesh_core.graph.base import (
    DependsOn,
    DeploymentNode,
    Emits,
    GraphRecord,
    GraphStore,
    RunsOn,
    Scalar,
    TemplateNode,
    to_millis,
)
from devmesh_core.graph.topology import (
    CONFIG_SOURCE,
    COOCCURRENCE_SOURCE,
    CooccurrenceSettings,
    Topology,
    propose_dependencies,
)
from devmesh_core.log import get_logger
from devmesh_core.models import LEVEL_RANK, Level, StoredEvent, TemplateInfo, TemplatePlace
from devmesh_core.models import to_utc as _utc
from devmesh_core.store.base import LogStore

META_KEY = "projection"
FORMAT_VERSION = 1
"""Bumped when the projection writes a different graph; a stored watermark of another
version makes the next pass start from 0."""

DEFAULT_LAG = timedelta(seconds=60)

DEPLOYMENT_STATUS: dict[str, str] = {
    "deployment_started": "started",
    "deployment_succeeded": "succeeded",
    "deployment_failed": "failed",
}
"""Deployment event types and the status each gives a deployment."""

Mode = Literal["incremental", "full", "rebuild"]


def _log() -> Any:
    """The module logger, looked up at use so it follows ``configure_logging``."""
    return get_logger(__name__)


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Watermark:
    """How far the graph has been projected.

    ``places_us``/``merges_us`` are the newest ingestion-time stamps read (µs);
    ``deploy_id`` the highest deployment event id read and ``deploy_from`` the id the next
    pass reads from (the previous pass's ``deploy_id``: one pass of overlap).
    ``proposed_ms`` is when dependencies were last proposed from co-occurrence (0: never).
    """

    places_us: int = 0
    merges_us: int = 0
    deploy_id: int = 0
    deploy_from: int = 0
    proposed_ms: int = 0
    format: int = FORMAT_VERSION

    def to_meta(self) -> dict[str, Scalar]:
        """The properties of the meta node."""
        return {
            "places_us": self.places_us,
            "merges_us": self.merges_us,
            "deploy_id": self.deploy_id,
            "deploy_from": self.deploy_from,
            "proposed_ms": self.proposed_ms,
            "format": self.format,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None) -> Watermark | None:
        """Read the meta node back; ``None`` when there is none (a new or cleared graph)."""
        if not meta:
            return None

        def num(name: str) -> int:
            value = meta.get(name, 0)
            return int(value) if isinstance(value, int | float) else 0

        return cls(
            places_us=num("places_us"),
            merges_us=num("merges_us"),
            deploy_id=num("deploy_id"),
            deploy_from=num("deploy_from"),
            proposed_ms=num("proposed_ms"),
            format=num("format"),
        )


@dataclass(frozen=True, slots=True)
class ProjectionReport:
    """What one pass did. ``places`` counts the changed places read; the other counts are
    records written (each an idempotent MERGE)."""

    mode: Mode
    places: int = 0
    templates: int = 0
    emits: int = 0
    runs_on: int = 0
    services: int = 0
    hosts: int = 0
    merged: int = 0
    deployments: int = 0
    config_dependencies: int = 0
    proposed_dependencies: int | None = None
    removed_dependencies: int = 0
    seconds: float = 0.0
    watermark: Watermark = field(default_factory=Watermark)

    @property
    def changed(self) -> bool:
        """Whether the pass wrote anything from the store."""
        return bool(self.places or self.merged or self.deployments)

    def summary(self) -> str:
        """One line for a person (the CLI prints it)."""
        parts = [
            f"{self.mode}: {self.places} places read",
            f"{self.templates} templates, {self.emits} emits, {self.runs_on} runs-on",
            f"{self.services} services, {self.hosts} hosts",
            f"{self.merged} merged, {self.deployments} deployments",
        ]
        if self.config_dependencies:
            parts.append(f"{self.config_dependencies} config dependencies")
        if self.proposed_dependencies is not None:
            parts.append(f"{self.proposed_dependencies} proposed dependencies")
        return ", ".join(parts) + f" in {self.seconds:.2f}s"


# ---------------------------------------------------------------------------- the projector


class Projector:
    """Projects ``store`` into ``graph``; see the module docstring.

    ``topology`` (when given) replaces the ``config`` dependency edges on every pass;
    ``cooccurrence`` (when given) replaces the ``cooccurrence`` proposals when they are due
    (every ``cooccurrence.interval``, and on a rebuild). One projector per graph at a time:
    two concurrent passes write the same values, but a rebuild racing an incremental pass
    can leave the latter's watermark behind.
    """

    def __init__(
        self,
        store: LogStore,
        graph: GraphStore,
        *,
        topology: Topology | None = None,
        cooccurrence: CooccurrenceSettings | None = None,
        lag: timedelta = DEFAULT_LAG,
        deployment_types: Mapping[str, str] | None = None,
        page_size: int = 5_000,
    ) -> None:
        if lag < timedelta(0):
            raise InvalidInput("lag must not be negative")
        if page_size < 1:
            raise InvalidInput("page_size must be at least 1")
        self.store = store
        self.graph = graph
        self.topology = topology
        self.cooccurrence = cooccurrence
        self.lag_us = int(lag / timedelta(microseconds=1))
        self.status_of = dict(deployment_types or DEPLOYMENT_STATUS)
        if not set(self.status_of.values()) <= {"started", "succeeded", "failed"}:
            raise InvalidInput("deployment statuses are started, succeeded or failed")
        self.page_size = page_size

    # ------------------------------------------------------------------ public

    def watermark(self) -> Watermark | None:
        """The graph's watermark, ``None`` when it has never been projected (or was cleared)."""
        return Watermark.from_meta(self.graph.get_meta(META_KEY))

    def run_once(
        self, *, now: datetime | None = None, propose: bool | None = None
    ) -> ProjectionReport:
        """One incremental pass (from 0 on a graph never projected).

        ``propose``: ``None`` recomputes co-occurrence proposals when due, ``True`` always
        (if the projector has co-occurrence settings), ``False`` never.
        """
        mark = self.watermark()
        if mark is None:
            return self._pass(Watermark(), "full", now, propose)
        if mark.format != FORMAT_VERSION:
            _log().warning(
                "graph_projection_format_changed", stored=mark.format, current=FORMAT_VERSION
            )
            return self._pass(Watermark(), "full", now, propose)
        return self._pass(mark, "incremental", now, propose)

    def rebuild(self, *, now: datetime | None = None) -> ProjectionReport:
        """Clear the graph and project everything from 0.

        This clears the *whole* graph (``GraphStore.clear``), incidents and fixes included:
        callers must make sure nothing there exists only in the graph.
        """
        self.graph.clear()
        return self._pass(Watermark(), "rebuild", now, None if self.cooccurrence else False)

    # ------------------------------------------------------------------ one pass

    def _pass(
        self, mark: Watermark, mode: Mode, now: datetime | None, propose: bool | None
    ) -> ProjectionReport:
        started = time.perf_counter()
        when = _utc(now) if now is not None else datetime.now(UTC)
        from_zero = mode != "incremental"
        since_merges = 0 if from_zero else max(0, mark.merges_us - self.lag_us)
        since_places = 0 if from_zero else max(0, mark.places_us - self.lag_us)
        # Merges are read before places: a merge committed in between shows up in the next
        # pass (the survivor's places already include the merged counts).
        merges = self.store.template_merges_since(since_merges)
        changed = self.store.template_places_since(since_places)

        merged = 0
        if merges and mode != "rebuild":  # a cleared graph has nothing to fold
            merged = self.graph.fold_templates([(old, new) for old, new, _ in merges])

        affected = {place.template_id for place in changed}
        if from_zero:
            places = changed
        elif affected:
            places = self._places_of(affected)
        else:
            places = []
        infos = self.store.get_templates(sorted(affected)) if affected else {}
        records, counts = template_records(places, infos)

        deploy_from = 0 if from_zero else mark.deploy_from
        deployments, deploy_high = self._deployments(deploy_from, mark.deploy_id)
        records.extend(deployments)

        config_edges: list[DependsOn] = []
        if self.topology is not None:
            records.extend(self.topology.service_records())
            config_edges = self.topology.dependencies()

        if records:
            self.graph.upsert(records)
        removed = 0
        if self.topology is not None:
            removed += self.graph.replace_dependencies(CONFIG_SOURCE, config_edges)

        proposed: int | None = None
        proposed_ms = 0 if mode == "rebuild" else mark.proposed_ms
        if self._propose_due(propose, proposed_ms, when):
            edges = self._proposals(when)
            removed += self.graph.replace_dependencies(COOCCURRENCE_SOURCE, edges)
            proposed = len(edges)
            proposed_ms = to_millis(when)

        base = Watermark() if from_zero else mark
        new_mark = Watermark(
            places_us=max([base.places_us, *(place.updated_us for place in changed)]),
            merges_us=max([base.merges_us, *(at for _, _, at in merges)]),
            deploy_id=deploy_high,
            deploy_from=0 if from_zero else mark.deploy_id,
            proposed_ms=proposed_ms,
        )
        self.graph.set_meta(META_KEY, {**new_mark.to_meta(), "projected_ms": to_millis(when)})
        report = ProjectionReport(
            mode=mode,
            places=len(changed),
            templates=counts["templates"],
            emits=counts["emits"],
            runs_on=counts["runs_on"],
            services=counts["services"],
            hosts=counts["hosts"],
            merged=merged,
            deployments=len(deployments),
            config_dependencies=len(config_edges),
            proposed_dependencies=proposed,
            removed_dependencies=removed,
            seconds=time.perf_counter() - started,
            watermark=new_mark,
        )
        # A server projects every few seconds: passes that found nothing log at debug.
        emit = _log().info if (report.changed or mode != "incremental") else _log().debug
        emit(
            "graph_projected",
            mode=mode,
            places=report.places,
            templates=report.templates,
            merged=merged,
            deployments=report.deployments,
            seconds=round(report.seconds, 3),
        )
        return report

    def _places_of(self, template_ids: set[str]) -> list[TemplatePlace]:
        """Every place of these templates (an EMITS count sums all of a pair's places)."""
        return self.store.template_places(sorted(template_ids))

    def _deployments(self, after_id: int, high: int) -> tuple[list[DeploymentNode], int]:
        """Deployment nodes touched by events after ``after_id``, and the highest id read."""
        types = sorted(self.status_of)
        if after_id > 0 and not self.store.events_of_types(types, after_id=after_id, limit=1):
            return [], max(high, after_id)
        events: list[StoredEvent] = []
        last = 0
        while True:
            page = self.store.events_of_types(types, after_id=last, limit=self.page_size)
            events.extend(page)
            if len(page) < self.page_size:
                break
            last = page[-1].id
        grouped: dict[str, list[StoredEvent]] = {}
        touched: set[str] = set()
        for event in events:
            key = deployment_id(event)
            grouped.setdefault(key, []).append(event)
            if event.id > after_id:
                touched.add(key)
        nodes = [fold_deployment(key, grouped[key], self.status_of) for key in sorted(touched)]
        top = max((e.id for e in events), default=0)
        return nodes, max(high, top)

    def _propose_due(self, propose: bool | None, last_ms: int, when: datetime) -> bool:
        if self.cooccurrence is None or propose is False:
            return False
        if propose is True or last_ms == 0:
            return True
        interval_ms = int(self.cooccurrence.interval / timedelta(milliseconds=1))
        return to_millis(when) - last_ms >= interval_ms

    def _proposals(self, when: datetime) -> list[DependsOn]:
        """Co-occurrence proposals, minus pairs the topology file or the graph declares."""
        assert self.cooccurrence is not None
        exclude = self.topology.pairs() if self.topology is not None else set()
        proposals = propose_dependencies(self.store, self.cooccurrence, until=when, exclude=exclude)
        edges = []
        declared: dict[str, set[str]] = {}
        for proposal in proposals:
            # Without the file at hand, config edges already in the graph still win.
            if proposal.service not in declared:
                hood = self.graph.neighbourhood(proposal.service, templates=0, incidents=0)
                declared[proposal.service] = {
                    ref.service
                    for ref in (*hood.depends_on, *hood.dependents)
                    if CONFIG_SOURCE in ref.sources
                }
            if proposal.depends_on in declared[proposal.service]:
                continue
            edges.append(proposal.record())
        return edges


# ---------------------------------------------------------------------------- pure parts


def template_records(
    places: Iterable[TemplatePlace], infos: Mapping[str, TemplateInfo]
) -> tuple[list[GraphRecord], dict[str, int]]:
    """Template nodes, EMITS and RUNS_ON records from complete places of some templates.

    ``places`` must hold *every* place of each template it names (counts are absolute
    sums); templates missing from ``infos`` (merged away since the places were read) are
    skipped. Pure, so the folding rules are tested without a graph.
    """
    levels: dict[str, dict[Level, int]] = {}
    texts: dict[str, str] = {}
    emits: dict[tuple[str, str], list[Any]] = {}
    runs_on: dict[tuple[str, str], datetime] = {}
    for place in places:
        tid = place.template_id
        if tid not in infos:
            continue
        texts[tid] = place.template
        by_level = levels.setdefault(tid, {})
        by_level[place.level] = by_level.get(place.level, 0) + place.count
        pair = (place.service, tid)
        entry = emits.get(pair)
        if entry is None:
            emits[pair] = [place.count, place.last_seen]
        else:
            entry[0] += place.count
            entry[1] = max(entry[1], place.last_seen)
        where = (place.service, place.host)
        seen = runs_on.get(where)
        runs_on[where] = place.last_seen if seen is None else max(seen, place.last_seen)
    records: list[GraphRecord] = []
    for tid in sorted(levels):
        info = infos[tid]
        by_level = levels[tid]
        # The most frequent level; a tie goes to the more severe one.
        dominant = max(by_level, key=lambda lv: (by_level[lv], LEVEL_RANK[lv]))
        records.append(
            TemplateNode(
                signature=tid,
                text=info.template or texts[tid],
                level=dominant.value,
                first_seen=info.first_seen,
                props={"count": sum(by_level.values())},
            )
        )
    records.extend(
        Emits(service, tid, count=int(n), last_seen=last, absolute=True)
        for (service, tid), (n, last) in sorted(emits.items())
    )
    records.extend(
        RunsOn(service, host, last_seen=last) for (service, host), last in sorted(runs_on.items())
    )
    counts = {
        "templates": len(levels),
        "emits": len(emits),
        "runs_on": len(runs_on),
        "services": len({s for s, _ in runs_on}),
        "hosts": len({h for _, h in runs_on}),
    }
    return records, counts


def deployment_id(event: StoredEvent) -> str:
    """The deployment an event belongs to.

    Events of one deployment share a correlation id (``started`` then ``succeeded``); one
    rollout may deploy several services under one correlation id, so the id is scoped by
    service: ``<service>/<correlation id>``. Without a correlation id the event is a
    deployment of its own, named by its ``source_id`` (unique per event file), else by its
    row id.
    """
    correlation = event.meta.get("correlation_id") if isinstance(event.meta, dict) else None
    if isinstance(correlation, str) and correlation.strip():
        return f"{event.service}/{correlation.strip()}"
    if event.source_id:
        return event.source_id
    return f"event-{event.id}"


def fold_deployment(
    key: str, events: Sequence[StoredEvent], status_of: Mapping[str, str] = DEPLOYMENT_STATUS
) -> DeploymentNode:
    """One deployment from all its events, whatever order they arrived in.

    ``at`` is the start (the earliest ``started`` event, else the earliest event); the status
    is the latest terminal event's (``succeeded``/``failed``), else ``started``; version and
    author come from the latest event whose payload has them.
    """
    if not events:
        raise InvalidInput(f"deployment {key!r} has no events")
    ordered = sorted(events, key=lambda e: (e.timestamp, e.id))
    starts = [e for e in ordered if status_of.get(e.event_type or "") == "started"]
    ends = [e for e in ordered if status_of.get(e.event_type or "") in ("succeeded", "failed")]
    at = (starts or ordered)[0].timestamp
    status = status_of[ends[-1].event_type or ""] if ends else "started"
    version: str | None = None
    author: str | None = None
    source: str | None = None
    correlation: str | None = None
    for event in ordered:
        meta = event.meta if isinstance(event.meta, dict) else {}
        payload = meta.get("payload")
        if isinstance(payload, dict):
            version = _text(payload.get("version")) or version
            author = _text(payload.get("author")) or author
        source = _text(meta.get("event_source")) or source
        correlation = _text(meta.get("correlation_id")) or correlation
    props: dict[str, Any] = {
        "status": status,
        "host": ordered[-1].host,
        "correlation_id": correlation,
        "event_source": source,
        "started_at": to_millis(starts[0].timestamp) if starts else None,
        "finished_at": to_millis(ends[-1].timestamp) if ends else None,
        "events": len(ordered),
    }
    return DeploymentNode(
        id=key,
        service=ordered[-1].service,
        at=at,
        version=version,
        author=author,
        props={k: v for k, v in props.items() if v is not None},
    )


def _text(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None
