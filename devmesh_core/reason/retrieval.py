"""GraphRAG retrieval for ``ask``: from a question to a ranked, budgeted evidence bundle.

What "why is nginx failing?" needs is not the most frequent error line (often a symptom,
sometimes a noisy neighbour that always errs) but what *changed*: the error templates whose
rate in the asked window stands out against the baseline just before it, in the services
the question names and in what they depend on. Retrieval therefore:

1. resolves the entities the question names (services and hosts the store, graph or
   topology file know, fuzzily: "postgresql" finds ``postgres``);
2. counts every WARNING+ template per service in the window and in the baseline (one
   ``GROUP BY`` on SQL stores) and scores each by how much its rate rose;
3. adds the templates nearest to the question in the vector index (when vectors are on);
4. expands through the graph (dependencies, hosts, deployments, open and past incidents,
   past fixes, runbooks covering them), or — degraded — through the topology file, the
   store's deployment events and dependencies inferred from messages naming a service;
5. matches runbooks (triggers on the distinguishing events, covered templates, question
   similarity);
6. ranks all of it into :class:`~devmesh_core.reason.models.Evidence` with stable ids,
   cut to a token budget.

The llama-index face of this (:class:`DevMeshRetriever`, a ``BaseRetriever`` returning
``NodeWithScore``) sits on the same function, so DevMesh's ports stay underneath.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from devmesh_core.errors import ConfigError, DevMeshError, InvalidInput, NotFound
from devmesh_core.log import get_logger
from devmesh_core.models import LEVEL_RANK, Level, StoredEvent, to_micros, to_utc
from devmesh_core.reason.models import Evidence
from devmesh_core.reason.runbooks import Runbook, bundled_runbooks_dir, lint_runbooks
from devmesh_core.store.base import LogQuery, LogStore

if TYPE_CHECKING:
    from devmesh_core.config import Settings
    from devmesh_core.graph.base import GraphStore
    from devmesh_core.reason.settings import ReasonSettings
    from devmesh_core.runtime import Core

log = get_logger(__name__)

WARN_RANK = LEVEL_RANK[Level.WARNING]
_LEVEL_WEIGHT = {30: 0.6, 40: 1.0, 50: 1.3}
PLATFORM_SERVICES = frozenset(
    {"kernel", "systemd", "init", "journald", "systemd-journald", "cron", "crond", "rsyslogd"}
)
"""Services that report on behalf of others (the kernel's OOM killer, systemd's unit
failures): an error they log that names a service is evidence about that service."""
DEPLOY_TYPES = ("deployment_started", "deployment_succeeded", "deployment_failed")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*[A-Za-z0-9]|[A-Za-z0-9]")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "at",
        "be",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "failing",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "not",
        "of",
        "on",
        "or",
        "our",
        "so",
        "that",
        "the",
        "their",
        "there",
        "this",
        "to",
        "up",
        "us",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
        "down",
        "broken",
        "error",
        "errors",
        "failed",
        "failure",
        "happening",
        "happened",
        "going",
        "wrong",
        "issue",
        "issues",
        "problem",
        "problems",
    ]
)
_SHAPES = (
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<IP>"),
    (re.compile(r"\b[0-9a-fA-F]{8,}\b"), "<HEX>"),
    (re.compile(r"\d+"), "<N>"),
)


# ---------------------------------------------------------------------------- scope


@dataclass(slots=True)
class Scope:
    """What one question is about: the window, the baseline before it, and the entities.

    ``services``/``hosts`` are those named (in the question, by argument or by the
    incident); ``origin_service`` is the incident's correlated origin when one is given.
    """

    question: str
    since: datetime
    until: datetime
    baseline_since: datetime
    services: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    incident: Any = None
    origin_service: str | None = None
    origin_host: str | None = None

    @property
    def window_seconds(self) -> float:
        return max(1.0, (self.until - self.since).total_seconds())

    @property
    def baseline_seconds(self) -> float:
        return max(1.0, (self.since - self.baseline_since).total_seconds())


def make_window(
    reason: ReasonSettings,
    since: datetime | None,
    until: datetime | None,
    *,
    now: datetime | None = None,
) -> tuple[datetime, datetime, datetime]:
    """``(baseline_since, since, until)``: the asked window (default: the configured
    length up to now) and the baseline of ``baseline_factor`` times its length before it."""
    from devmesh_core.timeparse import parse_duration

    end = to_utc(until) if until is not None else (now or datetime.now(UTC))
    start = to_utc(since) if since is not None else end - parse_duration(reason.window)
    if start >= end:
        raise InvalidInput("'since' must be before 'until'")
    baseline = start - (end - start) * reason.baseline_factor
    return baseline, start, end


# ---------------------------------------------------------------------------- entities


def question_terms(question: str) -> list[str]:
    """Lower-case words of a question that could name something (stop words dropped)."""
    return [w for w in (m.group(0).lower() for m in _WORD.finditer(question)) if w not in _STOP]


def normalise_name(name: str) -> str:
    """``nginx.service`` → ``nginx``; ``postgresql@15-main`` → ``postgresql``."""
    base = name.lower().strip()
    for suffix in (".service", ".socket", ".timer", ".scope"):
        base = base.removesuffix(suffix)
    return base.split("@", 1)[0]


def _name_matches(term: str, name: str) -> float:
    """How well one question term names ``name`` (0 = not at all, 1 = exactly)."""
    norm = normalise_name(name)
    if term in (name.lower(), norm):
        return 1.0
    if len(term) >= 4 and len(norm) >= 4 and (norm.startswith(term) or term.startswith(norm)):
        return 0.9  # postgres / postgresql, jelly / jellyfin
    if len(term) >= 4 and len(term) == len(norm) and sorted(term) == sorted(norm):
        return 0.85  # swapped letters: ngnix
    if len(term) >= 5:
        ratio = difflib.SequenceMatcher(None, term, norm).ratio()
        if ratio >= 0.84:
            return ratio  # typos: ngnix, postgrse
    return 0.0


def resolve_entities(question: str, names: Iterable[str]) -> list[str]:
    """The known names (services or hosts) the question mentions, best match first."""
    terms = question_terms(question)
    scored: dict[str, float] = {}
    for name in set(names):
        best = max((_name_matches(term, name) for term in terms), default=0.0)
        if best > 0:
            scored[name] = best
    return sorted(scored, key=lambda n: (-scored[n], n))


def mentioned_services(text: str, services: Iterable[str]) -> set[str]:
    """Services whose name appears as a word in ``text`` (``postgres``, ``nginx.service``,
    ``(postgres)``): how a kernel or systemd line, or a proxy's upstream error, points at
    another service."""
    words = {normalise_name(w) for w in _WORD.findall(text.lower())}
    words |= {w.split(".", 1)[0] for w in words}
    found = set()
    for service in services:
        norm = normalise_name(service)
        if len(norm) < 3:
            continue
        if norm in words or (
            len(norm) >= 5 and any(w.startswith(norm) and len(w) <= len(norm) + 3 for w in words)
        ):
            found.add(service)  # postgres in "postgresql@15-main.service"
    return found


# ---------------------------------------------------------------------------- activity


@dataclass(slots=True)
class TemplateActivity:
    """A template's WARNING+ events for one service: in the window and in the baseline.

    ``key`` is the template id, or ``shape:<hash>`` for events stored without a template
    (mining off): those are grouped by their message with numbers masked.
    """

    key: str
    template_id: str | None
    text: str
    service: str
    hosts: set[str] = field(default_factory=set)
    level_rank: int = WARN_RANK
    window: int = 0
    baseline: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    sample_ids: list[int] = field(default_factory=list)
    samples: list[StoredEvent] = field(default_factory=list)
    score: float = 0.0
    relevance: float = 0.0
    runbook_ids: list[str] = field(default_factory=list)

    @property
    def evidence_id(self) -> str:
        return f"template:{self.template_id}" if self.template_id else f"template:{self.key}"

    @property
    def host(self) -> str | None:
        return sorted(self.hosts)[0] if self.hosts else None

    @property
    def new(self) -> bool:
        return self.baseline == 0


def distinct_score(
    window: int,
    baseline: int,
    window_seconds: float,
    baseline_seconds: float,
    level_rank: int = LEVEL_RANK[Level.ERROR],
) -> float:
    """How much a template's rate in the window stands out against its baseline rate.

    ``log2`` of the smoothed rate ratio (so a line that always errs at the same rate scores
    about 0, however frequent it is), weighted by the level and, gently, by the volume (a
    new error seen 50 times outranks one seen once, but not 50 times over). Pure, so the
    unit tests pin its behaviour.
    """
    if window <= 0:
        return 0.0
    expected = baseline * window_seconds / max(baseline_seconds, 1.0)
    ratio = (window + 1.0) / (expected + 1.0)
    lift = math.log2(ratio)
    if lift <= 0:
        return 0.0
    volume = 1.0 + 0.35 * math.log10(window)
    return lift * volume * _LEVEL_WEIGHT.get(level_rank, 1.0 if level_rank > 40 else 0.6)


def message_shape(message: str) -> str:
    """A message with numbers, addresses and hex ids masked: the template of last resort."""
    text = message.strip()[:300]
    for pattern, token in _SHAPES:
        text = pattern.sub(token, text)
    return text


def _shape_key(service: str, shape: str) -> str:
    return "shape-" + hashlib.blake2b(f"{service}\x1f{shape}".encode(), digest_size=6).hexdigest()


@dataclass(slots=True)
class _Group:
    template_id: str | None
    service: str
    host: str
    level: int
    count: int
    first_us: int
    last_us: int
    last_id: int
    message: str | None = None


class ActivityReader:
    """Counts WARNING+ events per (template, service, host) in a time range.

    On the SQL adapters this is one ``GROUP BY`` over the ``(level, ts)`` index; any other
    ``LogStore`` is read page by page (capped at ``max_scan``). Events stored without a
    template are grouped by :func:`message_shape`.
    """

    def __init__(self, store: LogStore, *, max_scan: int = 20_000) -> None:
        self.store = store
        self.max_scan = max_scan
        from devmesh_core.store.sql import SQLLogStore

        self._sql = store if isinstance(store, SQLLogStore) else None

    def groups(self, start: datetime, end: datetime) -> list[_Group]:
        if self._sql is not None:
            return self._sql_groups(start, end)
        return self._scan_groups(start, end)

    def _sql_groups(self, start: datetime, end: datetime) -> list[_Group]:
        assert self._sql is not None
        sql = self._sql
        p = sql.placeholder
        params = [to_micros(start), to_micros(end), WARN_RANK]
        where = f"ts >= {p} AND ts < {p} AND level >= {p}"
        cap = self.max_scan

        def read(cur: Any) -> tuple[list[Any], list[Any]]:
            cur.execute(
                "SELECT template_id, service, host, MAX(level), COUNT(*), MIN(ts), MAX(ts), "
                f"MAX(id) FROM logs WHERE {where} AND template_id IS NOT NULL "
                "GROUP BY template_id, service, host",
                params,
            )
            grouped = list(cur.fetchall())
            cur.execute(
                f"SELECT id, ts, service, host, level, message FROM logs WHERE {where} "
                f"AND template_id IS NULL ORDER BY ts DESC LIMIT {int(cap)}",
                params,
            )
            return grouped, list(cur.fetchall())

        grouped, loose = sql.run(read, write=False)
        out = [
            _Group(tid, svc, host, int(lvl), int(n), int(lo), int(hi), int(last))
            for tid, svc, host, lvl, n, lo, hi, last in grouped
        ]
        out.extend(
            self._shape_groups((int(i), int(ts), s, h, int(lv), m) for i, ts, s, h, lv, m in loose)
        )
        return out

    def _scan_groups(self, start: datetime, end: datetime) -> list[_Group]:
        by_key: dict[tuple[str | None, str, str], _Group] = {}
        loose: list[tuple[int, int, str, str, int, str]] = []
        read = 0
        cursor: str | None = None
        while read < self.max_scan:
            page = self.store.query(
                LogQuery(
                    level=Level.WARNING,
                    start_time=start,
                    end_time=end,
                    limit=min(5_000, self.max_scan - read),
                    cursor=cursor,
                )
            )
            for ev in page.events:
                ts = to_micros(ev.timestamp)
                rank = ev.level.rank
                if ev.template_id is None:
                    loose.append((ev.id, ts, ev.service, ev.host, rank, ev.message))
                    continue
                key = (ev.template_id, ev.service, ev.host)
                group = by_key.get(key)
                if group is None:
                    by_key[key] = _Group(
                        ev.template_id, ev.service, ev.host, rank, 1, ts, ts, ev.id
                    )
                else:
                    group.count += 1
                    group.level = max(group.level, rank)
                    group.first_us, group.last_us = min(group.first_us, ts), max(group.last_us, ts)
                    group.last_id = max(group.last_id, ev.id)
            read += len(page.events)
            if page.next is None:
                break
            cursor = page.next
        return [*by_key.values(), *self._shape_groups(loose)]

    @staticmethod
    def _shape_groups(rows: Iterable[tuple[int, int, str, str, int, str]]) -> list[_Group]:
        by_key: dict[tuple[str, str], _Group] = {}
        for row_id, ts, service, host, level, message in rows:
            shape = message_shape(message)
            key = (_shape_key(service, shape), host)
            group = by_key.get(key)
            if group is None:
                by_key[key] = _Group(None, service, host, level, 1, ts, ts, row_id, shape)
            else:
                group.count += 1
                group.level = max(group.level, level)
                group.first_us, group.last_us = min(group.first_us, ts), max(group.last_us, ts)
                group.last_id = max(group.last_id, row_id)
        return list(by_key.values())

    def host_activity(self, start: datetime, end: datetime) -> dict[str, tuple[int, int]]:
        """Per host: events (any level) in the range and the last event's time (µs)."""
        if self._sql is not None:
            sql = self._sql
            p = sql.placeholder

            def read(cur: Any) -> list[Any]:
                cur.execute(
                    f"SELECT host, COUNT(*), MAX(ts) FROM logs WHERE ts >= {p} AND ts < {p} "
                    "GROUP BY host",
                    [to_micros(start), to_micros(end)],
                )
                return list(cur.fetchall())

            return {h: (int(n), int(last)) for h, n, last in sql.run(read, write=False)}
        out: dict[str, tuple[int, int]] = {}
        page = self.store.query(
            LogQuery(start_time=start, end_time=end, limit=min(self.max_scan, 10_000))
        )
        for ev in page.events:
            n, last = out.get(ev.host, (0, 0))
            out[ev.host] = (n + 1, max(last, to_micros(ev.timestamp)))
        return out

    def deployments(self, start: datetime, end: datetime, limit: int = 20) -> list[StoredEvent]:
        """Deployment events (``event_type`` deployment_*) in the range, newest first."""
        if self._sql is not None:
            from devmesh_core.store.sql import SELECT_COLUMNS, stored_event

            sql = self._sql
            p = sql.placeholder
            marks = ", ".join([p] * len(DEPLOY_TYPES))

            def read(cur: Any) -> list[Any]:
                cur.execute(
                    f"SELECT {', '.join(SELECT_COLUMNS)} FROM logs WHERE event_type IN ({marks}) "
                    f"AND ts >= {p} AND ts < {p} ORDER BY ts DESC LIMIT {int(limit)}",
                    [*DEPLOY_TYPES, to_micros(start), to_micros(end)],
                )
                return list(cur.fetchall())

            return [stored_event(row) for row in sql.run(read, write=False)]
        found = self.store.events_of_types(DEPLOY_TYPES, limit=1_000)
        return [e for e in found if start <= e.timestamp < end][-limit:][::-1]

    def events_by_id(self, ids: Sequence[int]) -> dict[int, StoredEvent]:
        """Stored events by row id (SQL stores; others return nothing)."""
        if self._sql is None or not ids:
            return {}
        from devmesh_core.store.sql import SELECT_COLUMNS, stored_event

        sql = self._sql
        wanted = list(dict.fromkeys(ids))[:500]
        marks = ", ".join([sql.placeholder] * len(wanted))

        def read(cur: Any) -> list[Any]:
            cur.execute(
                f"SELECT {', '.join(SELECT_COLUMNS)} FROM logs WHERE id IN ({marks})", wanted
            )
            return list(cur.fetchall())

        return {ev.id: ev for ev in (stored_event(r) for r in sql.run(read, write=False))}

    def known_places(self) -> tuple[set[str], set[str]]:
        """Every service and host the store has templates for."""
        if self._sql is not None:
            sql = self._sql

            def read(cur: Any) -> list[Any]:
                cur.execute("SELECT DISTINCT service, host FROM template_stats")
                return list(cur.fetchall())

            sql.fold_pending_places()
            rows = sql.run(read, write=False)
            return {r[0] for r in rows}, {r[1] for r in rows}
        services: set[str] = set()
        hosts: set[str] = set()
        for info in self.store.list_templates(limit=1_000):
            services.update(info.services)
            hosts.update(info.hosts)
        return services, hosts


