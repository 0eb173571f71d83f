"""``devmesh search`` and ``devmesh similar``: semantic search over log templates. Thin.

The CLI opens the same vector index the server uses (local mode under the data dir unless
``DEVMESH_VECTOR_URL`` names a server), embeds any templates still waiting for a vector —
so it works without a server running — and then searches. Local mode lets one process
open the folder at a time: while ``devmesh serve`` holds it, the error says to use the API.
torch, sentence-transformers and qdrant-client are imported only when these commands run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.table import Table
from rich.text import Text

from devmesh.cli.common import console, err_console, get_settings, store_for
from devmesh_core.config import Settings
from devmesh_core.errors import DevMeshError
from devmesh_core.models import Level
from devmesh_core.timeparse import parse_time

if TYPE_CHECKING:
    from devmesh_core.store.base import LogStore
    from devmesh_core.vectors import Embedder, VectorIndex


@contextmanager
def open_vectors(settings: Settings) -> Iterator[tuple[VectorIndex, Embedder]]:
    """The embedder and vector index these settings name (closed on exit)."""
    from devmesh_core.vectors import open_from_settings

    index, embedder = open_from_settings(settings)
    try:
        yield index, embedder
    finally:
        index.close()


def catch_up(store: LogStore, index: VectorIndex, embedder: Embedder) -> None:
    """Embed templates that have no vector yet (what the server's worker would have done)."""
    from devmesh_core.vectors import EmbeddingWorker
    from devmesh_core.vectors.embedder import DEFAULT_BATCH_SIZE

    batch = getattr(embedder, "batch_size", DEFAULT_BATCH_SIZE)
    worker = EmbeddingWorker(store, index, embedder, batch_size=batch)
    if store.templates_to_embed(limit=1):
        err_console.print("[dim]embedding new log templates…[/dim]")
    done = worker.run_once()
    if done:
        err_console.print(f"[dim]embedded {done} template(s)[/dim]")
    if index.count() < store.template_count():  # index wiped or replaced: re-fill it
        report = worker.refresh()
        if report.reembedded:
            err_console.print(f"[dim]re-embedded {report.reembedded} template(s)[/dim]")


def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help='What to look for, e.g. "disk is full".')],
    service: Annotated[str | None, typer.Option("--service", "-s")] = None,
    host: Annotated[str | None, typer.Option("--host", "-H")] = None,
    level: Annotated[str | None, typer.Option("--level", "-l", help="Minimum level.")] = None,
    since: Annotated[str | None, typer.Option(help="15m, 2h, 3d or an ISO timestamp.")] = None,
    until: Annotated[str | None, typer.Option(help="15m, 2h, 3d or an ISO timestamp.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100)] = 10,
    examples: Annotated[int, typer.Option(min=0, max=20, help="Events shown per hit.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per hit.")] = False,
) -> None:
    """Find log templates by meaning ("disk is full" finds "No space left on device")."""
    from devmesh_core.vectors import search_templates

    settings = get_settings(ctx)
    try:
        min_level = Level.parse(level) if level else None
        start = parse_time(since) if since else None
        end = parse_time(until) if until else None
        with store_for(settings) as store, open_vectors(settings) as (index, embedder):
            catch_up(store, index, embedder)
            hits = search_templates(
                store,
                index,
                embedder,
                query,
                limit=limit,
                service=service,
                host=host,
                level=min_level,
                since=start,
                until=end,
                examples=examples,
            )
    except (DevMeshError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        _print_jsonl(hit.to_api() for hit in hits)
        return
    table = Table("score", "template", "services", "events", "latest example", header_style="bold")
    for hit in hits:
        info = hit.template
        example = hit.examples[0].message if hit.examples else ""
        table.add_row(
            f"{hit.score:.2f}",
            Text(info.template),
            Text(", ".join(info.services)),
            str(info.count),
            Text(example if len(example) <= 200 else example[:200] + "…"),
        )
    console.print(table)
    if not hits:
        console.print("[dim]no matching templates[/dim]")


def similar(
    ctx: typer.Context,
    template_id: Annotated[
        str | None, typer.Argument(help="List templates similar to this one (else all groups).")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(min=-1.0, max=1.0, help="Cosine similarity (default 0.7).")
    ] = None,
    service: Annotated[str | None, typer.Option("--service", "-s")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Templates worded differently that read as the same event (ids stay separate)."""
    from devmesh_core.vectors import DEFAULT_SIMILARITY, group_similar, similar_templates

    settings = get_settings(ctx)
    cutoff = DEFAULT_SIMILARITY if threshold is None else threshold
    try:
        with store_for(settings) as store, open_vectors(settings) as (index, embedder):
            catch_up(store, index, embedder)
            if template_id is not None:
                found = similar_templates(index, template_id, threshold=cutoff)
                rows = [[s.to_api()] for s in found]
            else:
                groups = group_similar(index, threshold=cutoff, service=service)
                rows = [[m.to_api() for m in g.members] for g in groups]
    except (DevMeshError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        if template_id is not None:
            _print_jsonl(row[0] for row in rows)
        else:
            _print_jsonl({"templates": row} for row in rows)
        return
    columns = ("score", "template_id", "template", "events")
    table = Table(*(columns if template_id else ("group", *columns)), header_style="bold")
    for n, members in enumerate(rows, start=1):
        for m in members:
            cells = [f"{m['score']:.2f}", m["template_id"], Text(m["template"]), str(m["count"])]
            table.add_row(*(cells if template_id else [str(n), *cells]))
    console.print(table)
    if not rows:
        console.print(f"[dim]nothing above similarity {cutoff}[/dim]")


def _print_jsonl(objects: Any) -> None:
    for obj in objects:
        sys.stdout.write(orjson.dumps(obj).decode() + "\n")
