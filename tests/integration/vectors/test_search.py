"""Semantic search and grouping with the real model over templates mined from real ingest."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from devmesh_core.errors import InvalidInput, NotFound
from devmesh_core.models import Level
from devmesh_core.store import LogStore
from devmesh_core.templates.miner import SignatureMiner
from devmesh_core.vectors import (
    EmbeddingWorker,
    SentenceTransformerEmbedder,
    group_similar,
    search_templates,
    similar_templates,
)
from devmesh_core.vectors.qdrant_local import QdrantLocalIndex
from tests.integration.vectors.conftest import NOW, incident_logs, ingest, template_id_of


@pytest.fixture
def loaded(store: LogStore, miner: SignatureMiner, worker: EmbeddingWorker) -> Iterator[LogStore]:
    ingest(store, miner, incident_logs())
    assert worker.run_once() == 7
    yield store


def _search(
    store: LogStore, index: QdrantLocalIndex, embedder: SentenceTransformerEmbedder, q: str, **kw
) -> list[str]:
    return [h.template.template for h in search_templates(store, index, embedder, q, **kw)]


def test_search_finds_templates_by_meaning(
    loaded: LogStore, index: QdrantLocalIndex, embedder: SentenceTransformerEmbedder
) -> None:
    assert "No space left on device" in _search(loaded, index, embedder, "disk is full")[0]
    assert "Out of memory" in _search(loaded, index, embedder, "memory exhausted")[0]
    assert "Accepted publickey" in _search(loaded, index, embedder, "ssh login")[0]
    db = _search(loaded, index, embedder, "database unreachable", limit=2)
    assert {t.split()[0] for t in db} == {"connection", "failed"}


def test_hits_carry_template_info_and_recent_examples(
    loaded: LogStore, index: QdrantLocalIndex, embedder: SentenceTransformerEmbedder
) -> None:
    hit = search_templates(loaded, index, embedder, "disk is full", limit=1, examples=2)[0]
    assert hit.template.services == ("postgres",) and hit.template.count == 6
    assert 0 < hit.score <= 1
    assert len(hit.examples) == 2
    assert all("No space left on device" in e.message for e in hit.examples)
    assert hit.examples[0].timestamp >= hit.examples[1].timestamp  # newest first
    api = hit.to_api()
    assert api["template_id"] == hit.template.template_id
    assert api["examples"][0]["template_id"] == hit.template.template_id
    none = search_templates(loaded, index, embedder, "disk is full", limit=1, examples=0)
    assert none[0].examples == []


def test_filters_narrow_by_service_host_level_and_time(
    loaded: LogStore, index: QdrantLocalIndex, embedder: SentenceTransformerEmbedder
) -> None:
    q = "database connection problem"
    worker_only = _search(loaded, index, embedder, q, service="worker")
    assert worker_only == ["failed to connect to <*>:<*>: ECONNREFUSED"]
    on_web0 = search_templates(loaded, index, embedder, q, host="web0", limit=10)
    assert {h.template.template for h in on_web0} == {
        "connection refused to <*>:<*>",
        "GET <*> <*> <*> ms",
    }
    assert all(e.host == "web0" for h in on_web0 for e in h.examples)
    critical = _search(loaded, index, embedder, q, level=Level.CRITICAL)
    assert critical == ["Out of memory: Killed process <*> (java)"]
    # the OOM kills happened three days ago: a one-day window leaves them out
    recent = _search(loaded, index, embedder, "memory", since=NOW - timedelta(days=1), limit=10)
    assert len(recent) == 6 and not any("Out of memory" in t for t in recent)
    old = _search(loaded, index, embedder, "memory", until=NOW - timedelta(days=1), limit=10)
    assert old == ["Out of memory: Killed process <*> (java)"]
    assert _search(loaded, index, embedder, q, service="nope") == []


def test_bad_queries_are_invalid_input(
    loaded: LogStore, index: QdrantLocalIndex, embedder: SentenceTransformerEmbedder
) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        search_templates(loaded, index, embedder, "   ")
    with pytest.raises(InvalidInput, match="limit"):
        search_templates(loaded, index, embedder, "x", limit=0)
    with pytest.raises(InvalidInput, match="before"):
        search_templates(loaded, index, embedder, "x", since=NOW, until=NOW)


def test_paraphrased_failures_group_and_unrelated_ones_do_not(
    loaded: LogStore, index: QdrantLocalIndex
) -> None:
    refused = template_id_of(loaded, "connection refused to")
    econn = template_id_of(loaded, "ECONNREFUSED")
    groups = group_similar(index)
    assert len(groups) == 1
    assert {m.template_id for m in groups[0].members} == {refused, econn}
    assert groups[0].members[0].score == 1.0 and groups[0].members[1].score >= 0.7

    similar = similar_templates(index, refused)
    assert [s.template_id for s in similar] == [econn]
    assert similar_templates(index, econn)[0].template_id == refused
    assert similar_templates(index, template_id_of(loaded, "No space left")) == []
    # ids stay separate: grouping merges nothing in the store
    assert len(loaded.get_templates([refused, econn])) == 2

    assert group_similar(index, service="api") == []  # the pair spans two services
    loose = group_similar(index, threshold=0.0, min_size=1, match_level=False)
    assert sum(len(g.members) for g in loose) == 7
    with pytest.raises(NotFound):
        similar_templates(index, "Tnope")
    with pytest.raises(InvalidInput):
        group_similar(index, threshold=2)


def test_llama_index_reads_the_collection(
    loaded: LogStore, index: QdrantLocalIndex, embedder: SentenceTransformerEmbedder
) -> None:
    """The Reasoning layer's retriever (llama-index QdrantVectorStore) reads our points."""
    from llama_index.core.vector_stores.types import VectorStoreQuery
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    store = QdrantVectorStore(client=index.client, collection_name=index.collection)
    query = VectorStoreQuery(
        query_embedding=embedder.embed_one("disk is full").tolist(), similarity_top_k=2
    )
    result = store.query(query)
    assert result.nodes is not None and result.similarities is not None
    top = result.nodes[0]
    assert "No space left on device" in top.get_content()
    assert top.metadata["template_id"] == template_id_of(loaded, "No space left")
    assert top.metadata["services"] == ["postgres"]
    assert top.metadata["doc_id"] == top.metadata["template_id"]  # delete(template_id) works
    assert result.similarities[0] > result.similarities[1]
