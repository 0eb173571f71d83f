"""Fixtures for the vector tests: the real packaged model (loaded once per session), real
Qdrant local mode in temp dirs, a real SQLite store and a real template miner.

Ingest goes through ``devmesh_core.services.ingest`` with a ``SignatureMiner``, as the API
does, so templates and their ids come from the real miner.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devmesh_core import services
from devmesh_core.store import LogStore, open_store
from devmesh_core.templates.miner import SignatureMiner
from devmesh_core.vectors import EmbeddingWorker, SentenceTransformerEmbedder
from devmesh_core.vectors.qdrant_local import QdrantLocalIndex

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The packaged all-MiniLM-L6-v2, loaded once (importing torch takes seconds)."""
    model = SentenceTransformerEmbedder()
    model.load()
    return model


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    with open_store(f"sqlite:///{tmp_path / 'devmesh.db'}") as s:
        yield s


@pytest.fixture
def miner(tmp_path: Path) -> Iterator[SignatureMiner]:
    with SignatureMiner(tmp_path / "miner") as m:
        yield m


@pytest.fixture
def index(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> Iterator[QdrantLocalIndex]:
    with QdrantLocalIndex(tmp_path / "vectors", dim=embedder.dim) as idx:
        yield idx


@pytest.fixture
def worker(
    store: LogStore, index: QdrantLocalIndex, embedder: SentenceTransformerEmbedder
) -> EmbeddingWorker:
    return EmbeddingWorker(store, index, embedder, batch_size=8)


def event(
    message: str,
    *,
    service: str,
    host: str = "node1",
    level: str = "info",
    ago: timedelta = timedelta(minutes=5),
    n: int = 0,
) -> dict[str, Any]:
    return {
        "timestamp": (NOW - ago + timedelta(microseconds=n)).isoformat(),
        "service": service,
        "host": host,
        "level": level,
        "message": message,
    }


def incident_logs() -> list[dict[str, Any]]:
    """A small homelab day: a disk-full incident, a database outage seen two ways, noise."""
    out: list[dict[str, Any]] = []
    for i in range(6):
        out.append(
            event(
                f'could not write to file "base/16384/{2600 + i * 7}": No space left on device',
                service="postgres",
                host="db1",
                level="error",
                n=i,
            )
        )
        out.append(
            event(
                f"connection refused to db{i % 2}.lan:{5432 + i}",
                service="api",
                host=f"web{i % 2}",
                level="error",
                n=i,
            )
        )
        out.append(
            event(
                f"failed to connect to db{i % 2}.lan:{5432 + i}: ECONNREFUSED",
                service="worker",
                host="web1",
                level="error",
                n=i,
            )
        )
        out.append(
            event(
                f"GET /api/items/{100 + i * 13} 200 {12 + i} ms",
                service="nginx",
                host="web0",
                n=i,
            )
        )
        out.append(
            event(
                f"Accepted publickey for user{i} from 10.0.0.{20 + i} port {50000 + i} ssh2",
                service="sshd",
                host="bastion",
                n=i,
            )
        )
        out.append(
            event(
                f"Out of memory: Killed process {3000 + i} (java)",
                service="kernel",
                host="app1",
                level="critical",
                ago=timedelta(days=3),
                n=i,
            )
        )
        out.append(
            event(
                f"backup of volume vol{i} finished in {300 + i * 11} seconds",
                service="backup",
                host="nas",
                level="warning",
                n=i,
            )
        )
    return out


def ingest(store: LogStore, miner: SignatureMiner, items: list[dict[str, Any]]) -> None:
    report = services.ingest(store, items, default_source="test", miner=miner)
    assert not report.rejected, report.rejected


def template_id_of(store: LogStore, text: str) -> str:
    """The id of the one template whose text contains ``text``."""
    found = [t for t in store.list_templates(limit=1000) if text in t.template]
    assert len(found) == 1, [t.template for t in store.list_templates(limit=1000)]
    return found[0].template_id
