"""The embedding worker with the real model, real Qdrant local mode and a real SQLite store."""

from __future__ import annotations

import time
from datetime import timedelta

from devmesh_core.store import LogStore
from devmesh_core.templates.miner import SignatureMiner
from devmesh_core.vectors import EmbeddingWorker, SentenceTransformerEmbedder, VectorPoint
from devmesh_core.vectors.qdrant_local import QdrantLocalIndex
from tests.integration.vectors.conftest import event, incident_logs, ingest, template_id_of


def test_each_template_is_embedded_once(
    store: LogStore,
    miner: SignatureMiner,
    index: QdrantLocalIndex,
    embedder: SentenceTransformerEmbedder,
    worker: EmbeddingWorker,
) -> None:
    ingest(store, miner, incident_logs())
    templates = store.template_count()
    assert templates == 7
    before = embedder.texts_encoded

    assert worker.run_once() == templates
    assert embedder.texts_encoded - before == templates  # one text per template, none per line
    assert index.count() == templates
    assert store.templates_to_embed() == []

    # running again, or ingesting the same lines again, embeds nothing
    assert worker.run_once() == 0
    ingest(store, miner, incident_logs())
    assert worker.run_once() == 0
    # new lines of known templates embed nothing; a new template embeds one
    ingest(
        store,
        miner,
        [
            event("connection refused to db9.lan:6000", service="api", level="error", n=99),
            event("certificate for example.org expires in 3 days", service="certbot", n=1),
        ],
    )
    assert worker.run_once() == 1
    assert embedder.texts_encoded - before == templates + 1
    assert worker.embedded == templates + 1

    tid = template_id_of(store, "No space left on device")
    payload = index.retrieve([tid])[tid].payload
    assert payload["template_id"] == tid
    assert payload["text"] == payload["template"]
    assert payload["services"] == ["postgres"] and payload["hosts"] == ["db1"]
    assert payload["levels"] == {"ERROR": 6} and payload["max_level"] == 40
    assert payload["count"] == 6  # the re-sent lines were duplicates


def test_refresh_repairs_drift(
    store: LogStore,
    miner: SignatureMiner,
    index: QdrantLocalIndex,
    embedder: SentenceTransformerEmbedder,
    worker: EmbeddingWorker,
) -> None:
    ingest(store, miner, incident_logs())
    worker.run_once()
    disk = template_id_of(store, "No space left on device")
    oom = template_id_of(store, "Out of memory")

    # a known template shows up on a new host: the payload (used by filters) follows
    ingest(
        store,
        miner,
        [
            event(
                'could not write to file "base/1/2": No space left on device',
                service="postgres",
                host="db2",
                level="critical",
                n=500,
            )
        ],
    )
    # the index lost a point, and holds one for a template the store no longer has
    index.delete([oom])
    gone = embedder.embed_one("gone")
    index.upsert([VectorPoint("Tgone", gone, {"template_id": "Tgone", "template": "gone"})])
    index.upsert([VectorPoint("not-a-template", gone, {"note": "someone else's point"})])
    before = embedder.texts_encoded

    report = worker.refresh()
    assert (report.deleted, report.reembedded, report.updated) == (1, 1, 1)
    assert embedder.texts_encoded - before == 1
    assert index.count() == store.template_count() + 1
    assert "not-a-template" in index.retrieve(["not-a-template", "Tgone"])
    assert "Tgone" not in index.retrieve(["Tgone"])
    payload = index.retrieve([disk])[disk].payload
    assert payload["hosts"] == ["db1", "db2"] and payload["max_level"] == 50
    assert worker.refresh() == type(report)()  # nothing left to do


def test_background_thread_embeds_when_notified(
    store: LogStore,
    miner: SignatureMiner,
    index: QdrantLocalIndex,
    embedder: SentenceTransformerEmbedder,
) -> None:
    worker = EmbeddingWorker(store, index, embedder, interval=3600, refresh_interval=3600)
    worker.start()
    try:
        assert worker.running
        ingest(store, miner, incident_logs())
        worker.notify()
        deadline = time.monotonic() + 60
        while index.count() < 7 and time.monotonic() < deadline:
            # queries embed while the worker embeds: one model, used from two threads
            assert embedder.embed_one("disk is full").shape == (384,)
        assert index.count() == 7
        ingest(
            store,
            miner,
            [event("disk quota exceeded for user 12", service="nfs", ago=timedelta(0))],
        )
        worker.notify()
        while index.count() < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert index.count() == 8
        assert worker.last_error is None
    finally:
        worker.stop()
    assert not worker.running