# ---------------------------------------------------------------------------- bundle


@dataclass(slots=True)
class ServiceActivity:
    """A service's standing in the window: how much of what it logs is new or elevated."""

    service: str
    hosts: set[str] = field(default_factory=set)
    window_errors: int = 0
    baseline_errors: int = 0
    score: float = 0.0
    onset: datetime | None = None
    top: list[TemplateActivity] = field(default_factory=list)


@dataclass(slots=True)
class RunbookMatch:
    """A runbook that covers what was found, how strongly, and why."""

    runbook: Runbook
    score: float
    via: list[str] = field(default_factory=list)
    services: set[str] = field(default_factory=set)
    activity_keys: set[str] = field(default_factory=set)


@dataclass(slots=True)
class FixFact:
    """A fix recorded for a past incident (from the graph)."""

    id: str
    incident_id: str
    action: str | None
    parameters: dict[str, Any]
    outcome: str | None
    applied_at: datetime | None
    notes: str | None


@dataclass(slots=True)
class DeploymentFact:
    """A deployment in or just before the window."""

    id: str
    service: str
    at: datetime
    version: str | None
    text: str


@dataclass(slots=True)
class EvidenceBundle:
    """Everything retrieval found for a question, scored, and the evidence list cut to the
    token budget. ``degraded`` names the sources that were off or failed."""

    scope: Scope
    activities: list[TemplateActivity]
    services: dict[str, ServiceActivity]
    dependencies: dict[str, set[str]]
    runbooks: list[RunbookMatch]
    fixes: list[FixFact]
    deployments: list[DeploymentFact]
    past_incidents: list[Evidence]
    silent_hosts: list[tuple[str, datetime | None, int]]
    evidence: list[Evidence]
    degraded: list[str] = field(default_factory=list)
    known_services: set[str] = field(default_factory=set)

    @property
    def ids(self) -> set[str]:
        return {e.id for e in self.evidence}

    def get(self, evidence_id: str) -> Evidence | None:
        for item in self.evidence:
            if item.id == evidence_id:
                return item
        return None


