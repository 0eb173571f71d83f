"""FalkorDB adapter of :class:`~devmesh_core.graph.base.GraphStore`.

Talks Cypher to a FalkorDB server through the ``falkordb`` client: the embedded server
DevMesh manages (:mod:`devmesh_core.graph.server`) or an external one. Driver errors are
translated here: connection trouble becomes :class:`BackendUnavailable`, a rejected query
:class:`BackendError`.

Two FalkorDB behaviours shape the write path (both measured on FalkorDB 4.16):

* ``MERGE`` needs an index on the merge key, or every merge scans the label (real-components
  notes edge merges going from 0.4 s to 162 s for 20k edges): :meth:`ensure_schema` indexes
  every key before anything is written.
* Rows of one ``UNWIND … MERGE`` batch must be unique per merged entity. Merging the same
  edge twice in one query with ``ON MATCH SET`` **crashes the server** (SIGSEGV in
  ``Record_GetType``), and when several rows ``SET`` the same node, one row's values stay,
  not the last row's. :func:`build_statements` therefore folds duplicates in Python before
  sending (summing ``Emits`` deltas, last value wins elsewhere), and :func:`fix_rows` gives
  every row of an incident the same outcome.

On the read side, every query starts from an indexed node bound with ``WITH`` (the planner
otherwise often scans the other label), and each question of the reasoning layer
(``neighbourhood``, ``recall``) is one query, shaped by profiling (see the notes above the
read queries).

With an embedded server, a connection failure triggers one ``ensure_running`` (which restarts
a crashed server on its saved data) and one retry of idempotent statements. ``Emits`` deltas
are not retried: whether a batch was applied before the connection broke is unknown, and a
double count is worse than a reported error. redis-py's own retries are switched off (it
would resend a delta after a timeout); against an external server a failure is reported as
:class:`BackendUnavailable` for the caller to retry.

Client-side parsing of replies is a good part of each query's latency; with ``hiredis``
installed redis-py parses in C (measured 30-40% off ``neighbourhood``/``recall``), and the
typed values of ``--compact`` replies are read by :func:`compact_rows`.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from falkordb import FalkorDB, QueryResult
from falkordb.helpers import stringify_param_value
from redis.backoff import NoBackoff
from redis.retry import Retry

from devmesh_core.errors import BackendError, BackendUnavailable, InvalidInput
from devmesh_core.graph.base import (
    CLOSED_STATUSES,
    DEFAULT_GRAPH,
    ActionNode,
    Covers,
    DependencyRef,
    DependsOn,
    DeploymentInfo,
    DeploymentNode,
    Emits,
    FixInfo,
    FixRecord,
    GraphRecord,
    GraphStats,
    GraphStore,
    HostNode,
    Impacted,
    IncidentNode,
    IncidentRef,
    Involves,
    Neighbourhood,
    PastIncident,
    RunbookNode,
    RunbookRef,
    RunsOn,
    Scalar,
    ServiceNode,
    TemplateNode,
    TemplateRef,
    UpsertResult,
    check_identifier,
    from_millis,
    parse_graph_url,
    redact_url,
    to_millis,
)
from devmesh_core.graph.server import EmbeddedServer, ServerConfig
from devmesh_core.log import get_logger


def _log() -> Any:
    """The module logger, looked up at use so it follows `configure_logging`."""
    return get_logger(__name__)


BACKEND = "falkordb"
DEFAULT_BATCH = 1000
MAX_DEPTH = 6

NODE_KEYS: dict[str, str] = {
    "Host": "name",
    "Service": "name",
    "Template": "signature",
    "Incident": "id",
    "Runbook": "id",
    "Action": "name",
    "Fix": "id",
    "Deployment": "id",
}
"""Every label and its merge key; each gets a range index in :meth:`ensure_schema`."""

EXTRA_INDEXES: tuple[tuple[str, str], ...] = (("Incident", "open"),)
"""Indexes that are not merge keys: ``Incident.open`` lets "open incidents of X" start from
the few open incidents instead of every incident X ever had."""

_CLOSED_LITERAL = "[" + ", ".join(f"'{status}'" for status in CLOSED_STATUSES) + "]"

EDGE_TYPES: tuple[str, ...] = (
    "RUNS_ON",
    "EMITS",
    "DEPENDS_ON",
    "INVOLVES",
    "RESOLVED_BY",
    "USED",
    "COVERS",
    "OF",
)

_LABEL_OF: dict[type, str] = {
    HostNode: "Host",
    ServiceNode: "Service",
    TemplateNode: "Template",
    IncidentNode: "Incident",
    RunbookNode: "Runbook",
    ActionNode: "Action",
}

# Keep the later of a stored and a new timestamp; a null new value leaves the stored one.
_LATEST = "CASE WHEN r.ls IS NULL THEN {v} WHEN {v} IS NULL OR r.ls > {v} THEN r.ls ELSE {v} END"


# ---------------------------------------------------------------------------- statements


@dataclass(frozen=True, slots=True)
class Statement:
    """One parameterised Cypher batch: ``UNWIND $rows AS r …``."""

    cypher: str
    rows: list[dict[str, Any]]
    idempotent: bool = True


def node_cypher(label: str) -> str:
    """The merge statement of a label: create defaults on create, then set given props.

    Incidents also get ``open`` (derived from ``status``), the indexed flag the open-incident
    query starts from.
    """
    key = NODE_KEYS[label]
    cypher = (
        f"UNWIND $rows AS r MERGE (n:{label} {{{key}: r.k}}) ON CREATE SET n += r.c SET n += r.p"
    )
    if label == "Incident":
        cypher += f" SET n.open = NOT (coalesce(n.status, 'open') IN {_CLOSED_LITERAL})"
    elif label == "Template":  # first_seen only ever moves back
        cypher += (
            " SET n.first_seen = CASE WHEN r.fs IS NULL THEN n.first_seen "
            "WHEN n.first_seen IS NULL OR r.fs < n.first_seen THEN r.fs ELSE n.first_seen END"
        )
    return cypher


DEPLOYMENT_CYPHER = (
    "UNWIND $rows AS r MERGE (d:Deployment {id: r.k}) SET d += r.p "
    "MERGE (s:Service {name: r.s}) MERGE (d)-[:OF]->(s)"
)
RUNS_ON_CYPHER = (
    "UNWIND $rows AS r MERGE (s:Service {name: r.a}) MERGE (h:Host {name: r.b}) "
    "MERGE (s)-[e:RUNS_ON]->(h) SET e.last_seen = " + _LATEST.format(v="e.last_seen")
)
DEPENDS_ON_CYPHER = (
    "UNWIND $rows AS r MERGE (a:Service {name: r.a}) MERGE (b:Service {name: r.b}) "
    "MERGE (a)-[d:DEPENDS_ON {source: r.src}]->(b) SET d.confidence = r.conf"
)
EMITS_ABSOLUTE_CYPHER = (
    "UNWIND $rows AS r MERGE (s:Service {name: r.a}) MERGE (t:Template {signature: r.b}) "
    "MERGE (s)-[e:EMITS]->(t) SET e.count = r.n, e.last_seen = " + _LATEST.format(v="e.last_seen")
)
EMITS_DELTA_CYPHER = (
    "UNWIND $rows AS r MERGE (s:Service {name: r.a}) MERGE (t:Template {signature: r.b}) "
    "MERGE (s)-[e:EMITS]->(t) SET e.count = coalesce(e.count, 0) + r.n, e.last_seen = "
    + _LATEST.format(v="e.last_seen")
)


def involves_cypher(kind: str) -> str:
    key = NODE_KEYS[kind]
    return (
        "UNWIND $rows AS r MERGE (i:Incident {id: r.a}) "
        "ON CREATE SET i.status = 'open', i.open = true "
        f"MERGE (t:{kind} {{{key}: r.b}}) MERGE (i)-[:INVOLVES]->(t)"
    )


def covers_cypher(kind: str) -> str:
    key = NODE_KEYS[kind]
    return (
        "UNWIND $rows AS r MERGE (rb:Runbook {id: r.a}) "
        f"MERGE (t:{kind} {{{key}: r.b}}) MERGE (rb)-[:COVERS]->(t)"
    )


def prop_value(value: Any, name: str) -> Any:
    """A property value FalkorDB can store: scalars, datetimes (as epoch ms), flat lists."""
    if isinstance(value, datetime):
        return to_millis(value)
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"property {name!r} must be a finite number, not {value}")
        return value
    if isinstance(value, list | tuple):
        items = [prop_value(item, name) for item in value]
        if any(isinstance(item, list) for item in items):
            raise InvalidInput(f"property {name!r}: nested lists are not supported")
        return items
    raise InvalidInput(f"property {name!r}: unsupported value type {type(value).__name__}")


def clean_props(props: Mapping[str, Any], *, reserved: Collection[str] = ()) -> dict[str, Any]:
    """Validated properties with ``None`` values dropped (``None`` means "leave alone")."""
    out: dict[str, Any] = {}
    for name, value in props.items():
        check_identifier(name)
        if name in reserved:
            raise InvalidInput(f"property {name!r} is set by DevMesh itself")
        if value is not None:
            out[name] = prop_value(value, name)
    return out


def _key(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} must be a non-empty string, got {value!r}")
    return value


def _node_row(record: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(key, create-only props, props) of a node record."""
    match record:
        case HostNode(name=name, address=address, props=props):
            fields: dict[str, Any] = {"address": address}
            key = _key(name, "host name")
            reserved: tuple[str, ...] = ("name",)
        case ServiceNode(name=name, kind=kind, props=props):
            fields = {"kind": kind}
            key = _key(name, "service name")
            reserved = ("name",)
        case TemplateNode(signature=sig, text=text, level=level, props=props):
            fields = {"text": text, "level": level}
            key = _key(sig, "template signature")
            reserved = ("signature", "first_seen")
        case IncidentNode(props=props) as inc:
            fields = {
                "title": inc.title,
                "status": inc.status,
                "severity": inc.severity,
                "opened_at": inc.opened_at,
                "resolved_at": inc.resolved_at,
            }
            key = _key(inc.id, "incident id")
            reserved = ("id",)
            create = {} if inc.status is not None else {"status": "open"}
            return key, create, _merge(props, fields, reserved)
        case RunbookNode(id=rid, title=title, path=path, props=props):
            fields = {"title": title, "path": path}
            key = _key(rid, "runbook id")
            reserved = ("id",)
        case ActionNode(name=name, description=description, risk=risk, props=props):
            fields = {"description": description, "risk": risk}
            key = _key(name, "action name")
            reserved = ("name",)
        case _:
            raise InvalidInput(f"not a node record: {record!r}")
    return key, {}, _merge(props, fields, reserved)


