"""``devmesh runbooks``: lint, list and show the runbooks DevMesh follows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from devmesh.cli.common import console, err_console, get_settings
from devmesh_core.errors import DevMeshError
from devmesh_core.reason.runbooks import Runbook, lint_runbooks, load_runbooks, runbooks_dir

app = typer.Typer(
    help="Runbooks: what a failure looks like and what may fix it.", no_args_is_help=True
)

_RISK_STYLE = {"low": "green", "high": "red"}


def _load(ctx: typer.Context, directory: Path | None) -> tuple[Path, list[Runbook]]:
    folder = directory or runbooks_dir(get_settings(ctx))
    try:
        return folder, load_runbooks(folder)
    except DevMeshError as exc:
        err_console.print(
            f"[red]error:[/red] {escape(str(exc))}\n(run `devmesh runbooks lint {folder}`)"
        )
        raise typer.Exit(1) from exc


def _as_json(runbook: Runbook, *, body: bool) -> dict[str, Any]:
    data = runbook.model_dump(mode="json", exclude={"body"} if not body else None)
    return data


@app.command("lint")
def lint(
    ctx: typer.Context,
    directory: Annotated[
        Path | None,
        typer.Argument(help="Runbook folder (default: the configured one).", show_default=False),
    ] = None,
) -> None:
    """Check every runbook: front matter, unique ids, regexes (and their examples),
    actions against the catalog. One line per problem; exit code 1 if there is any."""
    folder = directory or runbooks_dir(get_settings(ctx))
    runbooks, problems = lint_runbooks(folder)
    if problems:
        for problem in problems:
            # Plain print: one problem per line, greppable, no wrapping.
            print(problem)
        raise typer.Exit(1)
    triggers = sum(len(r.triggers) for r in runbooks)
    console.print(f"{len(runbooks)} runbooks OK ({triggers} triggers) in {escape(str(folder))}")


@app.command("list")
def list_runbooks(
    ctx: typer.Context,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Runbook folder (default: the configured one).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The runbooks in force: id, title, what they cover."""
    folder, runbooks = _load(ctx, directory)
    if as_json:
        for runbook in runbooks:
            print(orjson.dumps(_as_json(runbook, body=False)).decode())
        return
    table = Table(title=f"runbooks in {folder}")
    table.add_column("id", no_wrap=True)
    for column in ("title", "services", "triggers", "actions", "risk"):
        table.add_column(column)
    for runbook in runbooks:
        table.add_row(
            runbook.id,
            escape(runbook.title),
            escape(", ".join(runbook.services) or "any"),
            str(len(runbook.triggers)),
            escape(", ".join(dict.fromkeys(a.action for a in runbook.actions))),
            f"[{_RISK_STYLE[runbook.risk]}]{runbook.risk}[/]",
        )
    console.print(table)


@app.command("show")
def show(
    ctx: typer.Context,
    runbook_id: Annotated[str, typer.Argument(metavar="ID", help="Runbook id, e.g. disk-full.")],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Runbook folder (default: the configured one).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """One runbook: triggers, allowed actions, checks and its text."""
    _, runbooks = _load(ctx, directory)
    found = next((r for r in runbooks if r.id == runbook_id), None)
    if found is None:
        known = ", ".join(r.id for r in runbooks)
        err_console.print(f"[red]error:[/red] no runbook {escape(runbook_id)!r}; known: {known}")
        raise typer.Exit(1)
    if as_json:
        print(orjson.dumps(_as_json(found, body=True)).decode())
        return
    console.print(f"[bold]{escape(found.title)}[/bold]  ({found.id}, risk {found.risk})")
    if found.path is not None:
        console.print(f"[dim]{escape(str(found.path))}[/dim]")
    console.print("services: " + escape(", ".join(found.services) or "any"))
    if found.tags:
        console.print("tags: " + escape(", ".join(found.tags)))
    console.print("\n[bold]triggers[/bold]")
    for trigger in found.triggers:
        console.print(f"  {escape(f'[{trigger.severity}]')} {escape(trigger.pattern)}")
    console.print("\n[bold]actions[/bold]")
    for action in found.actions:
        params = " ".join(f"{k}={v}" for k, v in action.params.items())
        risk = f" (risk {action.risk})" if action.risk else ""
        note = f" - {action.note}" if action.note else ""
        console.print(f"  {action.action} {escape(params)}{risk}{escape(note)}")
    if found.checks:
        console.print("\n[bold]checks[/bold]")
        for check in found.checks:
            console.print(f"  - {escape(check)}")
    console.print("")
    console.print(found.body.strip(), markup=False, highlight=False)
