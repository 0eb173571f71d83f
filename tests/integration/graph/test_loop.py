"""The server's projection loop against a real SQLite store and the real embedded FalkorDB."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devmesh_core import services
from devmesh_core.graph.falkordb import FalkorDBGraphStore
from devmesh_core.graph.loop import ProjectionLoop
from devmesh_core.store import LogStore, open_store
from devmesh_core.templates import SignatureMiner
from tests.conftest import free_port

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    s = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    yield s
    s.close()


def _batch(start: int, n: int, service: str) -> list[dict[str, object]]:
    return [
        {
            "timestamp": (T0 + timedelta(seconds=start + i)).isoformat(),
            "service": service,
            "host": "h1",
            "level": "error",
            "message": f"upstream timed out after {i} ms",
        }
        for i in range(n)
    ]


def _wait(predicate: object, timeout: float = 20.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_loop_projects_new_events_without_waiting_for_the_interval(
    store: LogStore, graph: FalkorDBGraphStore
) -> None:
    miner = SignatureMiner()
    services.ingest(store, _batch(0, 5, "nginx"), miner=miner)
    loop = ProjectionLoop(store, lambda: graph, interval=3600)
    loop.start()
    try:
        _wait(lambda: loop.stats.passes >= 1)
        assert graph.stats().nodes.get("Service") == 1
        services.ingest(store, _batch(10, 5, "api"), miner=miner)
        loop.notify()  # a pass now, not in an hour
        _wait(lambda: graph.stats().nodes.get("Service") == 2)
    finally:
        loop.stop()
    assert loop.stats.failures == 0


def test_a_failing_pass_is_counted_and_the_loop_keeps_going(
    store: LogStore, tmp_path: Path
) -> None:
    """A graph server that is not there (nothing listens on the port): the real adapter
    reports it unavailable on every pass, and the loop logs, counts and carries on."""
    services.ingest(store, _batch(0, 3, "nginx"), miner=SignatureMiner())
    url = f"redis://127.0.0.1:{free_port()}/g"
    loop = ProjectionLoop(store, lambda: FalkorDBGraphStore.from_url(url, tmp_path), interval=0.05)
    loop.start()
    try:
        _wait(lambda: loop.stats.failures >= 2)
    finally:
        loop.stop()
    assert "cannot connect" in (loop.stats.last_error or "")


def test_no_graph_means_no_pass(store: LogStore) -> None:
    loop = ProjectionLoop(store, lambda: None, interval=60)
    assert loop.run_once() is None
    assert loop.stats.passes == 0
