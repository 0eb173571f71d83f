"""Runbook indexing with the real parts: the packaged embedding model for similarity, a real
SQLite store with mined templates, and the real embedded FalkorDB for COVERS links."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devmesh_core import services
from devmesh_core.config import Settings
from devmesh_core.graph.falkordb import FalkorDBGraphStore
from devmesh_core.reason.runbook_index import (
    RunbookIndex,
    covers_template,
    index_for,
    link_runbooks,
    similar_runbooks,
)
from devmesh_core.reason.runbooks import Runbook, bundled_runbooks_dir, load_runbooks
from devmesh_core.runtime import Core
from devmesh_core.store import LogStore, open_store
from devmesh_core.templates.miner import SignatureMiner
from devmesh_core.vectors import SentenceTransformerEmbedder
from tests.integration.graph.conftest import graph, graph_server  # noqa: F401 - fixtures

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    model = SentenceTransformerEmbedder()
    model.load()
    return model


@pytest.fixture(scope="module")
def runbooks() -> list[Runbook]:
    return load_runbooks(bundled_runbooks_dir())


@pytest.fixture(scope="module")
def index(runbooks: list[Runbook], embedder: SentenceTransformerEmbedder) -> RunbookIndex:
    return RunbookIndex(runbooks, embedder)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the disk filled up on the nas", "disk-full"),
        ("kernel killed jellyfin because memory ran out", "oom-kill"),
        ("postgres refuses new connections from the app", "db-connection-exhaustion"),
        ("names are not resolving since the router rebooted", "dns-failure"),
        ("the raspberry pi clock is five minutes behind", "time-drift"),
        ("my container keeps restarting", "container-restart-loop"),
        ("ls on the nfs share hangs forever", "nfs-stale-mount"),
        ("the new release of the api broke after deploying", "deployment-rollback"),
        ("https says the ssl cert expired", "certificate-expiry"),
        ("nextcloud shows 502 bad gateway", "upstream-unreachable"),
        ("SD card errors and the root filesystem is read only", "filesystem-errors"),
        # A paraphrased log line no trigger matches.
        ("PANIC: could not write WAL segment, device is out of space", "disk-full"),
    ],
)
def test_similar_runbooks_finds_the_right_one(
    index: RunbookIndex, text: str, expected: str
) -> None:
    found = index.similar_runbooks(text, 3)
    assert found, text
    assert expected in [r.id for r, _ in found[:2]], [(r.id, round(s, 2)) for r, s in found]
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 + 1e-6 for s in scores)


def test_exact_example_scores_near_one_and_unrelated_is_filtered(index: RunbookIndex) -> None:
    (best, score), *_ = index.similar_runbooks("FATAL:  sorry, too many clients already", 1)
    assert best.id == "db-connection-exhaustion" and score > 0.95
    assert index.similar_runbooks("bought groceries and baked a cake", 3, min_score=0.5) == []
    assert index.similar_runbooks("", 3) == []
    assert index.similar_runbooks("disk full", 0) == []


def test_search_is_fast_once_built(index: RunbookIndex) -> None:
    index.similar_runbooks("warm up", 1)
    started = time.monotonic()
    for _ in range(5):
        index.similar_runbooks("postgres is out of connections", 3)
    assert (time.monotonic() - started) / 5 < 0.5  # one short embedding + a 100x384 product


def test_core_helpers(tmp_path: Path, runbooks: list[Runbook], embedder: Any) -> None:
    with open_store(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        core = Core(Settings(data_dir=tmp_path), store, embedder=embedder, runbooks=runbooks)
        index = index_for(core)
        assert index is not None and index_for(core) is index  # built once per Core
        assert similar_runbooks(core, "out of memory killer", 1)[0][0].id == "oom-kill"
        no_vectors = Core(Settings(data_dir=tmp_path), store, runbooks=runbooks)
        assert index_for(no_vectors) is None
        assert similar_runbooks(no_vectors, "out of memory", 1) == []


def test_covers_template_on_masked_templates(runbooks: list[Runbook]) -> None:
    by_id = {r.id: r for r in runbooks}
    assert covers_template(
        by_id["oom-kill"], "Out of memory: Killed process <*> (<*>) total-vm:<*>"
    )
    assert covers_template(
        by_id["service-crash-loop"], "<*>: Scheduled restart job, restart counter is at <*>."
    )
    assert covers_template(
        by_id["disk-full"], 'could not write to file "<*>": No space left on device'
    )
    assert not covers_template(by_id["disk-full"], "GET <*> 200 <*> ms")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    with open_store(f"sqlite:///{tmp_path / 'devmesh.db'}") as s:
        yield s


def _event(message: str, service: str, n: int) -> dict[str, Any]:
    return {
        "timestamp": (NOW - timedelta(minutes=5) + timedelta(microseconds=n)).isoformat(),
        "service": service,
        "host": "db1",
        "level": "error",
        "message": message,
    }


def test_link_runbooks_in_the_graph(
    graph: FalkorDBGraphStore,  # noqa: F811 - fixture
    store: LogStore,
    tmp_path: Path,
    runbooks: list[Runbook],
) -> None:
    items = []
    for i in range(4):
        items.append(
            _event(
                f'could not write to file "pg_wal/xlogtemp.{100 + i}": No space left on device',
                "postgres",
                i,
            )
        )
        items.append(_event(f"FATAL:  sorry, too many clients already {i}", "postgres", 10 + i))
        items.append(_event(f"GET /api/items/{i} 200 {12 + i} ms", "nginx", 20 + i))
    with SignatureMiner(tmp_path / "miner") as miner:
        report = services.ingest(store, items, miner=miner)
    assert report.accepted == len(items)
    templates = {t.template: t.template_id for t in store.list_templates(limit=100)}
    disk = next(tid for text, tid in templates.items() if "No space left" in text)
    first = link_runbooks(graph, runbooks, store)
    assert first.nodes_created >= len(runbooks)
    again = link_runbooks(graph, runbooks, store)
    assert again.nodes_created == 0 and again.relationships_created == 0  # idempotent

    around = graph.neighbourhood("postgres")
    ids = {r.id for r in around.runbooks}
    assert "db-connection-exhaustion" in ids  # via the service it names
    nginx = {r.id: r.via for r in graph.neighbourhood("nginx").runbooks}
    assert nginx.get("upstream-unreachable") == "service"
    assert "disk-full" not in nginx  # nginx only logged 200s
    rows = graph._query(
        "MATCH (r:Runbook {id: 'disk-full'})-[:COVERS]->(t:Template) RETURN t.signature", {}
    ).result_set
    assert [row[0] for row in rows] == [disk]
