"""`devmesh import` leaves the data askable: templates mined and the graph projected (with
runbooks linked) before it returns — here with the real embedded FalkorDB."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from devmesh.cli.main import app
from devmesh_core.graph import open_graph
from devmesh_core.graph.server import EmbeddedServer, ServerConfig

SAMPLE = Path(__file__).resolve().parents[2] / "devmesh_core" / "data" / "sample_logs.jsonl"


def test_import_projects_the_graph_before_returning(tmp_path: Path) -> None:
    data = tmp_path / "data"
    lines = SAMPLE.read_text().splitlines()[:150]
    source = tmp_path / "logs.jsonl"
    source.write_text("\n".join(lines) + "\n")
    env = {
        "DEVMESH_DATA_DIR": str(data),
        "DEVMESH_GRAPH_ENABLED": "true",
        "DEVMESH_VECTORS_ENABLED": "false",
    }
    server = EmbeddedServer(ServerConfig(directory=data / "graph"))
    try:
        result = CliRunner().invoke(app, ["import", str(source)], env=env)
        assert result.exit_code == 0, result.output
        assert "stored 150" in result.output
        graph = open_graph(None, data, ensure_schema=False)  # the server import left running
        try:
            stats = graph.stats()
        finally:
            graph.close()
        assert stats.edges.get("EMITS", 0) > 0 and stats.edges.get("RUNS_ON", 0) > 0
        assert stats.nodes.get("Runbook", 0) >= 10
    finally:
        server.stop()
    assert server.running() is None
