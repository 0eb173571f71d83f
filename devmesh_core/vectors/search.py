"""Semantic search over log templates, and grouping of templates that say the same thing.

Search embeds the query, asks the vector index for the closest templates (narrowed by
service, host and level through payload filters), then asks the store — the source of
truth — for each template's current figures and its recent events under the same filters.
A template with no event matching the filters (e.g. none in the ``since`` window) is left
out, so a hit always comes with evidence.

Grouping is the answer to "these are the same failure worded differently" (``connection
refused to db:5432`` vs ``failed to connect to db:5432: ECONNREFUSED``): the miner keeps
them apart (different tokens), and they stay apart — grouping only lists them together by
embedding similarity, it never merges template ids.

About the threshold: with all-MiniLM-L6-v2, cosine similarity tracks shared wording as much
as meaning. Measured: the ECONNREFUSED paraphrase pair scores 0.72 (0.65 without the errno
expansion of :func:`~devmesh_core.vectors.embedder.embedding_text`), "connection refused to
X" vs "connection timed out to X" 0.77, vs "accepted connection from X" 0.70, and "disk is
full" vs "No space left on device" only 0.56. So the default is 0.7 (0.8 misses real
paraphrases), and groups only join templates seen at the same maximum level by default,
which keeps "accepted connection" (INFO) out of the "connection refused" (ERROR) group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from devmesh_core.errors import InvalidInput, NotFound
from devmesh_core.models import Level, StoredEvent, TemplateInfo, to_utc
from devmesh_core.store.base import LogQuery, LogStore
from devmesh_core.vectors.base import VectorFilter, VectorIndex, VectorRecord
from devmesh_core.vectors.embedder import Embedder, query_text
from devmesh_core.vectors.worker import max_level_rank

DEFAULT_SIMILARITY = 0.7
"""Default cosine threshold for "the same failure, worded differently" (see module doc)."""

MAX_LIMIT = 100
MAX_EXAMPLES = 50
MAX_CANDIDATES = 500
"""Most index hits examined for one search when the store's filters reject many of them."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A template close to the query, its similarity and recent events matching the filters."""

    template: TemplateInfo
    score: float
    examples: list[StoredEvent] = field(default_factory=list)

    def to_api(self) -> dict[str, Any]:
        """JSON-ready form for the API and ``devmesh search --json``."""
        info = self.template
        return {
            "template_id": info.template_id,
            "template": info.template,
            "score": round(self.score, 4),
            "services": list(info.services),
            "hosts": list(info.hosts),
            "levels": info.levels,
            "count": info.count,
            "first_seen": _iso(info.first_seen),
            "last_seen": _iso(info.last_seen),
            "examples": [event.to_api() for event in self.examples],
        }


def search_templates(
    store: LogStore,
    index: VectorIndex,
    embedder: Embedder,
    query: str,
    *,
    limit: int = 10,
    service: str | None = None,
    host: str | None = None,
    level: Level | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    examples: int = 3,
    min_score: float | None = None,
) -> list[SearchHit]:
    """The templates closest in meaning to ``query``, best first, with recent examples.

    ``level`` is a minimum, ``since`` inclusive and ``until`` exclusive, as in
    :class:`~devmesh_core.store.base.LogQuery`. With any filter, only templates that have at
    least one event matching all filters are returned; ``examples`` is how many of the most
    recent such events come with each hit.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    if not 0 <= examples <= MAX_EXAMPLES:
        raise InvalidInput(f"examples must be between 0 and {MAX_EXAMPLES}")
    since = to_utc(since) if since is not None else None
    until = to_utc(until) if until is not None else None
    if since is not None and until is not None and since >= until:
        raise InvalidInput("'since' must be before 'until'")
    vector = embedder.embed_one(query_text(query))

    equals: dict[str, str | int] = {
        k: v for k, v in (("services", service), ("hosts", host)) if v is not None
    }
    vfilter = VectorFilter(equals=equals, at_least={"max_level": level.rank} if level else {})
    filtered = bool(vfilter) or since is not None or until is not None
    page = max(limit * 3, 30)
    hits: list[SearchHit] = []
    offset = 0
    while len(hits) < limit and offset < MAX_CANDIDATES:
        found = index.search(
            vector, limit=page, filter=vfilter or None, score_threshold=min_score, offset=offset
        )
        if not found:
            break
        offset += len(found)
        infos = store.get_templates([hit.id for hit in found])
        for hit in found:
            info = infos.get(hit.id)
            if info is None:  # merged away or deleted since it was embedded
                continue
            if not _could_match(info, service, host, level, since, until):
                continue
            events: list[StoredEvent] = []
            if filtered or examples:
                events = store.query(
                    LogQuery(
                        template_id=info.template_id,
                        service=service,
                        host=host,
                        level=level,
                        start_time=since,
                        end_time=until,
                        limit=max(examples, 1),
                    )
                ).events
                if filtered and not events:
                    continue
            hits.append(SearchHit(info, hit.score, events[:examples]))
            if len(hits) == limit:
                break
        if len(found) < page:
            break
    return hits


def _could_match(
    info: TemplateInfo,
    service: str | None,
    host: str | None,
    level: Level | None,
    since: datetime | None,
    until: datetime | None,
) -> bool:
    """Cheap check on the store's current figures before asking for events."""
    if service is not None and service not in info.services:
        return False
    if host is not None and host not in info.hosts:
        return False
    if level is not None and max_level_rank(info.levels) < level.rank:
        return False
    if since is not None and to_utc(info.last_seen) < since:
        return False
    return not (until is not None and to_utc(info.first_seen) >= until)


# ---------------------------------------------------------------------------- grouping