def _merge(
    props: Mapping[str, Any], fields: Mapping[str, Any], reserved: Sequence[str]
) -> dict[str, Any]:
    out = clean_props(props, reserved=(*reserved, *fields))
    out.update(clean_props(fields))
    return out


def _batches(
    cypher: str, rows: list[dict[str, Any]], size: int, *, idempotent: bool = True
) -> list[Statement]:
    return [Statement(cypher, rows[i : i + size], idempotent) for i in range(0, len(rows), size)]


def _later(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _earlier(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def build_statements(
    records: Iterable[GraphRecord], batch_size: int = DEFAULT_BATCH
) -> list[Statement]:
    """Group records by kind, fold duplicates, and cut them into ``UNWIND`` batches.

    Pure (no I/O), so the folding rules are unit-tested on their own. Order: nodes, then
    deployments, then edges; within ``Emits``, absolute counts before deltas.
    """
    if batch_size < 1:
        raise InvalidInput("batch_size must be at least 1")
    nodes: dict[str, dict[str, dict[str, Any]]] = {label: {} for label in _LABEL_OF.values()}
    deployments: dict[str, dict[str, Any]] = {}
    runs_on: dict[tuple[str, str], int | None] = {}
    depends: dict[tuple[str, str, str], float] = {}
    emits_abs: dict[tuple[str, str], dict[str, Any]] = {}
    emits_delta: dict[tuple[str, str], dict[str, Any]] = {}
    involves: dict[str, dict[tuple[str, str], None]] = {"Service": {}, "Host": {}, "Template": {}}
    covers: dict[str, dict[tuple[str, str], None]] = {"Service": {}, "Template": {}}

    for record in records:
        label = _LABEL_OF.get(type(record))
        if label is not None:
            key, create, props = _node_row(record)
            row = nodes[label].setdefault(key, {"k": key, "c": {}, "p": {}})
            row["c"].update(create)
            row["p"].update(props)
            if isinstance(record, TemplateNode):
                first = to_millis(record.first_seen) if record.first_seen else None
                row["fs"] = _earlier(row.get("fs"), first)
        elif isinstance(record, DeploymentNode):
            key = _key(record.id, "deployment id")
            props = _merge(
                record.props,
                {"at": record.at, "version": record.version, "author": record.author},
                ("id", "service"),
            )
            props["service"] = _key(record.service, "service name")
            row = deployments.setdefault(key, {"k": key, "p": {}, "s": record.service})
            row["p"].update(props)
            row["s"] = record.service
        elif isinstance(record, RunsOn):
            pair = (_key(record.service, "service name"), _key(record.host, "host name"))
            seen = to_millis(record.last_seen) if record.last_seen else None
            runs_on[pair] = _later(runs_on.get(pair), seen)
        elif isinstance(record, DependsOn):
            conf = float(record.confidence)
            if not 0.0 <= conf <= 1.0:
                raise InvalidInput(f"confidence must be within [0, 1], got {record.confidence}")
            trio = (
                _key(record.service, "service name"),
                _key(record.depends_on, "service name"),
                _key(record.source, "dependency source"),
            )
            depends[trio] = conf
        elif isinstance(record, Emits):
            if (
                isinstance(record.count, bool)
                or not isinstance(record.count, int)
                or record.count < 0
            ):
                raise InvalidInput(
                    f"Emits.count must be a non-negative integer, got {record.count!r}"
                )
            pair = (
                _key(record.service, "service name"),
                _key(record.signature, "template signature"),
            )
            seen = to_millis(record.last_seen) if record.last_seen else None
            target = emits_abs if record.absolute else emits_delta
            if pair in target:
                prev = target[pair]
                prev["n"] = record.count if record.absolute else prev["n"] + record.count
                prev["ls"] = _later(prev["ls"], seen)
            else:
                target[pair] = {"a": pair[0], "b": pair[1], "n": record.count, "ls": seen}
        elif isinstance(record, Involves):
            if record.kind not in involves:
                raise InvalidInput(
                    f"an incident involves a Service, Host or Template, not {record.kind!r}"
                )
            involves[record.kind][
                (_key(record.incident_id, "incident id"), _key(record.key, "key"))
            ] = None
        elif isinstance(record, Covers):
            if record.kind not in covers:
                raise InvalidInput(f"a runbook covers a Service or Template, not {record.kind!r}")
            covers[record.kind][
                (_key(record.runbook_id, "runbook id"), _key(record.key, "key"))
            ] = None
        else:
            raise InvalidInput(f"not a graph record: {type(record).__name__}")

    out: list[Statement] = []
    for label, rows in nodes.items():
        out += _batches(node_cypher(label), list(rows.values()), batch_size)
    out += _batches(DEPLOYMENT_CYPHER, list(deployments.values()), batch_size)
    out += _batches(
        RUNS_ON_CYPHER, [{"a": a, "b": b, "ls": ls} for (a, b), ls in runs_on.items()], batch_size
    )
    out += _batches(
        DEPENDS_ON_CYPHER,
        [{"a": a, "b": b, "src": src, "conf": conf} for (a, b, src), conf in depends.items()],
        batch_size,
    )
    out += _batches(EMITS_ABSOLUTE_CYPHER, list(emits_abs.values()), batch_size)
    out += _batches(EMITS_DELTA_CYPHER, list(emits_delta.values()), batch_size, idempotent=False)
    for kind, pairs in involves.items():
        out += _batches(involves_cypher(kind), [{"a": a, "b": b} for a, b in pairs], batch_size)
    for kind, pairs in covers.items():
        out += _batches(covers_cypher(kind), [{"a": a, "b": b} for a, b in pairs], batch_size)
    return out


def fix_id_for(fix: FixRecord) -> str:
    """A stable id for a fix without one: same incident, action, parameters and time → same id."""
    if fix.fix_id:
        return fix.fix_id
    canonical = json.dumps(
        [fix.incident_id, fix.action, to_millis(fix.applied_at), dict(fix.parameters)],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return "fix-" + hashlib.sha256(canonical.encode()).hexdigest()[:20]


def fix_params(fix: FixRecord) -> dict[str, Any]:
    """The row of :data:`RECORD_FIXES_CYPHER` for a fix."""
    _key(fix.incident_id, "incident id")
    _key(fix.action, "action name")
    if fix.outcome not in ("success", "partial", "failed"):
        raise InvalidInput(f"fix outcome must be success, partial or failed, not {fix.outcome!r}")
    try:
        parameters = json.dumps(dict(fix.parameters), sort_keys=True, default=str)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"fix parameters are not JSON-serialisable: {exc}") from exc
    applied = to_millis(fix.applied_at)
    ttr = fix.time_to_recover.total_seconds() if fix.time_to_recover is not None else None
    if ttr is not None and ttr < 0:
        raise InvalidInput("time_to_recover must not be negative")
    resolved_at = applied + int(ttr * 1000) if ttr is not None else applied
    props = clean_props(
        {
            "incident": fix.incident_id,
            "action": fix.action,
            "parameters": parameters,
            "approver": fix.approver,
            "outcome": fix.outcome,
            "applied_at": applied,
            "ttr_s": ttr,
            "notes": fix.notes,
        }
    )
    return {
        "incident": fix.incident_id,
        "fix": fix_id_for(fix),
        "action": fix.action,
        "props": props,
        "ok": fix.outcome == "success",
        "resolved_at": resolved_at,
    }


RECORD_FIXES_CYPHER = (
    "UNWIND $rows AS r "
    "MERGE (i:Incident {id: r.incident}) ON CREATE SET i.status = 'open', i.open = true "
    "MERGE (f:Fix {id: r.fix}) SET f += r.props "
    "MERGE (a:Action {name: r.action}) "
    "MERGE (i)-[:RESOLVED_BY]->(f) "
    "MERGE (f)-[:USED]->(a) "
    "SET i.status = CASE WHEN r.ok THEN 'resolved' ELSE i.status END, "
    "i.open = CASE WHEN r.ok THEN false ELSE i.open END, "
    # An older fix recorded late (a backfill) does not move a newer resolution back.
    "i.resolved_at = CASE WHEN r.ok AND (i.resolved_at IS NULL OR r.resolved_at > i.resolved_at) "
    "THEN r.resolved_at ELSE i.resolved_at END"
)


def fix_rows(fixes: Sequence[FixRecord]) -> tuple[list[str], list[dict[str, Any]]]:
    """Ids in input order, and one row per distinct fix.

    When several rows of one ``UNWIND`` batch set the same node, FalkorDB keeps one of the
    values, not the last row's; so every row of an incident carries the same outcome: the
    latest successful fix of the call decides ``resolved_at``.
    """
    ids: list[str] = []
    rows: dict[str, dict[str, Any]] = {}
    for fix in fixes:
        params = fix_params(fix)
        ids.append(str(params["fix"]))
        rows[str(params["fix"])] = params
    latest: dict[str, tuple[int, int]] = {}  # incident -> (applied_at, resolved_at)
    for row in rows.values():
        if row["ok"]:
            candidate = (int(row["props"]["applied_at"]), int(row["resolved_at"]))
            latest[row["incident"]] = max(latest.get(row["incident"], candidate), candidate)
    for row in rows.values():
        win = latest.get(row["incident"])
        row["ok"] = win is not None
        row["resolved_at"] = win[1] if win is not None else None
    ordered = sorted(rows.values(), key=lambda r: int(r["props"]["applied_at"]))
    return ids, ordered


# ---------------------------------------------------------------------------- read queries

# Every read starts from an indexed node and binds it with WITH before traversing: given a
# pattern such as (i:Incident)-[:INVOLVES]->(:Service {name: $n}), FalkorDB 4.16 often plans
# a scan of the *other* label (all incidents) instead of the index lookup (measured: 26 ms
# instead of 1 ms at 10k nodes, growing with the graph).
#
# What the reads below were shaped by (FalkorDB 4.16, ``bench/graph.py`` fleet, measured with
# GRAPH.PROFILE and the server's reported execution time):
#
# * Each query costs ~0.3-0.7 ms of dispatch and parsing on top of its execution, and each
#   round trip more: ``neighbourhood`` and ``recall`` are one query each.
# * Rows carry every variable bound so far: collecting small lists first and *then* fanning
#   out over a service's ~300 EMITS edges copied those lists into every row (1.2 ms of
#   Project and 0.5 ms of Sort per call). The widest fan-out comes first, next to the anchor.
# * Sort what is cut, project after the cut: ``WITH i ORDER BY … LIMIT k`` then reading
#   properties of k rows costs half of projecting ids for every row and sorting those
#   (a service has ~1,300 past incidents, a frequent template ~10,000).
# * Labels the edge type implies are left out (``(s)-[:EMITS]->(t)``, not ``(t:Template)``):
#   each label is one more matrix product per traversal, and every edge type has fixed end
#   labels, since only this adapter's MERGE statements create edges. INVOLVES and COVERS end
#   at several labels, so their far end keeps its label where it matters.
# * No pattern comprehensions (``[(s)-[d:X]->(o) | d.p]``): they were not faster than
#   OPTIONAL MATCH + collect on the one-row anchor, and FalkorDB 4.16 gets them wrong in
#   two ways: a variable name used in two of them makes the second return nothing, and
#   edge properties read in one come back null for good when its plan was cached before
#   that relationship type existed (the projection's first ``neighbourhood`` does that).
#   Variable names stay unique across each query anyway.
# * OPTIONAL MATCH of a pattern per candidate row is slow (an Apply per row); an Expand Into
#   inside a MATCH is cheap, so "involves the service" is a branch of its own.

# The anchor is one row. The open incidents come from the Incident.open index (a fleet has
# few open at a time, while a service may have thousands of past ones); LIMIT 0 would drop
# the row, hence ``max(1, n)`` and a cut in Python.
Q_NEIGHBOURHOOD = (
    "MATCH (s:Service {name: $name}) WITH s "
    "OPTIONAL MATCH (s)-[e:EMITS]->(t) WHERE $since IS NULL OR e.last_seen >= $since "
    "WITH s, t, e ORDER BY coalesce(e.last_seen, 0) DESC, t.signature LIMIT $templates "
    "WITH s, collect([t.signature, t.text, t.level, e.count, e.last_seen]) AS tmpls "
    "OPTIONAL MATCH (i:Incident {open: true}) WHERE (i)-[:INVOLVES]->(s) "
    "WITH s, tmpls, i ORDER BY coalesce(i.opened_at, 0) DESC LIMIT $incidents "
    "WITH s, tmpls, collect([i.id, i.title, i.status, i.severity, i.opened_at]) AS incs "
    # Runbooks reached through any template the service emits, not only the most recent;
    # one covering several of them comes once per template (folded in Python).
    "OPTIONAL MATCH (s)-[:EMITS]->()<-[:COVERS]-(rt) "
    "WITH s, incs, tmpls, collect([rt.id, rt.title, rt.path]) AS trbs "
    "OPTIONAL MATCH (s)-[:RUNS_ON]->(h) "
    "WITH s, incs, tmpls, trbs, collect(h.name) AS hosts "
    "OPTIONAL MATCH (s)-[d1:DEPENDS_ON]->(o) "
    "WITH s, incs, tmpls, trbs, hosts, collect([o.name, d1.confidence, d1.source]) AS outs "
    "OPTIONAL MATCH (s)<-[d2:DEPENDS_ON]-(u) "
    "WITH s, incs, tmpls, trbs, hosts, outs, collect([u.name, d2.confidence, d2.source]) AS ins "
    "OPTIONAL MATCH (rs)-[:COVERS]->(s) "
    "RETURN s.kind, hosts, outs, ins, collect([rs.id, rs.title, rs.path]), trbs, tmpls, incs"
)
Q_UPSTREAM_STEP = (
    "UNWIND $frontier AS name MATCH (s:Service {name: name}) WITH s, name "
    "MATCH (u:Service)-[d:DEPENDS_ON]->(s) WHERE d.confidence >= $min "
    "RETURN u.name, name, max(d.confidence)"
)
Q_DOWNSTREAM_STEP = (
    "UNWIND $frontier AS name MATCH (s:Service {name: name}) WITH s, name "
    "MATCH (s)-[d:DEPENDS_ON]->(u:Service) WHERE d.confidence >= $min "
    "RETURN u.name, name, max(d.confidence)"
)
Q_DEPLOYMENTS = (
    "UNWIND $names AS name MATCH (s:Service {name: name}) WITH s, name "
    "MATCH (d:Deployment)-[:OF]->(s) WHERE d.at >= $since "
    "RETURN d.id, name, d.at, d.version, d.author ORDER BY d.at DESC LIMIT $limit"
)

# Recall ranks by (signatures matched, involves the service, recency, id), in one query.
# Each branch below returns its own top ``$k`` (``limit`` plus the excluded ids, which are
# dropped after the union), ordered by the overall ranking restricted to the branch:
#   sig      incidents involving any asked template: (matched, recency, id)
#   sig_svc  the same, restricted to those involving the service: (matched, recency, id)
#   svc      incidents involving the service: (recency, id)
# Whatever ranks above a candidate within its branch ranks above it overall, so every
# incident of the true top ``limit`` is in the top ``limit`` of a branch where its matched
# signatures and service flag are exact (one that involves the service and matches a
# signature is in sig_svc's); an incident seen only with a partial view ranks no higher than
# its true place, below the true top. So the union, merged per incident (the longest
# matched list, the service flag of any branch), ranked and cut, is exactly the true top,
# and only its rows get details. Checking the service per signature candidate instead
# (OPTIONAL MATCH per row) cost 4x the sig_svc branch on a frequent template.
_OPENED = "coalesce(i.opened_at, 0)"
_RECALL_BRANCHES: dict[str, str] = {
    "sig": (
        "MATCH (t:Template {signature: $sig}) WITH t MATCH (t)<-[:INVOLVES]-(i) "
        f"WITH i ORDER BY {_OPENED} DESC, i.id LIMIT $k RETURN i, [$sig] AS m, 0 AS inv"
    ),
    "sigs": (
        "UNWIND $sigs AS sig MATCH (t:Template {signature: sig}) WITH sig, t "
        "MATCH (t)<-[:INVOLVES]-(i) WITH i, collect(sig) AS m "
        f"ORDER BY size(m) DESC, {_OPENED} DESC, i.id LIMIT $k RETURN i, m, 0 AS inv"
    ),
    "sig_svc": (
        "MATCH (s:Service {name: $service}) WITH s "
        "MATCH (t:Template {signature: $sig}) WITH s, t "
        "MATCH (t)<-[:INVOLVES]-(i)-[:INVOLVES]->(s) "
        f"WITH i ORDER BY {_OPENED} DESC, i.id LIMIT $k RETURN i, [$sig] AS m, 1 AS inv"
    ),
    "sigs_svc": (
        "MATCH (s:Service {name: $service}) WITH s "
        "UNWIND $sigs AS sig MATCH (t:Template {signature: sig}) WITH s, sig, t "
        "MATCH (t)<-[:INVOLVES]-(i)-[:INVOLVES]->(s) WITH i, collect(sig) AS m "
        f"ORDER BY size(m) DESC, {_OPENED} DESC, i.id LIMIT $k RETURN i, m, 1 AS inv"
    ),
    "svc": (
        "MATCH (s:Service {name: $service}) WITH s MATCH (i)-[:INVOLVES]->(s) "
        f"WITH i ORDER BY {_OPENED} DESC, i.id LIMIT $k RETURN i, [] AS m, 1 AS inv"
    ),
}
RECALL_FIX_FIELDS: tuple[str, ...] = (
    "id",
    "action",
    "parameters",
    "approver",
    "outcome",
    "applied_at",
    "ttr_s",
    "notes",
)
# Services and fixes of the final rows only (at most ``limit``): the aggregations lose the
# order, which the caller restores from the returned ranking fields.
_RECALL_TAIL = (
    "WITH i, collect(m) AS ms, max(inv) AS inv WHERE NOT (i.id IN $exclude) "
    "WITH i, inv, reduce(b = [], l IN ms | CASE WHEN size(l) > size(b) THEN l ELSE b END) AS m "
    f"ORDER BY size(m) DESC, inv DESC, {_OPENED} DESC, i.id LIMIT $limit "
    "OPTIONAL MATCH (i)-[:INVOLVES]->(v:Service) WITH i, m, inv, collect(v.name) AS services "
    "OPTIONAL MATCH (i)-[:RESOLVED_BY]->(f) "
    "RETURN i.id, i.title, i.status, i.severity, i.opened_at, i.resolved_at, m, inv, services, "
    "collect([" + ", ".join(f"f.{name}" for name in RECALL_FIX_FIELDS) + "])"
)


def recall_query(signatures: str | None, *, service: bool) -> str:
    """The recall query: the ``signatures`` branch (``sig``/``sigs``), ``service`` or both.

    With both, the service branch runs only when the signature branch came back short of
    ``$k``: otherwise at least ``limit`` incidents that match a signature (and are not
    excluded) outrank every incident that only involves the service, so that branch cannot
    reach the result. That skips the costliest branch (a sort over every past incident of
    the service) whenever the signatures have enough history.
    """
    if signatures is None:
        return f"CALL {{ {_RECALL_BRANCHES['svc']} }} {_RECALL_TAIL}"
    if not service:
        return f"CALL {{ {_RECALL_BRANCHES[signatures]} }} {_RECALL_TAIL}"
    sig, sig_svc = _RECALL_BRANCHES[signatures], _RECALL_BRANCHES[f"{signatures}_svc"]
    svc = _RECALL_BRANCHES["svc"].replace(
        " RETURN i, [] AS m, 1 AS inv", " RETURN collect([i, [], 1]) AS more"
    )
    return (
        f"CALL {{ {sig} UNION ALL {sig_svc} }} "
        "WITH collect([i, m, inv]) AS found, sum(1 - inv) AS n "
        f"CALL {{ WITH n WITH n WHERE n < $k {svc} }} "
        f"UNWIND found + more AS c WITH c[0] AS i, c[1] AS m, c[2] AS inv {_RECALL_TAIL}"
    )


Q_RECALL_SIGNATURE = recall_query("sig", service=False)
Q_RECALL_SIGNATURES = recall_query("sigs", service=False)
Q_RECALL_SERVICE = recall_query(None, service=True)
Q_RECALL_SIGNATURE_WITH_SERVICE = recall_query("sig", service=True)
Q_RECALL_SIGNATURES_WITH_SERVICE = recall_query("sigs", service=True)


# ---------------------------------------------------------------------------- the adapter


# Folding one template into another is one query, so it is atomic: EMITS counts are summed
# into the survivor's edges (the projection then sets them from the store anyway), incidents
# and runbooks pointing at the old template point at the survivor, and the old node goes.
# Each row of a FOREACH merges a distinct edge (FalkorDB crashes merging one edge twice in a
# query). Run again, it finds no old node and does nothing.
FOLD_TEMPLATE_CYPHER = (
    "MATCH (o:Template {signature: $old}) "
    "MERGE (n:Template {signature: $new}) "
    "SET n.first_seen = CASE WHEN o.first_seen IS NOT NULL AND "
    "(n.first_seen IS NULL OR o.first_seen < n.first_seen) THEN o.first_seen "
    "ELSE n.first_seen END "
    "WITH o, n "
    "OPTIONAL MATCH (s:Service)-[e:EMITS]->(o) "
    "FOREACH (_ IN CASE WHEN s IS NULL THEN [] ELSE [1] END | "
    "MERGE (s)-[e2:EMITS]->(n) "
    "SET e2.count = coalesce(e2.count, 0) + coalesce(e.count, 0), "
    "e2.last_seen = CASE WHEN e.last_seen IS NULL OR (e2.last_seen IS NOT NULL AND "
    "e2.last_seen >= e.last_seen) THEN e2.last_seen ELSE e.last_seen END) "
    "WITH DISTINCT o, n "
    "OPTIONAL MATCH (i:Incident)-[:INVOLVES]->(o) "
    "FOREACH (_ IN CASE WHEN i IS NULL THEN [] ELSE [1] END | MERGE (i)-[:INVOLVES]->(n)) "
    "WITH DISTINCT o, n "
    "OPTIONAL MATCH (r:Runbook)-[:COVERS]->(o) "
    "FOREACH (_ IN CASE WHEN r IS NULL THEN [] ELSE [1] END | MERGE (r)-[:COVERS]->(n)) "
    "WITH DISTINCT o "
    "DETACH DELETE o"
)
EXISTING_TEMPLATES_CYPHER = (
    "UNWIND $sigs AS sig MATCH (t:Template {signature: sig}) RETURN t.signature"
)
DROP_DEPENDENCIES_CYPHER = (
    "MATCH (a:Service)-[d:DEPENDS_ON]->(b:Service) "
    "WHERE d.source = $source AND NOT ([a.name, b.name] IN $keep) DELETE d"
)
GET_META_CYPHER = "MATCH (m:Meta {key: $key}) RETURN properties(m)"
SET_META_CYPHER = "MERGE (m:Meta {key: $key}) SET m += $props"


class FalkorDBGraphStore(GraphStore):
    """The graph in one FalkorDB graph key (``graph``, default ``devmesh``).

    ``connect`` builds a client; with ``server`` (embedded mode) it is called again after a
    connection failure, once ``server.ensure_running()`` has restarted a dead server.
    ``owns_server`` makes :meth:`close` close the manager too (whoever created the manager
    closes it; in ``owned`` mode that stops a server the manager started). The indexes are
    created by :meth:`ensure_schema`, or before the first write if nobody called it.
    """

    backend = BACKEND

    def __init__(
        self,
        connect: Callable[[], FalkorDB],
        *,
        graph: str = DEFAULT_GRAPH,
        server: EmbeddedServer | None = None,
        owns_server: bool = False,
        batch_size: int = DEFAULT_BATCH,
        where: str = "FalkorDB",
    ) -> None:
        if batch_size < 1:
            raise InvalidInput("batch_size must be at least 1")
        self.graph_name = graph
        self.server = server
        self._owns_server = owns_server
        self.batch_size = batch_size
        self._connect = connect
        self._where = where
        self._lock = threading.Lock()
        self._generation = 0
        self._closed = False
        self._schema_ready = False
        self._db = self._open_client()
        self._graph = self._db.select_graph(graph)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def embedded(
        cls,
        server: EmbeddedServer,
        *,
        graph: str = DEFAULT_GRAPH,
        batch_size: int = DEFAULT_BATCH,
        socket_timeout: float = 60.0,
        owns_server: bool = False,
    ) -> FalkorDBGraphStore:
        """A store on the embedded server of ``server``'s directory (started if needed)."""

        def connect() -> FalkorDB:
            info = server.ensure_running()
            return FalkorDB(
                **info.redis_kwargs(),
                socket_timeout=socket_timeout,
                socket_connect_timeout=5.0,
                retry=Retry(NoBackoff(), 0),
            )

        return cls(
            connect,
            graph=graph,
            server=server,
            owns_server=owns_server,
            batch_size=batch_size,
            where=f"embedded FalkorDB in {server.directory}",
        )

    @classmethod
    def from_server_url(
        cls,
        server_url: str,
        *,
        graph: str = DEFAULT_GRAPH,
        batch_size: int = DEFAULT_BATCH,
        socket_timeout: float = 60.0,
    ) -> FalkorDBGraphStore:
        """A store on an external server (``redis://[user:pw@]host:port[/db]``)."""

        def connect() -> FalkorDB:
            return FalkorDB.from_url(
                server_url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=5.0,
                retry=Retry(NoBackoff(), 0),
            )

        return cls(connect, graph=graph, batch_size=batch_size, where=redact_url(server_url))

    @classmethod
    def from_url(
        cls, url: str | None, data_dir: Path, *, owned: bool = False
    ) -> FalkorDBGraphStore:
        """Pick embedded or external from a graph URL (see :func:`parse_graph_url`)."""
        parsed = parse_graph_url(url, data_dir)
        if parsed.kind == "embedded":
            assert parsed.directory is not None
            server = EmbeddedServer(
                ServerConfig(directory=parsed.directory, persistence=parsed.persistence),
                owned=owned,
            )
            try:
                return cls.embedded(server, graph=parsed.graph, owns_server=True)
            except BaseException:
                server.close()
                raise
        assert parsed.server_url is not None
        return cls.from_server_url(parsed.server_url, graph=parsed.graph)

    # ------------------------------------------------------------------ plumbing

    def _open_client(self) -> FalkorDB:
        try:
            return self._connect()
        except redis.RedisError as exc:
            raise BackendUnavailable(
                f"cannot connect to {self._where}: {exc}", backend=BACKEND
            ) from exc

    def _reconnect(self, seen_generation: int) -> None:
        """Replace the client (restarting an embedded server) unless another thread did."""
        with self._lock:
            if self._generation != seen_generation:
                return
            old = self._db
            self._db = self._open_client()
            self._graph = self._db.select_graph(self.graph_name)
            self._generation += 1
            self._schema_ready = False  # a restarted server may have lost unsaved indexes
        old.close()
        _log().warning("graph_reconnected", where=self._where)

    def get_meta(self, key: str) -> dict[str, Any] | None:
        """Properties of the ``(:Meta {key})`` node, or ``None``."""
        rows = self._rows(GET_META_CYPHER, {"key": key})
        if not rows or not rows[0] or rows[0][0] is None:
            return None
        props = dict(rows[0][0])
        props.pop("key", None)
        return props

    def set_meta(self, key: str, values: Mapping[str, Scalar]) -> None:
        """Merge the ``(:Meta {key})`` node and set these properties."""
        self._query(SET_META_CYPHER, {"key": key, "props": dict(values)})

    def fold_templates(self, merged: Sequence[tuple[str, str]]) -> int:
        """Fold each ``old`` Template into ``new``, in order; return how many existed."""
        pairs = [(old, new) for old, new in merged if old and new and old != new]
        if not pairs:
            return 0
        olds = sorted({old for old, _ in pairs})
        present: set[str] = set()
        for i in range(0, len(olds), 1000):
            rows = self._rows(EXISTING_TEMPLATES_CYPHER, {"sigs": olds[i : i + 1000]})
            present.update(row[0] for row in rows)
        folded = 0
        for old, new in pairs:  # in merge order: a→b then b→c ends in c
            if old not in present:
                continue
            result = self._query(FOLD_TEMPLATE_CYPHER, {"old": old, "new": new})
            folded += int(result.nodes_deleted)
            present.discard(old)
            present.add(new)
        return folded

    def replace_dependencies(self, source: str, edges: Sequence[DependsOn]) -> int:
        """Make ``edges`` the only DEPENDS_ON edges of ``source``; return how many went."""
        for edge in edges:
            if edge.source != source:
                raise InvalidInput(f"edge {edge} is not from source {source!r}")
        keep = sorted({(e.service, e.depends_on) for e in edges})
        result = self._query(
            DROP_DEPENDENCIES_CYPHER, {"source": source, "keep": [list(p) for p in keep]}
        )
        if edges:
            self.upsert(edges)
        return int(result.relationships_deleted)

    def _query(
        self,
        cypher: str,
        params: dict[str, Any] | None = None,
        *,
        read_only: bool = False,
        idempotent: bool = True,
    ) -> Any:
        if self._closed:
            raise BackendError("the graph store is closed", backend=BACKEND)
        for attempt in (0, 1):
            generation, graph = self._generation, self._graph
            try:
                if read_only:
                    return graph.ro_query(cypher, params)
                return graph.query(cypher, params)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if attempt == 0 and self.server is not None:
                    self._reconnect(generation)
                    if idempotent:
                        continue
                    raise BackendUnavailable(
                        f"lost the connection to {self._where} during a non-idempotent write "
                        f"(it may or may not have been applied): {exc}",
                        backend=BACKEND,
                    ) from exc
                raise BackendUnavailable(
                    f"{self._where} is unavailable: {exc}", backend=BACKEND
                ) from exc
            except redis.ResponseError as exc:
                raise BackendError(f"graph query failed: {exc}", backend=BACKEND) from exc
            except redis.RedisError as exc:
                raise BackendError(f"graph error: {exc}", backend=BACKEND) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_many(self, queries: Sequence[tuple[str, dict[str, Any]]]) -> list[list[list[Any]]]:
        """Run read queries in one round trip (a Redis pipeline); rows of each, in order.

        Replies are read in ``--compact`` form by :func:`compact_rows`. Round trips were a
        third of the latency when each question took several queries; ``neighbourhood`` and
        ``recall`` are now one query each, and several still share one trip here."""
        if self._closed:
            raise BackendError("the graph store is closed", backend=BACKEND)
        for attempt in (0, 1):
            generation, db, graph = self._generation, self._db, self._graph
            try:
                pipe = db.connection.pipeline(transaction=False)
                for cypher, params in queries:
                    pipe.execute_command(
                        "GRAPH.RO_QUERY", self.graph_name, with_params(cypher, params), "--compact"
                    )
                responses = pipe.execute(raise_on_error=False)
                break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if attempt == 0 and self.server is not None:
                    self._reconnect(generation)
                    continue
                raise BackendUnavailable(
                    f"{self._where} is unavailable: {exc}", backend=BACKEND
                ) from exc
            except redis.RedisError as exc:
                raise BackendError(f"graph error: {exc}", backend=BACKEND) from exc
        out: list[list[list[Any]]] = []
        for response in responses:
            try:
                if isinstance(response, Exception):
                    raise response
                out.append(compact_rows(response, graph))
            except redis.ResponseError as exc:
                if "empty key" in str(exc):
                    out.append([])
                    continue
                raise BackendError(f"graph query failed: {exc}", backend=BACKEND) from exc
        return out

    def _rows(self, cypher: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
        """Rows of a read query; a graph that does not exist yet reads as empty."""
        try:
            result = self._query(cypher, params, read_only=True)
        except BackendError as exc:
            if isinstance(exc.__cause__, redis.ResponseError) and "empty key" in str(exc):
                return []
            raise
        rows: list[list[Any]] = result.result_set
        return rows

    # ------------------------------------------------------------------ schema and writes

    def ensure_schema(self) -> None:
        existing = {
            (label, prop)
            for label, props, entity in self._rows(
                "CALL db.indexes() YIELD label, properties, entitytype "
                "RETURN label, properties, entitytype"
            )
            if entity == "NODE"
            for prop in props
        }
        for label, key in (*NODE_KEYS.items(), *EXTRA_INDEXES):
            if (label, key) in existing:
                continue
            try:
                self._query(f"CREATE INDEX FOR (n:{label}) ON (n.{key})")
            except BackendError as exc:
                if "already indexed" not in str(exc):  # another process won the race
                    raise
        self._schema_ready = True
        _log().debug("graph_schema_ready", graph=self.graph_name)

    def upsert(self, records: Iterable[GraphRecord]) -> UpsertResult:
        if not self._schema_ready:  # merging without the indexes is 100x+ slower
            self.ensure_schema()
        total = UpsertResult()
        for statement in build_statements(records, self.batch_size):
            result = self._query(
                statement.cypher, {"rows": statement.rows}, idempotent=statement.idempotent
            )
            total = total + UpsertResult(
                int(result.nodes_created),
                int(result.relationships_created),
                int(result.properties_set),
                1,
            )
        return total

    def record_fixes(self, fixes: Sequence[FixRecord]) -> list[str]:
        ids, rows = fix_rows(fixes)
        if not self._schema_ready:
            self.ensure_schema()
        for statement in _batches(RECORD_FIXES_CYPHER, rows, self.batch_size):
            self._query(statement.cypher, {"rows": statement.rows})
        return ids

    def clear(self) -> None:
        """Drop the graph key with ``GRAPH.DELETE`` (instant, unlike deleting node by node)
        and recreate the indexes."""
        for attempt in (0, 1):
            generation, db = self._generation, self._db
            try:
                db.execute_command("GRAPH.DELETE", self.graph_name)
                break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if attempt == 0 and self.server is not None:
                    self._reconnect(generation)
                    continue
                raise BackendUnavailable(
                    f"{self._where} is unavailable: {exc}", backend=BACKEND
                ) from exc
            except redis.ResponseError as exc:
                if "empty key" in str(exc) or "Invalid graph operation" in str(exc):
                    break  # nothing to delete
                raise BackendError(f"cannot delete the graph: {exc}", backend=BACKEND) from exc
            except redis.RedisError as exc:
                raise BackendError(f"cannot delete the graph: {exc}", backend=BACKEND) from exc
        self.ensure_schema()

    # ------------------------------------------------------------------ reads

    def neighbourhood(
        self,
        service: str,
        *,
        templates: int = 20,
        incidents: int = 20,
        since: datetime | None = None,
    ) -> Neighbourhood:
        name = _key(service, "service name")
        (rows,) = self._read_many(
            [
                (
                    Q_NEIGHBOURHOOD,
                    {
                        "name": name,
                        "since": to_millis(since) if since else None,
                        # LIMIT 0 would drop the one row, and with it the service.
                        "templates": max(1, templates),
                        "incidents": max(1, incidents),
                    },
                )
            ]
        )
        if not rows:
            return Neighbourhood(service=name, known=False)
        kind, hosts, outs, ins, rbs, trbs, tmpls, incs = rows[0]
        runbooks: dict[str, RunbookRef] = {}
        for rid, title, path in trbs:
            if rid is not None:
                runbooks[rid] = RunbookRef(rid, title, path, "template")
        for rid, title, path in rbs:  # covering the service itself wins
            if rid is not None:
                runbooks[rid] = RunbookRef(rid, title, path, "service")
        return Neighbourhood(
            service=name,
            known=True,
            kind=kind,
            hosts=tuple(sorted({h for h in hosts if h is not None})),
            depends_on=_dependencies(outs),
            dependents=_dependencies(ins),
            templates=tuple(
                TemplateRef(sig, text, level, int(count or 0), from_millis(last))
                for sig, text, level, count, last in tmpls[: max(0, templates)]
                if sig is not None
            ),
            open_incidents=tuple(
                IncidentRef(iid, title, status or "open", severity, from_millis(opened))
                for iid, title, status, severity, opened in incs[: max(0, incidents)]
                if iid is not None
            ),
            runbooks=tuple(sorted(runbooks.values(), key=lambda r: (r.via != "service", r.id))),
        )

    def _walk(
        self, service: str, query: str, max_depth: int, min_confidence: float
    ) -> list[Impacted]:
        """Breadth-first over DEPENDS_ON, one query per level: cost grows with the edges
        visited, not with the number of paths (a variable-length match enumerates paths)."""
        if not 1 <= max_depth <= MAX_DEPTH:
            raise InvalidInput(f"max_depth must be within 1..{MAX_DEPTH}, got {max_depth}")
        found: dict[str, Impacted] = {}
        conf_to: dict[str, float] = {service: 1.0}
        frontier = [service]
        for depth in range(1, max_depth + 1):
            rows = self._rows(query, {"frontier": frontier, "min": float(min_confidence)})
            nxt: dict[str, Impacted] = {}
            for other, via, conf in sorted(rows, key=lambda r: (r[0], r[1])):
                if other == service or other in found:
                    continue
                path_conf = min(conf_to[via], float(conf))
                best = nxt.get(other)
                if best is None or path_conf > best.confidence:
                    nxt[other] = Impacted(other, depth, via, path_conf)
            if not nxt:
                break
            for other, hit in nxt.items():
                found[other] = hit
                conf_to[other] = hit.confidence
            frontier = sorted(nxt)
        return sorted(found.values(), key=lambda i: (i.depth, -i.confidence, i.service))

    def blast_radius(
        self, service: str, *, max_depth: int = 3, min_confidence: float = 0.0
    ) -> list[Impacted]:
        return self._walk(_key(service, "service name"), Q_UPSTREAM_STEP, max_depth, min_confidence)

    def recent_deployments(
        self, service: str, since: datetime, *, depth: int = 1, limit: int = 50
    ) -> list[DeploymentInfo]:
        name = _key(service, "service name")
        depth_of = {name: 0}
        if depth > 0:
            for dep in self._walk(name, Q_DOWNSTREAM_STEP, depth, 0.0):
                depth_of[dep.service] = dep.depth
        rows = self._rows(
            Q_DEPLOYMENTS,
            {"names": sorted(depth_of), "since": to_millis(since), "limit": max(0, limit)},
        )
        out: list[DeploymentInfo] = []
        for did, svc, at, version, author in rows:
            when = from_millis(at)
            if when is None:
                continue
            out.append(DeploymentInfo(did, svc, when, version, author, depth_of.get(svc, 0)))
        return out

    def recall(
        self,
        *,
        signature: str | Sequence[str] | None = None,
        service: str | None = None,
        limit: int = 10,
        exclude: Collection[str] = (),
    ) -> list[PastIncident]:
        sigs = [signature] if isinstance(signature, str) else list(signature or [])
        sigs = list(dict.fromkeys(_key(s, "template signature") for s in sigs))
        if not sigs and service is None:
            raise InvalidInput("recall needs a signature or a service")
        if limit < 1:
            return []
        excluded = sorted(set(exclude))
        params: dict[str, Any] = {
            "exclude": excluded,
            "limit": limit,
            "k": limit + len(excluded),  # each branch's cut, before the exclusion
        }
        if len(sigs) == 1:
            params["sig"] = sigs[0]
        elif sigs:
            params["sigs"] = sigs
        if service is not None:
            params["service"] = _key(service, "service name")
            if len(sigs) == 1:
                query = Q_RECALL_SIGNATURE_WITH_SERVICE
            elif sigs:
                query = Q_RECALL_SIGNATURES_WITH_SERVICE
            else:
                query = Q_RECALL_SERVICE
        else:
            query = Q_RECALL_SIGNATURE if len(sigs) == 1 else Q_RECALL_SIGNATURES
        (rows,) = self._read_many([(query, params)])
        # The server ranked and cut; its last aggregations do not keep that order.
        rows.sort(key=lambda r: (-len(r[6]), -r[7], -(r[4] or 0), r[0]))
        out: list[PastIncident] = []
        for row in rows:
            iid, title, status, severity, opened, resolved, matched, involves, services, fixes = row
            out.append(
                PastIncident(
                    id=iid,
                    title=title,
                    status=status or "open",
                    severity=severity,
                    opened_at=from_millis(opened),
                    resolved_at=from_millis(resolved),
                    services=tuple(sorted(set(services))),
                    matched_signatures=tuple(sorted(set(matched))),
                    involves_service=bool(involves),
                    fixes=tuple(
                        sorted((_fix(f) for f in fixes if f[0] is not None), key=_fix_order)
                    ),
                )
            )
        return out

    def stats(self) -> GraphStats:
        nodes = {
            label: _count(self._rows(f"MATCH (n:{label}) RETURN count(n)")) for label in NODE_KEYS
        }
        edges = {
            rel: _count(self._rows(f"MATCH ()-[r:{rel}]->() RETURN count(r)")) for rel in EDGE_TYPES
        }
        return GraphStats(nodes=nodes, edges=edges)

    def ping(self) -> None:
        try:
            self._db.connection.ping()
        except redis.RedisError as exc:
            if self.server is None:
                raise BackendUnavailable(
                    f"{self._where} is unavailable: {exc}", backend=BACKEND
                ) from exc
            self._reconnect(self._generation)
        self._rows("RETURN 1")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._db.close()
        if self.server is not None and self._owns_server:
            self.server.close()


class _Unsupported(Exception):
    """A compact reply value :func:`_scalar` leaves to the client's parser."""


def _scalar(cell: list[Any]) -> Any:
    """One ``[type, value]`` cell of a ``--compact`` reply: null, string, integer, boolean,
    double, array or map; anything else raises :class:`_Unsupported`."""
    kind, value = cell
    if kind == 2 or kind == 3:  # string (decoded by the client), integer
        return value
    if kind == 1:
        return None
    if kind == 6:
        return [_scalar(item) for item in value]
    if kind == 5:
        return float(value)
    if kind == 4:
        return value == "true"
    if kind == 10:
        return {value[i]: _scalar(value[i + 1]) for i in range(0, len(value), 2)}
    raise _Unsupported(kind)


def compact_rows(response: list[Any], graph: Any) -> list[list[Any]]:
    """Rows of a ``--compact`` ``GRAPH.RO_QUERY`` reply.

    The read queries return scalars and lists only; parsing those here is about twice as
    fast as the client's generic parser (``QueryResult``), which stays the fallback for
    nodes, edges, paths and temporal values, and raises the server's errors.
    """
    if len(response) == 3 and not any(isinstance(part, Exception) for part in response):
        try:
            return [[_scalar(cell) for cell in row] for row in response[1]]
        except _Unsupported:
            pass
    rows: list[list[Any]] = QueryResult(graph, response).result_set
    return rows


def with_params(cypher: str, params: Mapping[str, Any] | None) -> str:
    """Prefix a query with its ``CYPHER name=value …`` header, as the client does."""
    if not params:
        return cypher
    header = " ".join(f"`{key}`={stringify_param_value(value)}" for key, value in params.items())
    return f"CYPHER {header} {cypher}"


def _count(rows: list[list[Any]]) -> int:
    return int(rows[0][0]) if rows else 0


def _dependencies(rows: list[list[Any]]) -> tuple[DependencyRef, ...]:
    """Fold (service, confidence, source) triples into one reference per service."""
    best: dict[str, float] = {}
    sources: dict[str, set[str]] = {}
    for name, conf, source in rows:
        if name is None:
            continue
        best[name] = max(best.get(name, 0.0), float(conf if conf is not None else 0.0))
        sources.setdefault(name, set()).add(source)
    return tuple(
        DependencyRef(name, best[name], tuple(sorted(s for s in sources[name] if s)))
        for name in sorted(best)
    )


def _fix(values: Sequence[Any]) -> FixInfo:
    """A fix from its properties, in the order of :data:`RECALL_FIX_FIELDS`."""
    raw = dict(zip(RECALL_FIX_FIELDS, values, strict=True))
    try:
        parameters = json.loads(raw["parameters"] or "{}")
    except ValueError:
        parameters = {"_raw": raw["parameters"]}
    ttr = raw["ttr_s"]
    return FixInfo(
        id=str(raw["id"]),
        action=raw["action"],
        parameters=parameters if isinstance(parameters, dict) else {"_value": parameters},
        approver=raw["approver"],
        outcome=raw["outcome"],
        applied_at=from_millis(raw["applied_at"]),
        time_to_recover=timedelta(seconds=float(ttr)) if ttr is not None else None,
        notes=raw["notes"],
    )


def _fix_order(fix: FixInfo) -> tuple[int, float]:
    rank = {"success": 0, "partial": 1, "failed": 2}.get(fix.outcome or "", 3)
    stamp = fix.applied_at.timestamp() if fix.applied_at else 0.0
    return rank, -stamp
