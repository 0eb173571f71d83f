"""``devmesh ask QUESTION``: a diagnosis from the terminal. Thin: parse, call ``ask``, print.

The window defaults to the last hour (``--since``/``--until`` take ``15m``, ``2h`` or ISO
8601). ``--json`` prints the typed Diagnosis, every evidence entry with its id and the
cited text; otherwise a readable rendering. Vectors are used when enabled in the settings
(the query is embedded with the same model as the templates); ``--no-vectors`` skips
loading the model for a faster answer from the store, topology and runbooks alone.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from devmesh.cli.common import console, err_console, get_settings
from devmesh_core.config import Settings
from devmesh_core.errors import DevMeshError
from devmesh_core.reason.models import Diagnosis
from devmesh_core.runtime import Core
from devmesh_core.timeparse import parse_time


def ask_command(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help='e.g. "why is nginx failing?"')],
    incident: Annotated[str | None, typer.Option("--incident", "-i", help="INC-42")] = None,
    service: Annotated[str | None, typer.Option("--service", "-s")] = None,
    host: Annotated[str | None, typer.Option("--host", "-H")] = None,
    since: Annotated[
        str | None, typer.Option(help="Window start: 15m, 2h, 3d or ISO (default 1h ago).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Window end (default now).")] = None,
    llm: Annotated[
        str | None, typer.Option(help="none, llamacpp, ollama, or a full spec (default: settings).")
    ] = None,
    vectors: Annotated[
        bool | None, typer.Option("--vectors/--no-vectors", help="Use the vector index.")
    ] = None,
    graph: Annotated[
        bool | None,
        typer.Option(
            "--graph/--no-graph",
            help="Expand through the knowledge graph (default: when one was projected).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the Diagnosis as JSON.")] = False,
) -> None:
    """Ask why something is failing: root cause, cited evidence, next steps."""
    from devmesh_core.reason import ask

    settings = get_settings(ctx)
    use_vectors = settings.vectors_enabled if vectors is None else vectors
    if graph is None:  # starting an embedded graph nobody projected into is wasted seconds
        graph = settings.reason.use_graph and (
            settings.graph_url is not None or (settings.data_dir / "graph").is_dir()
        )
    settings.reason.use_graph = graph
    try:
        window_start = parse_time(since) if since else None
        window_end = parse_time(until) if until else None
        core = Core.open(settings, vectors=use_vectors)
    except DevMeshError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    streamed = _Progress()
    try:
        diagnosis = ask(
            core,
            question,
            incident_id=incident,
            service=service,
            host=host,
            since=window_start,
            until=window_end,
            llm=llm,
            # A model's answer is shown on stderr as it is written (stdout stays clean
            # for --json); the final, validated diagnosis follows.
            on_text=streamed.show,
        )
    except DevMeshError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    finally:
        core.close()
        streamed.end()
    if as_json:
        print(diagnosis.model_dump_json(indent=2))
        return
    render(diagnosis)


class _Progress:
    """Echoes a model's streamed answer, dimmed, to stderr; ends the line afterwards."""

    def __init__(self) -> None:
        self.used = False

    def show(self, text: str) -> None:
        self.used = True
        err_console.print(escape(text), end="", style="dim", soft_wrap=True)

    def end(self) -> None:
        if self.used:
            err_console.print()


def render(diagnosis: Diagnosis) -> None:
    """A diagnosis for people: the cause up top, then evidence, steps and proposals."""
    head = escape(diagnosis.root_cause)
    meta = [f"confidence {diagnosis.confidence:.0%}", f"backend {diagnosis.backend}"]
    if diagnosis.origin_service:
        meta.insert(0, f"origin [bold]{escape(diagnosis.origin_service)}[/bold]")
    if diagnosis.runbook_ids:
        meta.append("runbook " + ", ".join(escape(r) for r in diagnosis.runbook_ids))
    meta.append(f"{diagnosis.latency_ms:.0f} ms")
    console.print(Panel(f"{head}\n\n[dim]{' · '.join(meta)}[/dim]", title="Diagnosis"))
    if diagnosis.fallback_reason:
        console.print(f"[yellow]model not used:[/yellow] {escape(diagnosis.fallback_reason)}")
    if diagnosis.dropped_evidence_ids:
        dropped = diagnosis.dropped_evidence_ids
        console.print(f"[yellow]{dropped} invented evidence id(s) dropped[/yellow]")
    if diagnosis.evidence:
        table = Table(header_style="bold", show_lines=False)
        table.add_column("evidence", no_wrap=True)
        table.add_column("what it says", overflow="fold")
        for item in diagnosis.evidence:
            table.add_row(escape(item.id), escape(item.text))
        console.print(table)
    if diagnosis.next_steps:
        console.print("[bold]Next steps[/bold]")
        for n, step in enumerate(diagnosis.next_steps, 1):
            console.print(f"  {n}. {escape(step)}")
    if diagnosis.proposed_actions:
        console.print("[bold]Proposed actions[/bold] (need approval: devmesh actions)")
        for action in diagnosis.proposed_actions:
            params = ", ".join(f"{k}={v}" for k, v in sorted(action.params.items()))
            where = f" on {action.host}" if action.host else ""
            console.print(f"  - {escape(action.action)}({escape(params)}){escape(where)}")


def make_askable(settings: Settings) -> None:
    """Embed the templates an import just made (when vectors are on), so the data can be
    asked about — semantically too — as soon as ``devmesh import`` returns, without waiting
    for a server's embedding worker. A busy or missing index is a warning, not a failure:
    ``ask`` works without vectors."""
    if settings.graph_enabled:
        _project_graph(settings)
    if not settings.vectors_enabled:
        return
    from devmesh.cli.search import catch_up, open_vectors
    from devmesh_core.store import open_store

    try:
        with open_store(settings.effective_database_url) as store:
            if not store.templates_to_embed(limit=1):
                return
            with open_vectors(settings) as (index, embedder):
                catch_up(store, index, embedder)
    except DevMeshError as exc:
        err_console.print(
            f"[yellow]templates not embedded yet:[/yellow] {escape(str(exc))} "
            "(the server's worker or `devmesh search` will do it)"
        )


def _project_graph(settings: Settings) -> None:
    """Bring the knowledge graph up to date with what was just imported (and link the
    runbooks), so ``ask`` sees dependencies and past incidents for it right away. The
    embedded server is left running for the next command (``devmesh graph stop`` stops it)."""
    from datetime import timedelta

    from devmesh_core.graph import open_graph
    from devmesh_core.store import open_store
    from devmesh_core.wiring import configured_topology, project_graph

    try:
        topology = configured_topology(settings)
        with open_store(settings.effective_database_url) as store:
            graph = open_graph(settings.graph_url, settings.data_dir)
            try:
                # No lag: this process wrote everything there is and nothing is in flight.
                project_graph(store, graph, settings, topology=topology, lag=timedelta(0))
            finally:
                graph.close()
    except DevMeshError as exc:
        err_console.print(
            f"[yellow]graph not updated yet:[/yellow] {escape(str(exc))} "
            "(the server's projection or `devmesh graph project` will do it)"
        )
