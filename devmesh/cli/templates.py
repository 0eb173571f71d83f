"""``devmesh templates``: mine log templates from a file. Thin: parse, call core, print."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from devmesh.cli.common import console, get_settings, miner_for, store_for
from devmesh_core import services
from devmesh_core.errors import DevMeshError
from devmesh_core.templates import MinedTemplate, SignatureMiner, mine_lines

app = typer.Typer(
    help="Mine log templates (event types) from log lines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

err_console = Console(stderr=True)


@app.callback()
def templates() -> None:
    """Mine log templates (event types) from log lines."""


def _read_lines(file: Path) -> list[str]:
    if str(file) == "-":
        return [line.rstrip("\r\n") for line in sys.stdin]
    with file.open(encoding="utf-8", errors="replace", newline="") as fh:
        return [line.rstrip("\r\n") for line in fh]


@app.command()
def mine(
    file: Annotated[Path, typer.Argument(help="Log file, one message per line ('-' = stdin).")],
    jsonl: Annotated[
        bool,
        typer.Option(
            "--jsonl/--summary",
            help="One JSON object per input line (default), or a table of templates.",
        ),
    ] = True,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Keep template ids in this directory across runs (else in memory)."),
    ] = None,
) -> None:
    """Print the template of every line of FILE, in input order.

    With --jsonl each output line is {"line", "template_id", "template"}; the whole file is
    grouped as one batch. With --state-dir, ids already known there are reused and new
    templates are saved.
    """
    try:
        lines = _read_lines(file)
        results: list[MinedTemplate]
        if state_dir is None:
            results = mine_lines(lines)
        else:
            with SignatureMiner(state_dir) as miner:
                results = miner.add_many(lines) if lines else []
    except OSError as exc:
        err_console.print(f"[red]cannot read {file}:[/red] {exc}")
        raise typer.Exit(1) from exc
    except DevMeshError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc

    if jsonl:
        out = sys.stdout
        chunk: list[str] = []
        for n, r in enumerate(results, start=1):
            obj = {"line": n, "template_id": r.template_id, "template": r.template}
            chunk.append(orjson.dumps(obj).decode())
            if len(chunk) >= 4096:
                out.write("\n".join(chunk) + "\n")
                chunk.clear()
        if chunk:
            out.write("\n".join(chunk) + "\n")
        out.flush()
        return

    counts: dict[str, int] = {}
    text: dict[str, str] = {}
    for r in results:
        counts[r.template_id] = counts.get(r.template_id, 0) + 1
        text[r.template_id] = r.template
    table = Table("template_id", "lines", "template", title=f"{len(counts)} templates")
    for tid, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        # Text cells: templates contain brackets ("[preauth]") that rich would take as markup
        table.add_row(Text(tid), Text(str(n)), Text(text[tid]))
    Console(highlight=False).print(table)


@app.command("list")
def list_(
    ctx: typer.Context,
    service: Annotated[str | None, typer.Option("--service", "-s")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 30,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Known templates (signatures) of the store, most recently seen first."""
    with store_for(get_settings(ctx)) as store:
        found = store.list_templates(service=service, limit=limit)
    if as_json:
        for info in found:
            sys.stdout.write(
                orjson.dumps(
                    {
                        "template_id": info.template_id,
                        "template": info.template,
                        "count": info.count,
                        "services": info.services,
                        "hosts": info.hosts,
                        "levels": info.levels,
                        "first_seen": info.first_seen.isoformat(),
                        "last_seen": info.last_seen.isoformat(),
                    }
                ).decode()
                + "\n"
            )
        return
    table = Table(header_style="bold")
    for column in ("id", "count", "services", "levels", "template"):
        table.add_column(column, overflow="fold")
    for info in found:
        levels = " ".join(f"{k[0]}:{v}" for k, v in sorted(info.levels.items()))
        table.add_row(
            info.template_id,
            str(info.count),
            Text(", ".join(info.services)),
            levels,
            Text(info.template),
        )
    console.print(table)


@app.command()
def backfill(ctx: typer.Context) -> None:
    """Mine events that were stored without a template (before mining, or while the miner
    state was in use by another process)."""
    settings = get_settings(ctx)
    with store_for(settings) as store:
        miner = miner_for(settings, store)
        if miner is None:
            raise typer.Exit(1)
        try:
            done = services.backfill_templates(store, miner)
        finally:
            miner.close()
    console.print(f"mined {done} event(s)")
