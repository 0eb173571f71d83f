"""``devmesh graph``: the knowledge graph's embedded server, projection and views.

Thin: parse, call core, print.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.tree import Tree

from devmesh.cli.common import console, err_console, get_settings, store_for
from devmesh_core.config import Settings
from devmesh_core.errors import DevMeshError
from devmesh_core.graph import DeploymentInfo, GraphStore, Neighbourhood, open_graph
from devmesh_core.graph.server import EmbeddedServer, ServerConfig
from devmesh_core.graph.topology import Topology
from devmesh_core.wiring import configured_topology, project_graph

app = typer.Typer(help="The knowledge graph (FalkorDB).", no_args_is_help=True)

TopologyOption = Annotated[
    Path | None,
    typer.Option(
        "--topology",
        help="Topology file (YAML) declaring service dependencies; replaces the graph's "
        "config edges. Without it the config edges already in the graph stay.",
        dir_okay=False,
    ),
]


def _server(ctx: typer.Context) -> EmbeddedServer:
    return EmbeddedServer(ServerConfig(directory=get_settings(ctx).data_dir / "graph"))


@contextmanager
def _graph(settings: Settings) -> Iterator[GraphStore]:
    """The configured graph, closed afterwards; a failure to open it exits with 1."""
    try:
        graph = open_graph(settings.graph_url, settings.data_dir)
    except DevMeshError as exc:
        err_console.print(f"[red]graph unavailable:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    try:
        yield graph
    finally:
        graph.close()


def _topology(settings: Settings, path: Path | None) -> Topology | None:
    """The topology file of the option, else of the settings (``topology_file``), if any."""
    return configured_topology(settings, path)


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


@app.command()
def project(
    ctx: typer.Context,
    topology: TopologyOption = None,
    propose: Annotated[
        bool | None,
        typer.Option(
            "--propose/--no-propose",
            help="Recompute dependencies proposed from error co-occurrence now / never "
            "(default: when the last proposal is over an hour old).",
        ),
    ] = None,
) -> None:
    """Project what the log store learned since the last pass into the graph."""
    settings = get_settings(ctx)
    try:
        topo = _topology(settings, topology)
        store = store_for(settings)
    except DevMeshError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    try:
        with _graph(settings) as graph:
            report = project_graph(store, graph, settings, topology=topo, propose=propose)
    except DevMeshError as exc:
        err_console.print(f"[red]projection failed:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    finally:
        store.close()
    console.print(escape(report.summary()))


@app.command()
def rebuild(
    ctx: typer.Context,
    topology: TopologyOption = None,
    propose: Annotated[
        bool,
        typer.Option(
            "--propose/--no-propose", help="Propose dependencies from error co-occurrence."
        ),
    ] = True,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", "-y", help="Rebuild even though the graph holds incidents, fixes or runbooks."
        ),
    ] = False,
) -> None:
    """Clear the graph and project the whole log store into it again.

    Clearing removes everything, including incidents, fixes and runbooks, which the log
    store cannot give back: without --yes the command refuses when the graph has any.
    """
    settings = get_settings(ctx)
    try:
        topo = _topology(settings, topology)
        store = store_for(settings)
    except DevMeshError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    try:
        with _graph(settings) as graph:
            if not yes:
                kept = {
                    label: n
                    for label, n in graph.stats().nodes.items()
                    if label in ("Incident", "Fix", "Runbook") and n
                }
                if kept:
                    held = ", ".join(
                        f"{n} {label.lower()}{'s' if n > 1 else ''}"
                        for label, n in sorted(kept.items())
                    )
                    err_console.print(
                        f"[red]refusing to rebuild:[/red] the graph holds {held}, which a "
                        "rebuild deletes; pass --yes to rebuild anyway"
                    )
                    raise typer.Exit(1)
            report = project_graph(
                store,
                graph,
                settings,
                topology=topo,
                rebuild=True,
                propose=None if propose else False,
            )
    except DevMeshError as exc:
        err_console.print(f"[red]rebuild failed:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    finally:
        store.close()
    console.print(escape(report.summary()))


@app.command()
def show(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="The service to show.")],
    dot: Annotated[
        Path | None,
        typer.Option(
            help="Also write the neighbourhood as Graphviz DOT to this file ('-': stdout)."
        ),
    ] = None,
    templates: Annotated[int, typer.Option(help="How many recent templates to list.", min=0)] = 10,
    days: Annotated[
        int, typer.Option(help="Deployments of the last DAYS days (and of dependencies).", min=1)
    ] = 7,
) -> None:
    """Show a service's neighbourhood as a tree (or Graphviz DOT).

    Dependencies both ways, hosts, recent templates, open incidents, runbooks and recent
    deployments (of the service and of what it depends on).
    """
    settings = get_settings(ctx)
    try:
        with _graph(settings) as graph:
            hood = graph.neighbourhood(service, templates=templates)
            deployments = (
                graph.recent_deployments(service, datetime.now(UTC) - timedelta(days=days))
                if hood.known
                else []
            )
    except DevMeshError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    if not hood.known:
        err_console.print(
            f"no service {escape(service)!r} in the graph (run `devmesh graph project` first?)"
        )
        raise typer.Exit(1)
    if dot is not None:
        text = neighbourhood_dot(hood, deployments)
        if str(dot) == "-":
            typer.echo(text, nl=False)
            return
        dot.write_text(text, encoding="utf-8")
        err_console.print(f"wrote {escape(str(dot))}")
    console.print(neighbourhood_tree(hood, deployments, days=days))


# ---------------------------------------------------------------------------- views


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def _short(text: str | None, width: int = 80) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def neighbourhood_tree(
    hood: Neighbourhood, deployments: list[DeploymentInfo], *, days: int = 7
) -> Tree:
    """The neighbourhood as a rich Tree (every user-supplied string escaped)."""
    kind = f" [dim]({escape(hood.kind)})[/dim]" if hood.kind else ""
    tree = Tree(f"[bold]{escape(hood.service)}[/bold]{kind}")

    def branch(title: str, lines: list[str]) -> None:
        node = tree.add(f"[bold]{title}[/bold] [dim]({len(lines)})[/dim]")
        for line in lines or ["[dim]none[/dim]"]:
            node.add(line)

    branch(
        "depends on",
        [
            f"{escape(d.service)}  {d.confidence:.2f} [dim]{escape(', '.join(d.sources))}[/dim]"
            for d in hood.depends_on
        ],
    )
    branch(
        "dependents",
        [
            f"{escape(d.service)}  {d.confidence:.2f} [dim]{escape(', '.join(d.sources))}[/dim]"
            for d in hood.dependents
        ],
    )
    branch("hosts", [escape(h) for h in hood.hosts])
    branch(
        "recent templates",
        [
            f"{t.count}× [cyan]{escape(t.level or '?')}[/cyan] {escape(_short(t.text))} "
            f"[dim]last {_when(t.last_seen)} · {escape(t.signature)}[/dim]"
            for t in hood.templates
        ],
    )
    branch(
        "open incidents",
        [
            f"{escape(i.id)} [{'red' if i.severity else 'yellow'}]{escape(i.status)}[/] "
            f"{escape(i.title or '')} [dim]{escape(i.severity or '')} "
            f"opened {_when(i.opened_at)}[/dim]"
            for i in hood.open_incidents
        ],
    )
    branch(
        "runbooks",
        [
            f"{escape(r.id)} {escape(r.title or '')} [dim]{escape(r.path or '')} "
            f"(via {r.via})[/dim]"
            for r in hood.runbooks
        ],
    )
    branch(
        f"deployments, last {days} days",
        [
            f"{_when(d.at)} {escape(d.service)} {escape(d.version or '')} "
            f"[dim]{escape(d.author or '')} {escape(d.id)}"
            + (f" (dependency, {d.depth} hop{'s' if d.depth > 1 else ''})" if d.depth else "")
            + "[/dim]"
            for d in deployments
        ],
    )
    return tree


def _q(text: str) -> str:
    """A DOT double-quoted string (quotes, backslashes and newlines escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def neighbourhood_dot(hood: Neighbourhood, deployments: list[DeploymentInfo]) -> str:
    """The neighbourhood as a Graphviz digraph (``dot -Tsvg``), edges as in the graph."""
    lines = [
        "digraph devmesh {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    center = f"service:{hood.service}"
    label = hood.service + (f"\n({hood.kind})" if hood.kind else "")
    lines.append(
        f'  {_q(center)} [label={_q(label)}, style="rounded,filled,bold", fillcolor="#ffe08a"];'
    )
    declared: set[str] = {center}

    def node(key: str, text: str, attrs: str = "") -> None:
        if key not in declared:
            declared.add(key)
            lines.append(f"  {_q(key)} [label={_q(text)}{', ' + attrs if attrs else ''}];")

    def edge(a: str, b: str, text: str, attrs: str = "") -> None:
        extra = f", {attrs}" if attrs else ""
        lines.append(f"  {_q(a)} -> {_q(b)} [label={_q(text)}{extra}];")

    for dep in hood.depends_on:
        key = f"service:{dep.service}"
        node(key, dep.service)
        style = "" if "config" in dep.sources else "style=dashed"
        edge(center, key, f"DEPENDS_ON {dep.confidence:.2f}\n{','.join(dep.sources)}", style)
    for dep in hood.dependents:
        key = f"service:{dep.service}"
        node(key, dep.service)
        style = "" if "config" in dep.sources else "style=dashed"
        edge(key, center, f"DEPENDS_ON {dep.confidence:.2f}\n{','.join(dep.sources)}", style)
    for host in hood.hosts:
        key = f"host:{host}"
        node(key, host, 'shape=box3d, fillcolor="#dde8f5", style=filled')
        edge(center, key, "RUNS_ON")
    for tpl in hood.templates:
        key = f"template:{tpl.signature}"
        node(key, f"{tpl.level or '?'}: {_short(tpl.text, 48)}", "shape=note")
        edge(center, key, f"EMITS {tpl.count}")
    for inc in hood.open_incidents:
        key = f"incident:{inc.id}"
        node(
            key,
            f"{inc.id}\n{_short(inc.title, 40)}",
            'shape=octagon, style=filled, fillcolor="#f8c4c4"',
        )
        edge(key, center, "INVOLVES")
    for rb in hood.runbooks:
        key = f"runbook:{rb.id}"
        node(key, rb.title or rb.id, "shape=tab")
        edge(key, center, "COVERS" if rb.via == "service" else "COVERS a template", "style=dotted")
    for dep_info in deployments:
        key = f"deployment:{dep_info.id}"
        target = f"service:{dep_info.service}"
        node(target, dep_info.service)
        text = f"{_when(dep_info.at)}\n{dep_info.version or ''}".rstrip()
        node(key, text, 'shape=cds, style=filled, fillcolor="#d7f0d2"')
        edge(key, target, "OF")
    lines.append("}")
    return "\n".join(lines) + "\n"