@dataclass(frozen=True, slots=True)
class SimilarTemplate:
    """A template and its similarity to a reference template (1.0 for the reference)."""

    template_id: str
    template: str
    score: float
    count: int = 0
    services: tuple[str, ...] = ()

    def to_api(self) -> dict[str, Any]:
        return {
            "template_id": self.template_id,
            "template": self.template,
            "score": round(self.score, 4),
            "count": self.count,
            "services": list(self.services),
        }


@dataclass(frozen=True, slots=True)
class TemplateGroup:
    """Templates that read as the same event; the first (the most frequent) leads."""

    members: list[SimilarTemplate]

    @property
    def leader(self) -> SimilarTemplate:
        return self.members[0]

    @property
    def count(self) -> int:
        """Events of all members together (as of their last payload refresh)."""
        return sum(m.count for m in self.members)

    def to_api(self) -> dict[str, Any]:
        return {
            "leader": self.leader.template_id,
            "count": self.count,
            "templates": [m.to_api() for m in self.members],
        }


def _similar(record: VectorRecord, score: float) -> SimilarTemplate:
    payload = record.payload
    return SimilarTemplate(
        template_id=record.id,
        template=str(payload.get("template", "")),
        score=score,
        count=int(payload.get("count") or 0),
        services=tuple(payload.get("services") or ()),
    )


def _check_threshold(threshold: float) -> None:
    if not -1.0 <= threshold <= 1.0:
        raise InvalidInput("a similarity threshold must be between -1 and 1")


def similar_templates(
    index: VectorIndex,
    template_id: str,
    *,
    threshold: float = DEFAULT_SIMILARITY,
    limit: int = 20,
    match_level: bool = True,
) -> list[SimilarTemplate]:
    """Other templates whose embedding is within ``threshold`` of this one's, best first.

    With ``match_level`` only templates seen at the same maximum level are listed (as in
    :func:`group_similar`). Raises ``NotFound`` when the template has no vector (unknown,
    or not embedded yet).
    """
    _check_threshold(threshold)
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    found = index.retrieve([template_id], with_vectors=True).get(template_id)
    if found is None or found.vector is None:
        raise NotFound(f"template {template_id} has no vector (unknown, or not embedded yet)")
    level = int(found.payload.get("max_level") or 0)
    vfilter = VectorFilter(equals={"max_level": level}) if match_level else None
    hits = index.search(found.vector, limit=limit + 1, score_threshold=threshold, filter=vfilter)
    out = [_similar(VectorRecord(h.id, h.payload), h.score) for h in hits if h.id != template_id]
    return out[:limit]


def group_similar(
    index: VectorIndex,
    *,
    threshold: float = DEFAULT_SIMILARITY,
    service: str | None = None,
    min_size: int = 2,
    match_level: bool = True,
) -> list[TemplateGroup]:
    """Groups of templates that read as the same event, largest first.

    Leader clustering: templates are taken by descending event count; each one not yet
    grouped leads a group of every ungrouped template within ``threshold`` of it. Members
    are all close to their leader (no chaining A~B~C where A and C are unrelated), and the
    result does not depend on the index's storage order. Only groups with at least
    ``min_size`` members are returned.
    """
    _check_threshold(threshold)
    vfilter = VectorFilter(equals={"services": service}) if service else None
    records = [r for r in index.scroll(filter=vfilter, with_vectors=True) if r.vector is not None]
    if not records:
        return []
    records.sort(key=lambda r: (-int(r.payload.get("count") or 0), r.id))
    matrix = np.stack([r.vector for r in records if r.vector is not None])
    levels = [int(r.payload.get("max_level") or 0) for r in records] if match_level else None
    groups = []
    for rows in leader_groups(matrix, threshold, levels):
        if len(rows) >= min_size:
            groups.append(TemplateGroup([_similar(records[i], score) for i, score in rows]))
    groups.sort(key=lambda g: (-len(g.members), -g.count, g.leader.template_id))
    return groups


def leader_groups(
    vectors: NDArray[np.float32],
    threshold: float,
    labels: Sequence[int] | None = None,
    *,
    block: int = 1_024,
) -> list[list[tuple[int, float]]]:
    """Leader clustering of row-normalised ``vectors`` (rows in priority order).

    Returns groups as ``(row, similarity to the leader)`` lists, leader first. With
    ``labels`` only rows with the same label can share a group. Similarities are computed
    in blocks of rows (``block`` x n at a time) so 10k templates need ~40 MB, not 400 MB.
    """
    n = len(vectors)
    label_arr = np.asarray(labels) if labels is not None else None
    neighbours: list[NDArray[np.intp]] = []
    scores: list[NDArray[np.float32]] = []
    for start in range(0, n, block):
        sims = vectors[start : start + block] @ vectors.T
        for offset, row in enumerate(sims):
            i = start + offset
            close = np.flatnonzero(row >= threshold)
            if label_arr is not None:
                close = close[label_arr[close] == label_arr[i]]
            close = close[close > i]  # a leader only takes rows after it
            neighbours.append(close)
            scores.append(row[close])
    grouped = np.zeros(n, dtype=bool)
    groups: list[list[tuple[int, float]]] = []
    for i in range(n):
        if grouped[i]:
            continue
        grouped[i] = True
        members: list[tuple[int, float]] = []
        for j, score in zip(neighbours[i].tolist(), scores[i].tolist(), strict=True):
            if not grouped[j]:
                grouped[j] = True
                members.append((j, float(score)))
        members.sort(key=lambda m: -m[1])
        groups.append([(i, 1.0), *members])
    return groups


def _iso(value: datetime) -> str:
    return to_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