def approx_tokens(text: str) -> int:
    """A cheap token estimate (about four characters per token for log text)."""
    return max(1, (len(text) + 3) // 4)


# ---------------------------------------------------------------------------- runbooks

_RUNBOOK_CACHE: dict[str, list[Runbook]] = {}
_RUNBOOK_LOCK = threading.Lock()


def runbooks_for(core: Core) -> list[Runbook]:
    """The runbooks the core carries, or (when it carries none) those of the configured or
    bundled folder, read once per folder. Broken files are skipped here with a warning:
    ``devmesh runbooks lint`` is where they are reported."""
    if core.runbooks:
        return list(core.runbooks)
    settings: Settings = core.settings
    configured = settings.reason.runbooks_dir
    local = settings.data_dir / "runbooks"
    directory = configured or (local if local.is_dir() else bundled_runbooks_dir())
    key = str(directory)
    with _RUNBOOK_LOCK:
        if key not in _RUNBOOK_CACHE:
            found, problems = lint_runbooks(directory) if directory.is_dir() else ([], [])
            if problems:
                log.warning("runbooks_skipped", problems=problems[:5])
            _RUNBOOK_CACHE[key] = found
        return list(_RUNBOOK_CACHE[key])


def match_runbooks(
    runbooks: Sequence[Runbook],
    activities: Sequence[TemplateActivity],
    question: str,
    *,
    graph_refs: dict[str, set[str]] | None = None,
) -> list[RunbookMatch]:
    """Runbooks ranked by how well they cover the distinguishing activity.

    A trigger firing on a sample event counts most (weighted by that template's score), a
    covered template fragment next, then words of the question in the runbook's title and
    tags, then the graph's COVERS edges; a runbook naming the service gets a little more.
    """
    terms = set(question_terms(question))
    out: list[RunbookMatch] = []
    for rb in runbooks:
        match = RunbookMatch(rb, 0.0)
        covered = {normalise_name(s) for s in rb.services}
        for act in activities:
            weight = 1.0 + max(act.score, 0.0)
            hit = False
            for ev in act.samples[:2]:
                if rb.match(ev.message, service=ev.service, level=ev.level) is not None:
                    match.score += 2.0 * weight
                    match.via.append(f"trigger on {act.evidence_id}")
                    hit = True
                    break
            if not hit:
                lowered = act.text.lower()
                if any(frag.lower() in lowered for frag in rb.templates if frag):
                    match.score += 1.5 * weight
                    match.via.append(f"covers {act.evidence_id}")
                    hit = True
            if hit:
                if normalise_name(act.service) in covered:
                    match.score += 0.5
                match.services.add(act.service)
                match.activity_keys.add(act.key)
        words = set(question_terms(rb.title)) | {t.lower() for t in rb.tags}
        overlap = terms & words
        if overlap and match.score > 0:
            match.score += 0.5 * len(overlap)
        if graph_refs and rb.id in graph_refs and match.score > 0:
            match.score += 0.5
            match.via.append("graph COVERS")
        if match.score > 0:
            out.append(match)
    out.sort(key=lambda m: (-m.score, m.runbook.id))
    return out


# ---------------------------------------------------------------------------- retrieval


class Retriever:
    """Builds :class:`EvidenceBundle`\\ s from a :class:`~devmesh_core.runtime.Core`.

    Each source is optional: without vectors or a graph (off, or failing) the bundle is
    built from the store, the topology file and the runbooks, and ``degraded`` says so.
    """

    def __init__(self, core: Core, *, use_graph: bool | None = None) -> None:
        self.core = core
        self.reason: ReasonSettings = core.settings.reason
        self.use_graph = self.reason.use_graph if use_graph is None else use_graph
        self.reader = ActivityReader(core.store, max_scan=self.reason.max_scan_events)

    # -- scope ---------------------------------------------------------------------------
    def scope(
        self,
        question: str,
        *,
        incident_id: str | None = None,
        service: str | None = None,
        host: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        now: datetime | None = None,
    ) -> Scope:
        """The window and named entities of a question (the incident's, when given)."""
        question = question.strip()
        if not question:
            raise InvalidInput("the question is empty")
        if len(question) > 2_000:
            raise InvalidInput("the question is over 2000 characters")
        incident = None
        if incident_id:
            incidents = self.core.incidents
            if incidents is None:
                try:
                    from devmesh_core.detect.loop import incident_service
                except ImportError as exc:  # pragma: no cover - detection not installed
                    raise NotFound(f"incident {incident_id}: no incident service") from exc
                incidents = incident_service(self.core)
            incident = incidents.get(incident_id)
            if since is None and getattr(incident, "opened_at", None) is not None:
                opened = to_utc(incident.opened_at)
                since = opened - timedelta(minutes=15)
                if until is None:
                    end = getattr(incident, "resolved_at", None) or getattr(
                        incident, "updated_at", None
                    )
                    until = max(to_utc(end), opened) + timedelta(minutes=5) if end else None
        baseline, start, end = make_window(self.reason, since, until, now=now)
        return Scope(
            question=question,
            since=start,
            until=end,
            baseline_since=baseline,
            services=[service] if service else [],
            hosts=[host] if host else [],
            incident=incident,
            origin_service=getattr(incident, "origin_service", None) if incident else None,
            origin_host=getattr(incident, "origin_host", None) if incident else None,
        )

    # -- the bundle ----------------------------------------------------------------------
    def retrieve(self, scope: Scope, *, previous: EvidenceBundle | None = None) -> EvidenceBundle:
        """Gather, score and rank the evidence for ``scope`` (see the module docstring)."""
        degraded: list[str] = []
        window_groups = self.reader.groups(scope.since, scope.until)
        baseline_groups = self.reader.groups(scope.baseline_since, scope.since)
        known_services, known_hosts = self.reader.known_places()
        known_services |= {g.service for g in window_groups}
        known_hosts |= {g.host for g in window_groups}
        topology = self._topology(degraded)
        if topology is not None:
            known_services |= {spec.name for spec in topology.services}
        graph = self._graph(degraded)

        # Entities the question names.
        named_services = resolve_entities(scope.question, known_services)
        named_hosts = [
            h for h in resolve_entities(scope.question, known_hosts) if h not in named_services
        ]
        scope.services = list(dict.fromkeys([*scope.services, *named_services]))
        scope.hosts = list(dict.fromkeys([*scope.hosts, *named_hosts]))
        if scope.incident is not None:
            scope.services = list(
                dict.fromkeys([*scope.services, *getattr(scope.incident, "services", [])])
            )
            scope.hosts = list(dict.fromkeys([*scope.hosts, *getattr(scope.incident, "hosts", [])]))

        activities = self._activities(scope, window_groups, baseline_groups)
        self._vector_relevance(scope, activities, degraded)
        incident_templates = set(getattr(scope.incident, "template_ids", []) or [])
        for act in activities:
            if act.template_id and act.template_id in incident_templates:
                act.relevance += 1.0
        activities.sort(key=lambda a: (-(a.score + a.relevance), a.key))

        dependencies: dict[str, set[str]] = {}
        if topology is not None:
            for spec in topology.services:
                dependencies.setdefault(spec.name, set()).update(spec.depends_on)
        graph_runbooks: dict[str, set[str]] = {}
        deployments: list[DeploymentFact] = []
        open_incidents: list[Evidence] = []
        if graph is not None:
            self._expand_graph(
                graph,
                scope,
                activities,
                dependencies,
                graph_runbooks,
                deployments,
                open_incidents,
                degraded,
            )
        self._infer_dependencies(activities, known_services, dependencies)
        if not deployments:
            deployments = self._store_deployments(scope)

        services = self._services(activities)
        self._samples(activities[: self.reason.top_templates * 2])
        runbooks = match_runbooks(
            runbooks_for(self.core),
            activities[: self.reason.top_templates * 2],
            scope.question,
            graph_refs=graph_runbooks,
        )
        for rbm in runbooks:
            for act in activities:
                if act.key in rbm.activity_keys:
                    act.runbook_ids.append(rbm.runbook.id)
        fixes, past = self._past(graph, scope, activities, degraded)
        silent = self._silent_hosts(scope)

        bundle = EvidenceBundle(
            scope=scope,
            activities=activities,
            services=services,
            dependencies=dependencies,
            runbooks=runbooks,
            fixes=fixes,
            deployments=deployments,
            past_incidents=[*open_incidents, *past],
            silent_hosts=silent,
            evidence=[],
            degraded=degraded,
            known_services=known_services,
        )
        bundle.evidence = self._rank(bundle, previous)
        return bundle

    # -- sources ---------------------------------------------------------------------------
    def _topology(self, degraded: list[str]) -> Any:
        path = self.core.settings.topology_file
        if path is None:
            return None
        from devmesh_core.graph.topology import load_topology

        try:
            return load_topology(path)
        except ConfigError as exc:
            degraded.append(f"topology: {exc}")
            return None

    def _graph(self, degraded: list[str]) -> GraphStore | None:
        if not self.use_graph:
            degraded.append("graph: off")
            return None
        try:
            graph = self.core.graph()
        except DevMeshError as exc:  # pragma: no cover - Core.graph already catches these
            degraded.append(f"graph: {exc}")
            return None
        if graph is None:
            degraded.append("graph: unavailable")
        return graph

    def _activities(
        self, scope: Scope, window: list[_Group], baseline: list[_Group]
    ) -> list[TemplateActivity]:
        def key_of(g: _Group) -> str:
            if g.template_id is not None:
                return g.template_id
            return _shape_key(g.service, g.message or "")

        acts: dict[tuple[str, str], TemplateActivity] = {}
        for g in window:
            k = (key_of(g), g.service)
            act = acts.get(k)
            if act is None:
                act = acts[k] = TemplateActivity(
                    key=k[0], template_id=g.template_id, text=g.message or "", service=g.service
                )
            act.hosts.add(g.host)
            act.level_rank = max(act.level_rank, g.level)
            act.window += g.count
            first, last = _from_us(g.first_us), _from_us(g.last_us)
            act.first_at = first if act.first_at is None else min(act.first_at, first)
            act.last_at = last if act.last_at is None else max(act.last_at, last)
            act.sample_ids.append(g.last_id)
        for g in baseline:
            act = acts.get((key_of(g), g.service))
            if act is not None:
                act.baseline += g.count
        ids = [a.template_id for a in acts.values() if a.template_id]
        infos = self.core.store.get_templates(ids) if ids else {}
        for act in acts.values():
            if act.template_id and act.template_id in infos:
                act.text = infos[act.template_id].template
            act.score = distinct_score(
                act.window,
                act.baseline,
                scope.window_seconds,
                scope.baseline_seconds,
                act.level_rank,
            )
            if scope.services and any(
                normalise_name(act.service) == normalise_name(s) for s in scope.services
            ):
                act.relevance += 0.5
            if scope.hosts and act.hosts & set(scope.hosts):
                act.relevance += 0.3
            overlap = set(question_terms(scope.question)) & set(question_terms(act.text))
            act.relevance += 0.25 * len(overlap)
        return list(acts.values())

    def _vector_relevance(
        self, scope: Scope, activities: list[TemplateActivity], degraded: list[str]
    ) -> None:
        core = self.core
        if core.vector_index is None or core.embedder is None or self.reason.vector_hits == 0:
            degraded.append("vectors: off")
            return
        from devmesh_core.vectors.embedder import query_text

        try:
            vector = core.embedder.embed_one(query_text(scope.question))
            hits = core.vector_index.search(vector, limit=self.reason.vector_hits * 3)
        except DevMeshError as exc:
            degraded.append(f"vectors: {exc}")
            return
        by_tid: dict[str, list[TemplateActivity]] = {}
        for act in activities:
            if act.template_id:
                by_tid.setdefault(act.template_id, []).append(act)
        used = 0
        for hit in hits:
            if hit.id in by_tid and hit.score > 0.2:
                for act in by_tid[hit.id]:
                    act.relevance += 1.5 * hit.score
                used += 1
                if used >= self.reason.vector_hits:
                    break

    def _expand_graph(
        self,
        graph: GraphStore,
        scope: Scope,
        activities: list[TemplateActivity],
        dependencies: dict[str, set[str]],
        graph_runbooks: dict[str, set[str]],
        deployments: list[DeploymentFact],
        open_incidents: list[Evidence],
        degraded: list[str],
    ) -> None:
        focus = list(
            dict.fromkeys([*scope.services, *(a.service for a in activities[:8] if a.score > 0)])
        )
        seen_incidents: set[str] = set()
        try:
            for service in focus[:8]:
                hood = graph.neighbourhood(service, templates=5, incidents=5)
                if not hood.known:
                    continue
                dependencies.setdefault(service, set()).update(d.service for d in hood.depends_on)
                for dep in hood.dependents:
                    dependencies.setdefault(dep.service, set()).add(service)
                for ref in hood.runbooks:
                    graph_runbooks.setdefault(ref.id, set()).add(service)
                for inc in hood.open_incidents:
                    if inc.id in seen_incidents:
                        continue
                    seen_incidents.add(inc.id)
                    open_incidents.append(
                        Evidence(
                            id=f"incident:{inc.id}",
                            kind="incident",
                            text=f"{inc.status} incident {inc.id}: {inc.title or '(untitled)'}"
                            + (f" (severity {inc.severity})" if inc.severity else ""),
                            service=service,
                            at=inc.opened_at,
                            score=1.0,
                        )
                    )
                for deployed in graph.recent_deployments(
                    service, scope.since - (scope.until - scope.since), depth=1, limit=5
                ):
                    if deployed.at < scope.until and all(d.id != deployed.id for d in deployments):
                        deployments.append(
                            DeploymentFact(
                                deployed.id,
                                deployed.service,
                                deployed.at,
                                deployed.version,
                                f"deployment of {deployed.service}"
                                + (f" version {deployed.version}" if deployed.version else "")
                                + (f" by {deployed.author}" if deployed.author else "")
                                + f" at {deployed.at:%Y-%m-%d %H:%M:%S}Z",
                            )
                        )
        except DevMeshError as exc:
            degraded.append(f"graph: {exc}")

    @staticmethod
    def _infer_dependencies(
        activities: list[TemplateActivity],
        known_services: set[str],
        dependencies: dict[str, set[str]],
    ) -> None:
        """``A`` depends on ``B`` when A's distinguishing errors name B (an upstream in a
        proxy error, a unit in a systemd line, a process in the OOM killer's)."""
        for act in activities[:40]:
            if act.score <= 0:
                continue
            text = " ".join([act.text, *(e.message for e in act.samples[:1])])
            for other in mentioned_services(text, known_services - {act.service}):
                if other in PLATFORM_SERVICES:
                    continue
                if act.service in dependencies.get(other, set()):
                    continue  # declared the other way: keep the operator's word
                dependencies.setdefault(act.service, set()).add(other)

    def _store_deployments(self, scope: Scope) -> list[DeploymentFact]:
        start = scope.since - (scope.until - scope.since)
        out: list[DeploymentFact] = []
        for ev in self.reader.deployments(start, scope.until):
            version = ev.meta.get("version") if isinstance(ev.meta, dict) else None
            out.append(
                DeploymentFact(
                    id=str(ev.meta.get("deployment_id") or ev.id)
                    if isinstance(ev.meta, dict)
                    else str(ev.id),
                    service=ev.service,
                    at=ev.timestamp,
                    version=str(version) if version else None,
                    text=f"{ev.event_type} {ev.service} on {ev.host}: {ev.message}",
                )
            )
        return out

    def _samples(self, activities: list[TemplateActivity]) -> None:
        """Attach the newest event of each (top) activity, for citing and trigger checks."""
        wanted = [i for act in activities for i in sorted(act.sample_ids, reverse=True)[:2]]
        events = self.reader.events_by_id(wanted)
        for act in activities:
            act.samples = [
                events[i] for i in sorted(act.sample_ids, reverse=True)[:2] if i in events
            ]
            if not act.samples:
                page = (
                    self.core.store.query(
                        LogQuery(
                            template_id=act.template_id,
                            service=act.service,
                            level=Level.WARNING,
                            start_time=act.first_at,
                            end_time=(act.last_at + timedelta(microseconds=1))
                            if act.last_at
                            else None,
                            limit=2,
                        )
                    )
                    if act.template_id
                    else None
                )
                if page is not None:
                    act.samples = page.events
            if not act.text and act.samples:
                act.text = message_shape(act.samples[0].message)

    @staticmethod
    def _services(activities: list[TemplateActivity]) -> dict[str, ServiceActivity]:
        out: dict[str, ServiceActivity] = {}
        for act in activities:
            svc = out.setdefault(act.service, ServiceActivity(act.service))
            svc.hosts |= act.hosts
            svc.window_errors += act.window
            svc.baseline_errors += act.baseline
            if act.score > 0:
                svc.top.append(act)
        for svc in out.values():
            svc.top.sort(key=lambda a: -a.score)
            svc.score = sum(a.score for a in svc.top[:3])
            onsets = [a.first_at for a in svc.top if a.first_at is not None and a.score >= 1.0]
            svc.onset = min(onsets) if onsets else None
        return out

    def _past(
        self,
        graph: GraphStore | None,
        scope: Scope,
        activities: list[TemplateActivity],
        degraded: list[str],
    ) -> tuple[list[FixFact], list[Evidence]]:
        fixes: list[FixFact] = []
        past: list[Evidence] = []
        current = getattr(scope.incident, "id", None)
        signatures = [a.template_id for a in activities[:10] if a.template_id and a.score > 0]
        if graph is not None and signatures:
            try:
                recalled = graph.recall(
                    signature=signatures,
                    service=scope.origin_service or (scope.services[0] if scope.services else None),
                    limit=5,
                    exclude=[current] if current else (),
                )
            except DevMeshError as exc:
                degraded.append(f"graph recall: {exc}")
                recalled = []
            for inc in recalled:
                past.append(
                    Evidence(
                        id=f"incident:{inc.id}",
                        kind="incident",
                        text=f"past incident {inc.id} ({inc.status}): {inc.title or '(untitled)'}"
                        + (f"; services {', '.join(inc.services)}" if inc.services else ""),
                        at=inc.opened_at,
                        score=0.8 + 0.2 * len(inc.matched_signatures),
                    )
                )
                for fix in inc.fixes:
                    fixes.append(
                        FixFact(
                            fix.id,
                            inc.id,
                            fix.action,
                            dict(fix.parameters),
                            fix.outcome,
                            fix.applied_at,
                            fix.notes,
                        )
                    )
        incidents = self.core.incidents
        if incidents is not None and not past:
            try:
                earlier = incidents.list("resolved", limit=50)
            except DevMeshError as exc:
                degraded.append(f"incidents: {exc}")
                earlier = []
            wanted = set(signatures)
            prior: Any
            for prior in earlier:
                shared = wanted & set(getattr(prior, "template_ids", []) or [])
                if not shared or prior.id == current:
                    continue
                past.append(
                    Evidence(
                        id=f"incident:{prior.id}",
                        kind="incident",
                        text=f"past incident {prior.id} (resolved): {prior.title}",
                        service=prior.origin_service,
                        host=prior.origin_host,
                        at=prior.opened_at,
                        score=0.8 + 0.2 * len(shared),
                    )
                )
                if len(past) >= 5:
                    break
        return fixes, past

    def _silent_hosts(self, scope: Scope) -> list[tuple[str, datetime | None, int]]:
        """Hosts that logged steadily in the baseline but went quiet in the window: a node
        that is offline says nothing, so its silence is the evidence."""
        before = self.reader.host_activity(scope.baseline_since, scope.since)
        during = self.reader.host_activity(scope.since, scope.until)
        out: list[tuple[str, datetime | None, int]] = []
        for host, (count, last_us) in before.items():
            expected = count * scope.window_seconds / scope.baseline_seconds
            n_now, last_now = during.get(host, (0, 0))
            if expected >= 5 and n_now <= expected * 0.1:
                last = _from_us(max(last_us, last_now))
                out.append((host, last, count))
            elif expected >= 5 and n_now and last_now:
                gap = (scope.until - _from_us(last_now)).total_seconds()
                typical = scope.baseline_seconds / max(count, 1)
                if gap > max(20 * typical, scope.window_seconds * 0.4):
                    out.append((host, _from_us(last_now), count))
        out.sort(key=lambda h: h[1] or scope.since)
        return out

    # -- ranking -----------------------------------------------------------------------------
    def _rank(self, bundle: EvidenceBundle, previous: EvidenceBundle | None) -> list[Evidence]:
        items: list[Evidence] = []
        for act in bundle.activities[: self.reason.top_templates]:
            if act.score <= 0 and act.relevance <= 0.5:
                continue
            trend = "new" if act.new else f"{act.baseline} in the baseline before"
            items.append(
                Evidence(
                    id=act.evidence_id,
                    kind="template",
                    text=f"[{Level.from_rank(act.level_rank).value}] {act.service}: "
                    f"{act.text!s} — {act.window}x in the window ({trend})",
                    service=act.service,
                    host=act.host,
                    at=act.first_at,
                    score=round(act.score + act.relevance, 3),
                )
            )
            for ev in act.samples[:1]:
                items.append(
                    Evidence(
                        id=f"event:{ev.id}",
                        kind="event",
                        text=f"{ev.timestamp:%Y-%m-%d %H:%M:%S}Z {ev.host} {ev.service} "
                        f"[{ev.level.value}] {ev.message[:400]}",
                        service=ev.service,
                        host=ev.host,
                        at=ev.timestamp,
                        score=round(0.9 * (act.score + act.relevance), 3),
                    )
                )
        for rbm in bundle.runbooks[:3]:
            rb = rbm.runbook
            steps = _first_lines(rb.body, 3)
            items.append(
                Evidence(
                    id=f"runbook:{rb.id}",
                    kind="runbook",
                    text=f"runbook {rb.id}: {rb.title}" + (f" — {steps}" if steps else ""),
                    service=sorted(rbm.services)[0] if rbm.services else None,
                    score=round(rbm.score, 3),
                )
            )
        for fix in bundle.fixes[:5]:
            params = ", ".join(f"{k}={v}" for k, v in sorted(fix.parameters.items()))
            items.append(
                Evidence(
                    id=f"fix:{fix.id}",
                    kind="fix",
                    text=f"fix for {fix.incident_id}: {fix.action or '?'}({params}) → "
                    f"{fix.outcome or 'unknown'}" + (f"; {fix.notes}" if fix.notes else ""),
                    at=fix.applied_at,
                    score=1.5 if fix.outcome == "success" else 0.7,
                )
            )
        for dep in bundle.deployments[:5]:
            items.append(
                Evidence(
                    id=f"deployment:{dep.id}",
                    kind="deployment",
                    text=dep.text,
                    service=dep.service,
                    at=dep.at,
                    score=1.2,
                )
            )
        items.extend(bundle.past_incidents[:5])
        for host, last, _count in bundle.silent_hosts[:3]:
            items.append(
                Evidence(
                    id=f"host:{host}",
                    kind="host",
                    text=f"host {host} went silent: last event at {last:%Y-%m-%d %H:%M:%S}Z"
                    if last
                    else f"host {host} sent nothing",
                    host=host,
                    at=last,
                    score=2.0,
                )
            )
        for name, svc in sorted(bundle.services.items(), key=lambda kv: -kv[1].score)[:6]:
            deps = sorted(bundle.dependencies.get(name, set()))
            if svc.score <= 0 and not deps:
                continue
            items.append(
                Evidence(
                    id=f"service:{name}",
                    kind="service",
                    text=f"service {name} on {', '.join(sorted(svc.hosts)) or '?'}: "
                    f"{svc.window_errors} warnings/errors in the window, "
                    f"{svc.baseline_errors} in the baseline"
                    + (f"; depends on {', '.join(deps)}" if deps else ""),
                    service=name,
                    host=sorted(svc.hosts)[0] if svc.hosts else None,
                    at=svc.onset,
                    score=round(svc.score / 3, 3),
                )
            )
        if previous is not None:  # a follow-up keeps what the last answer stood on
            have = {i.id for i in items}
            items.extend(e for e in previous.evidence if e.id not in have)
        # Rank and fit the budget; ids are unique.
        unique: dict[str, Evidence] = {}
        for item in sorted(items, key=lambda e: -e.score):
            unique.setdefault(item.id, item)
        budget = self.reason.evidence_budget_tokens
        out: list[Evidence] = []
        used = 0
        for item in unique.values():
            cost = approx_tokens(item.text) + 6
            if used + cost > budget or len(out) >= self.reason.max_evidence:
                continue
            out.append(item)
            used += cost
        return out


def _from_us(value: int) -> datetime:
    from devmesh_core.models import from_micros

    return from_micros(value)


def _first_lines(body: str, n: int) -> str:
    lines = [ln.strip("-*# \t") for ln in body.splitlines() if ln.strip().strip("-*#").strip()]
    return "; ".join(lines[:n])[:300]


# ---------------------------------------------------------------------------- llama-index


def evidence_nodes(bundle: EvidenceBundle) -> list[Any]:
    """The bundle's evidence as llama-index ``NodeWithScore``\\ s (id = evidence id)."""
    from llama_index.core.schema import NodeWithScore, TextNode

    nodes = []
    for item in bundle.evidence:
        meta = {"kind": item.kind, "service": item.service or "", "host": item.host or ""}
        if item.at is not None:
            meta["at"] = item.at.isoformat()
        nodes.append(
            NodeWithScore(
                node=TextNode(id_=item.id, text=item.text, metadata=meta), score=item.score
            )
        )
    return nodes


def make_llama_retriever(
    retriever: Retriever, scope: Scope, previous: EvidenceBundle | None = None
) -> Any:
    """A llama-index ``BaseRetriever`` over DevMesh's ports for one scope; after
    ``retrieve(question)`` its ``bundle`` attribute holds the full :class:`EvidenceBundle`."""
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle

    class DevMeshRetriever(BaseRetriever):
        """GraphRAG over the log store, vector index, graph and runbooks."""

        def __init__(self) -> None:
            super().__init__()
            self.bundle: EvidenceBundle | None = None

        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            scope.question = query_bundle.query_str
            self.bundle = retriever.retrieve(scope, previous=previous)
            return list(evidence_nodes(self.bundle))

    return DevMeshRetriever()
