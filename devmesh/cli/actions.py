"""``devmesh actions list|show|propose|approve|reject|catalog`` and ``devmesh audit``.

Thin: parse, call :class:`devmesh_core.actions.service.ActionService` over this data dir's
store, print. The person at the terminal acts as ``cli:<os user>``; their role comes from
``ActionSettings.roles`` (e.g. ``DEVMESH_ACTIONS__ROLES='{"cli:alice": ["admin"]}'``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from devmesh.cli.common import console, fail, open_core
from devmesh_core.actions.models import ActionRequest, AuditRecord
from devmesh_core.actions.service import ActionService, cli_identity
from devmesh_core.errors import DevMeshError

app = typer.Typer(
    help="Remediation requests: propose, approve, reject, inspect.", no_args_is_help=True
)


@contextmanager
def _service(ctx: typer.Context) -> Iterator[ActionService]:
    with open_core(ctx) as core:
        try:
            service = ActionService.from_core(core)
            core.actions = service
            yield service
        except DevMeshError as exc:
            fail(exc)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _print_requests(requests: list[ActionRequest]) -> None:
    table = Table(header_style="bold")
    for column in ("id", "status", "risk", "summary", "incident", "by", "approvals", "created"):
        table.add_column(column, overflow="fold")
    for r in requests:
        table.add_row(
            r.id,
            r.status,
            r.risk,
            escape(r.summary),
            r.incident_id or "-",
            escape(r.requested_by),
            f"{len(r.approvals)}/{r.approvals_needed}",
            _when(r.created_at),
        )
    console.print(table)


def _print_audit(records: list[AuditRecord]) -> None:
    table = Table(header_style="bold")
    for column in ("time (UTC)", "request", "step", "actor", "detail"):
        table.add_column(column, overflow="fold")
    for a in records:
        table.add_row(
            _when(a.at),
            a.request_id or "-",
            a.step,
            escape(a.actor),
            escape(orjson.dumps(a.detail).decode()[:300]),
        )
    console.print(table)


def _emit(data: Any) -> None:
    console.print_json(orjson.dumps(data).decode())


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="pending, approved, running, …, or active.")
    ] = "active",
    host: Annotated[str | None, typer.Option("--host", "-H")] = None,
    incident: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=500)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Requests, newest first (default: active ones)."""
    wanted = None if status in (None, "all") else status
    with _service(ctx) as service:
        found = service.requests(wanted, host=host, incident_id=incident, limit=limit)
    if as_json:
        _emit([r.model_dump(mode="json") for r in found])
        return
    _print_requests(found)


@app.command()
def show(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="Request id, e.g. A-7f3k2.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One request with its audit trail."""
    with _service(ctx) as service:
        request = service.get(request_id)
        trail = service.audit(request_id=request.id)
    if as_json:
        _emit(
            {
                "request": request.model_dump(mode="json"),
                "audit": [a.model_dump(mode="json") for a in trail],
            }
        )
        return
    console.print(f"[bold]{request.id}[/bold] {escape(request.summary)}")
    for name in (
        "status",
        "risk",
        "host",
        "incident_id",
        "requested_by",
        "approvals",
        "approvals_needed",
        "created_at",
        "expires_at",
        "finished_at",
        "verified",
        "reason",
    ):
        console.print(f"  {name}: {escape(str(getattr(request, name)))}")
    if request.result:
        console.print(f"  result: {escape(orjson.dumps(request.result).decode()[:2000])}")
    _print_audit(trail)


def _value(text: str) -> Any:
    """``5`` → 5, ``true`` → True, anything else stays a string."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    return parsed if isinstance(parsed, int | bool) else text


def _pairs(items: list[str] | None, *, typed: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not NAME=VALUE")
        out[key] = _value(value) if typed else value
    return out


@app.command()
def propose(
    ctx: typer.Context,
    action: Annotated[str, typer.Argument(help="Catalog action, e.g. restart_unit.")],
    host: Annotated[str, typer.Option("--host", "-H", help="Node to run it on.")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE, e.g. unit=nginx.")
    ] = None,
    arg: Annotated[
        list[str] | None, typer.Option("--arg", help="Script argument NAME=VALUE.")
    ] = None,
    incident: Annotated[str | None, typer.Option(help="Incident id.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and show what would run; store nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Propose an action as cli:<you>; it waits for approval."""
    params = _pairs(param, typed=False)
    if arg:
        params["args"] = _pairs(arg, typed=True)
    with _service(ctx) as service:
        if dry_run:
            from devmesh_core.actions.catalog import plan

            validated = service.validate(action, params, host=host)
            try:
                described = plan(validated, service.config).to_dict()
            except DevMeshError as exc:
                described = {"note": f"on this machine: {exc}"}
            _emit(
                {
                    "dry_run": True,
                    "summary": validated.summary,
                    "risk": validated.risk,
                    "params": validated.params,
                    "plan": described,
                }
            )
            return
        made = service.propose(
            action, params, host=host, incident_id=incident, requested_by=cli_identity()
        )
    if as_json:
        _emit(made.model_dump(mode="json"))
        return
    console.print(
        f"proposed [bold]{made.id}[/bold]: {escape(made.summary)} "
        f"({made.risk} risk, needs {made.approvals_needed} approval(s), "
        f"expires {_when(made.expires_at)} UTC)"
    )


@app.command()
def approve(ctx: typer.Context, request_id: Annotated[str, typer.Argument()]) -> None:
    """Approve a pending request as cli:<you>."""
    with _service(ctx) as service:
        done = service.approve(request_id, cli_identity())
    console.print(
        f"{done.id}: {done.status} ({len(done.approvals)}/{done.approvals_needed} approvals)"
    )


@app.command()
def reject(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why.")] = "",
) -> None:
    """Reject a request (or withdraw your own)."""
    with _service(ctx) as service:
        done = service.reject(request_id, cli_identity(), reason)
    console.print(f"{done.id}: {done.status}")


@app.command()
def catalog(ctx: typer.Context) -> None:
    """The actions that can be proposed."""
    with _service(ctx) as service:
        specs = service.catalog()
    table = Table(header_style="bold")
    for column in ("action", "risk", "parameters", "what it does"):
        table.add_column(column, overflow="fold")
    for spec in specs:
        params = "; ".join(f"{k}: {v}" for k, v in spec.params.items())
        table.add_row(spec.name, spec.risk, escape(params), escape(spec.description))
    console.print(table)


def audit(
    ctx: typer.Context,
    request: Annotated[str | None, typer.Option("--request", help="Request id.")] = None,
    incident: Annotated[str | None, typer.Option("--incident", help="Incident id.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 500,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The remediation audit trail (every proposal, approval, refusal, run and check)."""
    with _service(ctx) as service:
        records = service.audit(request_id=request, incident_id=incident, limit=limit)
    if as_json:
        _emit([a.model_dump(mode="json") for a in records])
        return
    _print_audit(records)
