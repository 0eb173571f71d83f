"""Runbook indexing: runbooks linked in the knowledge graph and findable by similarity.

Two ways lead from a failure to its runbook. Exact: a trigger regex fires on a log line
(the detectors do that). Fuzzy: the question or the incident's top templates *read like*
the runbook (a paraphrased error, a message no trigger names, a question in plain words);
that is what :meth:`RunbookIndex.similar_runbooks` is for.

A homelab has tens of runbooks, so the similarity index is a small in-memory matrix, not a
vector-database collection: no second Qdrant collection to create, migrate and keep in
step with the files, and a search is one matrix-vector product. Each runbook is embedded
as several short texts (title, covered templates, trigger examples) with the same embedder
as the log templates; a runbook scores as its best-matching text, so a query that reads
like one of its real messages finds it even when the title uses other words.

In the graph each runbook becomes ``(:Runbook)`` with ``COVERS`` edges to the services it
names and to the stored templates its triggers or template fragments match, which is how
``GraphStore.neighbourhood`` returns the runbooks around a service.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from devmesh_core.graph.base import Covers, GraphRecord, RunbookNode, ServiceNode, UpsertResult
from devmesh_core.log import get_logger
from devmesh_core.reason.runbooks import Runbook
from devmesh_core.vectors.embedder import embedding_text

if TYPE_CHECKING:
    from devmesh_core.graph.base import GraphStore
    from devmesh_core.runtime import Core
    from devmesh_core.store.base import LogStore
    from devmesh_core.vectors.embedder import Embedder

_log = get_logger(__name__)

MAX_TEXTS_PER_RUNBOOK = 8
"""Texts embedded per runbook (title + templates + trigger examples); bounds start-up."""

_WILDCARD = re.compile(r"<\*>")
_MAX_TEMPLATES = 100_000


def runbook_texts(runbook: Runbook) -> list[str]:
    """The short texts a runbook is found by: its title (with its tags and the first
    paragraph of its body), the templates it covers and its triggers' example messages."""
    intro = next(
        (
            p.strip()
            for p in runbook.body.split("\n\n")
            if p.strip() and not p.lstrip().startswith("#")
        ),
        "",
    )
    head = runbook.title
    if runbook.tags:
        head += " (" + ", ".join(runbook.tags) + ")"
    texts = [f"{head}. {intro}"[:400]]
    texts.extend(runbook.templates)
    for trigger in runbook.triggers:
        texts.extend(trigger.examples)
    unique = list(dict.fromkeys(t.strip() for t in texts if t.strip()))
    return unique[:MAX_TEXTS_PER_RUNBOOK]


class RunbookIndex:
    """Runbooks searchable by meaning: an in-memory cosine index over their texts.

    Built lazily on the first search (the embedder's model loads then) and thread-safe.
    ``min_score`` hides runbooks that are only vaguely related (all-MiniLM scores unrelated
    short texts around 0.0-0.35, paraphrases above 0.5).
    """

    def __init__(
        self, runbooks: Sequence[Runbook], embedder: Embedder, *, min_score: float = 0.4
    ) -> None:
        self.runbooks = list(runbooks)
        self.embedder = embedder
        self.min_score = min_score
        self._matrix: NDArray[np.float32] | None = None
        self._owner: NDArray[np.intp] | None = None
        self._lock = threading.Lock()

    def _build(self) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        with self._lock:
            if self._matrix is None or self._owner is None:
                texts: list[str] = []
                owner: list[int] = []
                for index, runbook in enumerate(self.runbooks):
                    for text in runbook_texts(runbook):
                        texts.append(embedding_text(text))
                        owner.append(index)
                self._matrix = self.embedder.embed(texts)
                self._owner = np.asarray(owner, dtype=np.intp)
                _log.info("runbooks_indexed", runbooks=len(self.runbooks), texts=len(texts))
            return self._matrix, self._owner

    def similar_runbooks(
        self, text: str, k: int = 3, *, min_score: float | None = None
    ) -> list[tuple[Runbook, float]]:
        """The ``k`` runbooks closest in meaning to ``text`` (a question, a log line, a
        template), best first, each with its cosine similarity; below ``min_score`` none."""
        if not self.runbooks or not text.strip() or k <= 0:
            return []
        matrix, owner = self._build()
        if matrix.shape[0] == 0:
            return []
        query = self.embedder.embed_one(embedding_text(text))
        scores = matrix @ query
        best = np.full(len(self.runbooks), -1.0, dtype=np.float32)
        np.maximum.at(best, owner, scores)
        floor = self.min_score if min_score is None else min_score
        order = np.argsort(-best, kind="stable")[:k]
        return [(self.runbooks[i], float(best[i])) for i in order if best[i] >= floor]

    def get(self, runbook_id: str) -> Runbook | None:
        """The runbook with this id, if indexed."""
        return next((r for r in self.runbooks if r.id == runbook_id), None)


