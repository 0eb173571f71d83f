"""Fixtures for the graph tests: one real embedded FalkorDB server for the whole session.

Each test gets its own graph key on that server (``t_<random>``), dropped afterwards, so
tests stay isolated without paying a server start each. Server lifecycle tests start their
own servers in their own temporary directories.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devmesh_core.graph.falkordb import FalkorDBGraphStore
from devmesh_core.graph.server import EmbeddedServer, ServerConfig


@pytest.fixture(scope="session")
def graph_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The session's embedded server (owned: stopped at the end of the session)."""
    directory = tmp_path_factory.mktemp("graph-session") / "graph"
    server = EmbeddedServer(ServerConfig(directory=directory), owned=True)
    server.ensure_running()
    yield server
    server.close()


@pytest.fixture
def graph(graph_server: EmbeddedServer) -> Iterator[FalkorDBGraphStore]:
    """A store on a fresh graph key of the session server, with its schema."""
    store = FalkorDBGraphStore.embedded(graph_server, graph=f"t_{uuid.uuid4().hex[:12]}")
    store.ensure_schema()
    yield store
    store._db.execute_command("GRAPH.DELETE", store.graph_name)
    store.close()


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    return tmp_path / "graph"


@pytest.fixture
def make_server(server_dir: Path) -> Iterator[object]:
    """Factory of managers on ``server_dir``; every server they start is stopped afterwards."""
    made: list[EmbeddedServer] = []

    def make(**overrides: object) -> EmbeddedServer:
        owned = bool(overrides.pop("owned", False))
        config = ServerConfig(directory=server_dir, startup_timeout=15.0, **overrides)  # type: ignore[arg-type]
        server = EmbeddedServer(config, owned=owned)
        made.append(server)
        return server

    yield make
    if made:
        made[0].stop(timeout=10)
