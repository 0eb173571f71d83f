"""``devmesh graph``: the knowledge graph's embedded server. Thin: parse, call core, print."""

from __future__ import annotations

import typer

from devmesh.cli.common import console, get_settings
from devmesh_core.errors import DevMeshError
from devmesh_core.graph import open_graph
from devmesh_core.graph.server import EmbeddedServer, ServerConfig

app = typer.Typer(help="The knowledge graph (FalkorDB).", no_args_is_help=True)


def _server(ctx: typer.Context) -> EmbeddedServer:
    return EmbeddedServer(ServerConfig(directory=get_settings(ctx).data_dir / "graph"))


@app.command()
def status(ctx: typer.Context) -> None:
    """Whether the embedded FalkorDB server runs, and what the graph holds."""
    settings = get_settings(ctx)
    if settings.graph_url is None:
        info = _server(ctx).running()
        if info is None:
            console.print("embedded graph server: not running (it starts on first use)")
            return
        console.print(f"embedded graph server: pid {info.pid}, port {info.port}")
    try:
        with_graph = open_graph(settings.graph_url, settings.data_dir, ensure_schema=False)
    except DevMeshError as exc:
        console.print(f"[red]graph unavailable:[/red] {exc}")
        raise typer.Exit(1) from exc
    try:
        stats = with_graph.stats()
    finally:
        with_graph.close()
    console.print(f"nodes {stats.total_nodes}, edges {stats.total_edges}")


@app.command()
def stop(ctx: typer.Context) -> None:
    """Stop the embedded server cleanly (its data is saved)."""
    stopped = _server(ctx).stop()
    console.print("stopped" if stopped else "not running")