_indexes: dict[int, RunbookIndex] = {}
_indexes_lock = threading.Lock()


def index_for(core: Core) -> RunbookIndex | None:
    """The process's runbook index over ``core.runbooks`` (built once per ``Core``);
    ``None`` without an embedder (semantic search off): callers then rely on triggers."""
    if core.embedder is None or not core.runbooks:
        return None
    key = id(core)
    with _indexes_lock:
        index = _indexes.get(key)
        if index is None or index.runbooks != core.runbooks or index.embedder is not core.embedder:
            index = RunbookIndex(core.runbooks, core.embedder)
            if key not in _indexes:
                weakref.finalize(core, _indexes.pop, key, None)
            _indexes[key] = index
        return index


def similar_runbooks(core: Core, text: str, k: int = 3) -> list[tuple[Runbook, float]]:
    """:meth:`RunbookIndex.similar_runbooks` over the core's runbooks (empty without an
    embedder)."""
    index = index_for(core)
    return index.similar_runbooks(text, k) if index is not None else []


def covers_template(runbook: Runbook, template: str) -> bool:
    """Whether a mined template (``<*>`` for variables) is one of the runbook's: a template
    fragment occurs in it, or a trigger fires on it with the variables filled in."""
    lowered = template.lower()
    if any(fragment.lower() in lowered for fragment in runbook.templates if fragment):
        return True
    candidates = (template, _WILDCARD.sub("9", template), _WILDCARD.sub("x", template))
    return any(t.regex.search(c) for t in runbook.triggers for c in candidates)


def graph_records(
    runbooks: Sequence[Runbook], templates: Sequence[tuple[str, str]] = ()
) -> list[GraphRecord]:
    """Graph records for runbooks: a node each, ``COVERS`` to their services and to the
    ``(template_id, text)`` pairs they cover."""
    records: list[GraphRecord] = []
    for runbook in runbooks:
        records.append(
            RunbookNode(
                id=runbook.id,
                title=runbook.title,
                path=str(runbook.path) if runbook.path is not None else None,
                props={"risk": runbook.risk, "tags": list(runbook.tags)},
            )
        )
        for service in runbook.services:
            records.append(ServiceNode(name=service))
            records.append(Covers(runbook.id, "Service", service))
        for template_id, text in templates:
            if covers_template(runbook, text):
                records.append(Covers(runbook.id, "Template", template_id))
    return records


def link_runbooks(
    graph: GraphStore, runbooks: Sequence[Runbook], store: LogStore | None = None
) -> UpsertResult:
    """Upsert the runbooks into the graph, linked to their services and to the store's
    templates they cover. Idempotent (MERGE), so it runs at every start and after
    ``devmesh runbooks`` changes; edges of a runbook that stopped covering something stay
    until a graph rebuild."""
    templates: list[tuple[str, str]] = []
    if store is not None:
        templates = [
            (t.template_id, t.template) for t in store.list_templates(limit=_MAX_TEMPLATES)
        ]
    records = graph_records(runbooks, templates)
    result = graph.upsert(records)
    _log.info(
        "runbooks_linked",
        runbooks=len(runbooks),
        template_links=sum(1 for r in records if isinstance(r, Covers) and r.kind == "Template"),
    )
    return result
