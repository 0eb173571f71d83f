"""The ``GraphStore`` port: what DevMesh may ask of its knowledge graph, and the shapes it gets.

The graph links what the log store cannot: which service runs where, who depends on whom,
which log templates a service emits, which incidents involved them, and what fixed those
incidents before. The reasoning layer asks it a handful of questions (neighbourhood, blast
radius, recent deployments, recall of past fixes); the projection feeds it with idempotent
upserts. Like httpx's ``BaseTransport`` the port is small and concrete: typed records in,
typed results out, no driver objects on either side, so an adapter can be swapped (or faked
in a caller's unit test) without touching callers.

Schema (labels, merge keys, edges)::

    (:Host {name})  (:Service {name})  (:Template {signature})  (:Incident {id})
    (:Runbook {id}) (:Action {name})   (:Fix {id})              (:Deployment {id})
    (Service)-[:RUNS_ON]->(Host)
    (Service)-[:EMITS {count, last_seen}]->(Template)
    (Service)-[:DEPENDS_ON {source, confidence}]->(Service)   one edge per (pair, source)
    (Incident)-[:INVOLVES]->(Service|Host|Template)
    (Incident)-[:RESOLVED_BY]->(Fix)-[:USED]->(Action)
    (Runbook)-[:COVERS]->(Service|Template)
    (Deployment)-[:OF]->(Service)

Times are stored as integer epoch milliseconds (UTC) so range filters are plain comparisons;
results carry timezone-aware ``datetime`` values. Naive datetimes given in are taken as UTC.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from devmesh_core.errors import ConfigError, InvalidInput

Scalar = str | int | float | bool
PropValue = Scalar | Sequence[Scalar]
Props = Mapping[str, PropValue]

CLOSED_STATUSES: tuple[str, ...] = ("resolved", "closed")
"""Incident statuses that count as no longer open."""

FixOutcome = Literal["success", "partial", "failed"]
InvolvedKind = Literal["Service", "Host", "Template"]
CoveredKind = Literal["Service", "Template"]

DEFAULT_GRAPH = "devmesh"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_GRAPH_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


# ---------------------------------------------------------------------------- records in


@dataclass(frozen=True, slots=True)
class HostNode:
    """A machine. ``props`` carries extra scalar properties (``None`` values are skipped)."""

    name: str
    address: str | None = None
    props: Props = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServiceNode:
    """A service (systemd unit, container, app) as named in log events."""

    name: str
    kind: str | None = None
    props: Props = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TemplateNode:
    """A log template (the miner's signature and its masked text)."""

    signature: str
    text: str | None = None
    level: str | None = None
    first_seen: datetime | None = None
    props: Props = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IncidentNode:
    """An incident. ``status=None`` leaves a stored status alone (new incidents start
    ``open``), so re-projecting an incident cannot reopen one a fix resolved."""

    id: str
    title: str | None = None
    status: str | None = None
    severity: str | None = None
    opened_at: datetime | None = None
    resolved_at: datetime | None = None
    props: Props = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunbookNode:
    """A runbook (a file under ``runbooks/``, identified by a stable id such as its slug)."""

    id: str
    title: str | None = None
    path: str | None = None
    props: Props = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActionNode:
    """An action of the catalog (restart a unit, clear a disk, roll back …)."""

    name: str
    description: str | None = None
    risk: str | None = None
    props: Props = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeploymentNode:
    """A deployment of ``service`` at ``at``; upserting it also links ``(d)-[:OF]->(s)``."""

    id: str
    service: str
    at: datetime
    version: str | None = None
    author: str | None = None
    props: Props = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunsOn:
    """``(Service)-[:RUNS_ON]->(Host)``; ``last_seen`` only ever moves forward."""

    service: str
    host: str
    last_seen: datetime | None = None


@dataclass(frozen=True, slots=True)
class Emits:
    """``(Service)-[:EMITS]->(Template)`` with an occurrence count.

    By default ``count`` is a *delta* added to the stored count (the live projection counts
    each stored event once; the log store already dropped duplicates). With
    ``absolute=True`` it replaces the stored count, which makes a resync from the log store
    idempotent. Several records for one pair in one call are summed (deltas) or the last
    wins (absolute); absolutes apply before deltas. ``last_seen`` only moves forward.
    """

    service: str
    signature: str
    count: int = 1
    last_seen: datetime | None = None
    absolute: bool = False


@dataclass(frozen=True, slots=True)
class DependsOn:
    """``(service)-[:DEPENDS_ON]->(depends_on)``, one edge per ``source`` (``config``,
    ``traces``, ``manual`` …) so each source keeps its own confidence; queries use the
    highest confidence of a pair."""

    service: str
    depends_on: str
    confidence: float = 1.0
    source: str = "manual"


@dataclass(frozen=True, slots=True)
class Involves:
    """``(Incident)-[:INVOLVES]->(Service|Host|Template)``; ``key`` is the target's key."""

    incident_id: str
    kind: InvolvedKind
    key: str


@dataclass(frozen=True, slots=True)
class Covers:
    """``(Runbook)-[:COVERS]->(Service|Template)``."""

    runbook_id: str
    kind: CoveredKind
    key: str


NodeRecord = (
    HostNode | ServiceNode | TemplateNode | IncidentNode | RunbookNode | ActionNode | DeploymentNode
)
EdgeRecord = RunsOn | Emits | DependsOn | Involves | Covers
GraphRecord = NodeRecord | EdgeRecord


@dataclass(frozen=True, slots=True)
class FixRecord:
    """What was done about an incident: for :meth:`GraphStore.record_fix`.

    ``time_to_recover`` is measured from the incident's start to recovery. A ``success``
    marks the incident resolved (at ``applied_at + time_to_recover`` if given, else at
    ``applied_at``); failed and partial fixes are remembered too, since knowing what did
    not work is half of the history. Without ``fix_id`` the id is derived from the
    incident, action, parameters and time, so recording the same fix twice is harmless.
    """

    incident_id: str
    action: str
    applied_at: datetime
    outcome: FixOutcome = "success"
    parameters: Mapping[str, Any] = field(default_factory=dict)
    approver: str | None = None
    time_to_recover: timedelta | None = None
    notes: str | None = None
    fix_id: str | None = None


# ---------------------------------------------------------------------------- results out


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """Counters summed over the batches of one upsert call."""

    nodes_created: int = 0
    relationships_created: int = 0
    properties_set: int = 0
    batches: int = 0

    def __add__(self, other: UpsertResult) -> UpsertResult:
        return UpsertResult(
            self.nodes_created + other.nodes_created,
            self.relationships_created + other.relationships_created,
            self.properties_set + other.properties_set,
            self.batches + other.batches,
        )


@dataclass(frozen=True, slots=True)
class DependencyRef:
    """A neighbouring service through DEPENDS_ON (either direction)."""

    service: str
    confidence: float
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """A template a service emits, with how often and how recently."""

    signature: str
    text: str | None
    level: str | None
    count: int
    last_seen: datetime | None


@dataclass(frozen=True, slots=True)
class IncidentRef:
    """A short reference to an incident."""

    id: str
    title: str | None
    status: str
    severity: str | None
    opened_at: datetime | None


@dataclass(frozen=True, slots=True)
class RunbookRef:
    """A runbook covering the service itself (``via="service"``) or one of its templates."""

    id: str
    title: str | None
    path: str | None
    via: Literal["service", "template"]


@dataclass(frozen=True, slots=True)
class Neighbourhood:
    """Everything one hop around a service the reasoning layer cites. ``known`` is False
    when the graph has no such service yet (then every list is empty)."""

    service: str
    known: bool
    kind: str | None = None
    hosts: tuple[str, ...] = ()
    depends_on: tuple[DependencyRef, ...] = ()
    dependents: tuple[DependencyRef, ...] = ()
    templates: tuple[TemplateRef, ...] = ()
    open_incidents: tuple[IncidentRef, ...] = ()
    runbooks: tuple[RunbookRef, ...] = ()


@dataclass(frozen=True, slots=True)
class Impacted:
    """A service affected when ``via``'s dependency fails: ``depth`` hops from the origin,
    ``confidence`` the weakest edge on the path found."""

    service: str
    depth: int
    via: str
    confidence: float


@dataclass(frozen=True, slots=True)
class DeploymentInfo:
    """A deployment of the asked service (``depth=0``) or of a dependency (``depth>=1``)."""

    id: str
    service: str
    at: datetime
    version: str | None
    author: str | None
    depth: int


@dataclass(frozen=True, slots=True)
class FixInfo:
    """A recorded fix, as recall returns it."""

    id: str
    action: str | None
    parameters: dict[str, Any]
    approver: str | None
    outcome: str | None
    applied_at: datetime | None
    time_to_recover: timedelta | None
    notes: str | None


@dataclass(frozen=True, slots=True)
class PastIncident:
    """An earlier incident similar to the question, with what was done about it.

    ``matched_signatures`` are the asked signatures it involved; ``involves_service`` says
    whether it involved the asked service. Results are ranked by matched signatures, then
    service match, then recency.
    """

    id: str
    title: str | None
    status: str
    severity: str | None
    opened_at: datetime | None
    resolved_at: datetime | None
    services: tuple[str, ...]
    matched_signatures: tuple[str, ...]
    involves_service: bool
    fixes: tuple[FixInfo, ...]


@dataclass(frozen=True, slots=True)
class GraphStats:
    """Node counts per label and edge counts per relationship type."""

    nodes: dict[str, int]
    edges: dict[str, int]

    @property
    def total_nodes(self) -> int:
        return sum(self.nodes.values())

    @property
    def total_edges(self) -> int:
        return sum(self.edges.values())


# ---------------------------------------------------------------------------- the port


class GraphStore(ABC):
    """A knowledge graph. Implementations must be safe to call from several threads.

    Writes are idempotent (``MERGE`` on each label's key) except ``Emits`` deltas, which
    add to a counter by design.
    """

    backend: str = "abstract"

    @abstractmethod
    def ensure_schema(self) -> None:
        """Create the indexes on every merge key (a no-op when they exist)."""

    @abstractmethod
    def upsert(self, records: Iterable[GraphRecord]) -> UpsertResult:
        """Merge nodes and edges in batches; nodes first, then edges. Edge endpoints that do
        not exist yet are created with just their key, so edges may arrive first."""

    def record_fix(self, fix: FixRecord) -> str:
        """Remember a fix (action, parameters, approver, outcome, time to recover) for an
        incident; return the fix id."""
        return self.record_fixes([fix])[0]

    @abstractmethod
    def record_fixes(self, fixes: Sequence[FixRecord]) -> list[str]:
        """:meth:`record_fix` for many fixes at once (imports, backfills from the audit log);
        return their ids in order."""

    @abstractmethod
    def neighbourhood(
        self,
        service: str,
        *,
        templates: int = 20,
        incidents: int = 20,
        since: datetime | None = None,
    ) -> Neighbourhood:
        """Dependencies both ways, hosts, the most recently seen templates (optionally only
        those seen ``since``), open incidents and runbooks of a service."""

    @abstractmethod
    def blast_radius(
        self, service: str, *, max_depth: int = 3, min_confidence: float = 0.0
    ) -> list[Impacted]:
        """Services that depend on ``service`` directly or transitively (up to ``max_depth``
        hops, through edges of at least ``min_confidence``), nearest first."""

    @abstractmethod
    def recent_deployments(
        self, service: str, since: datetime, *, depth: int = 1, limit: int = 50
    ) -> list[DeploymentInfo]:
        """Deployments since ``since`` of ``service`` and of what it depends on (up to
        ``depth`` hops), newest first."""

    @abstractmethod
    def recall(
        self,
        *,
        signature: str | Sequence[str] | None = None,
        service: str | None = None,
        limit: int = 10,
        exclude: Collection[str] = (),
    ) -> list[PastIncident]:
        """Past incidents that involved any of these template signatures and/or this service,
        with their fixes. Exact signatures: near-duplicates come from the vector index, whose
        hits the caller passes in as more signatures. ``exclude`` drops incident ids (e.g.
        the open incident being diagnosed)."""

    # Bookkeeping the projection from the log store needs.
    @abstractmethod
    def get_meta(self, key: str) -> dict[str, Any] | None:
        """Properties of the ``(:Meta {key})`` node (e.g. a projection watermark), or None.

        Meta nodes are not part of the schema's labels and not counted by :meth:`stats`.
        """

    @abstractmethod
    def set_meta(self, key: str, values: Mapping[str, Scalar]) -> None:
        """Merge the ``(:Meta {key})`` node and set these properties."""

    @abstractmethod
    def fold_templates(self, merged: Sequence[tuple[str, str]]) -> int:
        """Fold each ``old`` Template into ``new`` (the miner merged them), in order: EMITS
        counts add up, incidents and runbooks follow, the old node goes. Idempotent; returns
        how many old nodes existed."""

    @abstractmethod
    def replace_dependencies(self, source: str, edges: Sequence[DependsOn]) -> int:
        """Make ``edges`` the only DEPENDS_ON edges from ``source`` (``config``,
        ``cooccurrence`` …); return how many edges were removed."""

    @abstractmethod
    def clear(self) -> None:
        """Delete every node and edge of this graph (the schema is recreated)."""

    @abstractmethod
    def stats(self) -> GraphStats:
        """Node and edge counts."""

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`~devmesh_core.errors.BackendUnavailable` if the graph cannot answer."""

    @abstractmethod
    def close(self) -> None:
        """Release connections (and, for an owned embedded server, stop it)."""

    def __enter__(self) -> GraphStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- helpers


def to_millis(value: datetime) -> int:
    """Epoch milliseconds of a datetime (naive values are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def from_millis(value: object) -> datetime | None:
    """The UTC datetime of stored epoch milliseconds (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"not an epoch-milliseconds value: {value!r}")
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def check_identifier(name: str, what: str = "property") -> str:
    """Reject names that cannot be a bare Cypher identifier (labels, property keys)."""
    if not _IDENT.match(name):
        raise InvalidInput(f"invalid {what} name {name!r}: use letters, digits and _")
    return name


# ---------------------------------------------------------------------------- URLs


@dataclass(frozen=True, slots=True)
class GraphURL:
    """A parsed graph URL: an embedded server in ``directory`` or an external server."""

    kind: Literal["embedded", "server"]
    graph: str = DEFAULT_GRAPH
    directory: Path | None = None
    server_url: str | None = None
    persistence: Literal["aof", "rdb"] = "aof"


EMBEDDED_SCHEME = "falkordb+embedded"
SERVER_SCHEMES = ("redis", "rediss", "falkor", "falkors", "falkordb")


def parse_graph_url(url: str | None, data_dir: Path) -> GraphURL:
    """Parse a graph URL.

    * ``None``, ``""`` or ``falkordb+embedded://`` — the embedded server in
      ``<data_dir>/graph``; ``falkordb+embedded:///abs/dir`` puts it elsewhere. Query
      options: ``graph=<name>``, ``persistence=aof|rdb``.
    * ``redis://[user:password@]host[:port][/graph]`` (also ``rediss://``, ``falkor://``,
      ``falkors://``, ``falkordb://``) — an external FalkorDB. The path names the graph;
      an all-digit path keeps its Redis meaning (database number), so a pasted
      ``redis://host:6379/0`` does not become a graph called ``0``; ``?graph=`` always works.
    """
    if url is None or not url.strip():
        return GraphURL(kind="embedded", directory=data_dir / "graph")
    parts = urlsplit(url.strip())
    url = redact_url(url.strip())  # only used in messages from here on
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    graph = query.pop("graph", "") or DEFAULT_GRAPH
    if scheme == EMBEDDED_SCHEME:
        if parts.netloc:
            raise ConfigError(
                f"bad embedded graph URL {url!r}: use falkordb+embedded:// (default directory) "
                "or falkordb+embedded:///absolute/directory"
            )
        persistence = query.pop("persistence", "aof")
        if persistence not in ("aof", "rdb"):
            raise ConfigError(f"bad persistence {persistence!r} in {url!r}: use aof or rdb")
        if query:
            raise ConfigError(f"unknown options {sorted(query)} in graph URL {url!r}")
        path = unquote(parts.path)
        directory = Path(path).expanduser() if path not in ("", "/") else data_dir / "graph"
        return GraphURL(
            kind="embedded",
            graph=_check_graph_name(graph, url),
            directory=directory,
            persistence="aof" if persistence == "aof" else "rdb",
        )
    if scheme in SERVER_SCHEMES:
        if not parts.hostname:
            raise ConfigError(f"graph URL {url!r} has no host")
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError as exc:
            raise ConfigError(f"bad port in graph URL {url!r}") from exc
        path = unquote(parts.path.lstrip("/"))
        db = ""
        if path.isdigit():
            db = path
        elif path:
            if "graph" in dict(parse_qsl(parts.query)):
                raise ConfigError(f"graph URL {url!r} names the graph twice (path and ?graph=)")
            graph = path
        client_scheme = "redis" if scheme == "falkordb" else scheme
        server_url = urlunsplit(
            (client_scheme, parts.netloc, f"/{db}" if db else "", urlencode(query), "")
        )
        return GraphURL(kind="server", graph=_check_graph_name(graph, url), server_url=server_url)
    raise ConfigError(
        f"unsupported graph URL scheme {scheme!r} in {url!r} "
        "(use falkordb+embedded:// or redis://host:port/graph)"
    )


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return "<unparseable URL>"


def _check_graph_name(name: str, url: str) -> str:
    if not _GRAPH_NAME.match(name):
        raise ConfigError(f"bad graph name {name!r} in {url!r}: letters, digits, _ . : - only")
    return name
