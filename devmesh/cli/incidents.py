"""``devmesh incidents``: list, show, acknowledge, mitigate and resolve incidents."""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from devmesh.cli.common import console, fail, open_core
from devmesh_core.detect.loop import incident_service
from devmesh_core.detect.service import IncidentService
from devmesh_core.errors import DevMeshError

app = typer.Typer(help="Incidents detected from the logs.", no_args_is_help=True)
T = TypeVar("T")

_STYLE = {"low": "dim", "medium": "yellow", "high": "red", "critical": "bold white on red"}

# The arguments every per-incident command takes, declared once so they read the same.
IncidentId = Annotated[str, typer.Argument(help="INC-42 or 42")]
By = Annotated[str | None, typer.Option(help="Who (default: cli:<user>).")]


@contextmanager
def _service(ctx: typer.Context) -> Iterator[IncidentService]:
    with open_core(ctx) as core:
        yield incident_service(core)


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except DevMeshError as exc:
        fail(exc)


def _me() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


@app.command("list")
def list_incidents(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option(help="active, open, acknowledged, mitigated or resolved.")
    ] = "active",
    all_: Annotated[bool, typer.Option("--all", help="Every state.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
) -> None:
    """Incidents, newest first (active ones unless --all or --state)."""
    with _service(ctx) as service:
        items = _call(lambda: service.list(None if all_ else state, limit=limit))
    if json:
        for incident in items:
            typer.echo(orjson.dumps(incident.model_dump(mode="json")).decode())
        return
    if not items:
        console.print("no incidents")
        return
    table = Table("id", "state", "severity", "origin", "services", "opened", "title")
    for i in items:
        table.add_row(
            i.id,
            i.state,
            f"[{_STYLE[i.severity]}]{i.severity}[/]",
            escape(i.origin_service or i.origin_host or "-"),
            escape(", ".join(i.services[:4])),
            f"{i.opened_at:%Y-%m-%d %H:%M:%S}",
            escape(i.title[:70]),
        )
    console.print(table)


@app.command()
def show(
    ctx: typer.Context,
    incident_id: IncidentId,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One incident: summary and timeline."""
    with _service(ctx) as service:
        incident = _call(lambda: service.get(incident_id))
        summary = _call(lambda: service.summary(incident))
    if json:
        typer.echo(
            orjson.dumps(
                {
                    "incident": incident.model_dump(mode="json"),
                    "summary": summary.model_dump(mode="json"),
                }
            ).decode()
        )
        return
    console.print(f"[bold]{escape(summary.headline)}[/bold]")
    console.print(
        f"state {incident.state}; hosts {escape(', '.join(incident.hosts) or '-')}; "
        f"runbooks {escape(', '.join(incident.runbook_ids) or '-')}"
    )
    for t in summary.top_templates:
        console.print(f"  {t.count:>6}  {escape(t.template[:100])}")
    for fix in summary.past_fixes:
        console.print(f"  past fix: {escape(fix)}")
    table = Table("at", "kind", "service", "host", "count", "detail")
    for s in incident.signals:
        table.add_row(
            f"{s.at:%H:%M:%S}",
            s.kind,
            escape(s.service or "-"),
            escape(s.host or "-"),
            str(s.count),
            escape(s.detail[:80]),
        )
    console.print(table)


@app.command()
def ack(
    ctx: typer.Context,
    incident_id: IncidentId,
    by: By = None,
) -> None:
    """Acknowledge an incident."""
    with _service(ctx) as service:
        incident = _call(lambda: service.acknowledge(incident_id, by or _me()))
    console.print(f"{incident.id} acknowledged by {escape(incident.acknowledged_by or '')}")


@app.command()
def mitigate(
    ctx: typer.Context,
    incident_id: IncidentId,
    by: By = None,
) -> None:
    """Mark an incident mitigated: the impact is stopped, the cause may remain."""
    who = by or _me()
    with _service(ctx) as service:
        incident = _call(lambda: service.mitigate(incident_id, who))
    console.print(f"{incident.id} mitigated by {escape(who)}")


@app.command()
def resolve(
    ctx: typer.Context,
    incident_id: IncidentId,
    note: Annotated[str | None, typer.Option(help="What was done.")] = None,
    by: By = None,
) -> None:
    """Resolve an incident."""
    with _service(ctx) as service:
        incident = _call(lambda: service.resolve(incident_id, by or _me(), note))
    console.print(f"{incident.id} resolved by {escape(incident.resolved_by or '')}")
