"""``devmesh ui``: manage the status page's users and make one-time login links.

Users live in ``data_dir/users.json`` (argon2 hashes, mode 0600); run these commands on the
server as the user that runs ``devmesh serve``. Passwords are prompted (never arguments:
those end up in shell history and ``ps``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from devmesh.cli.common import console, err_console, get_settings
from devmesh.web.auth import ROLES, Role, WebAuth
from devmesh_core.errors import DevMeshError
from devmesh_core.timeparse import parse_duration

app = typer.Typer(help="The web status page (/ui): users and login links.", no_args_is_help=True)
user_app = typer.Typer(help="Page users (viewer: read-only; approver: may approve).")
app.add_typer(user_app, name="user")


def _auth(ctx: typer.Context) -> WebAuth:
    settings = get_settings(ctx)
    settings.ensure_data_dir()
    return WebAuth(settings.data_dir)


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Login name (letters, digits, _ . @ -).")],
    role: Annotated[str, typer.Option(help="viewer (read-only) or approver.")] = "viewer",
    replace: Annotated[
        bool, typer.Option("--replace", help="Change an existing user's password and role.")
    ] = False,
    password: Annotated[
        str | None,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="DEVMESH_UI_PASSWORD",
            help="Prompted when not given (env DEVMESH_UI_PASSWORD for scripts).",
        ),
    ] = None,
) -> None:
    """Create a page user (the password is prompted twice)."""
    if role not in ROLES:
        err_console.print(f"[red]error:[/red] role must be one of {', '.join(ROLES)}")
        raise typer.Exit(2)
    try:
        page_role: Role = "approver" if role == "approver" else "viewer"
        user = _auth(ctx).add(name, password or "", page_role, replace=replace)
    except DevMeshError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"saved user {user.name!r} with role {user.role}")
    if user.role == "approver":
        console.print(
            "[dim]The action layer decides approvals by its own roles: grant them with "
            'DEVMESH_ACTIONS__ROLES=\'{"web-role:approver": ["approver"]}\' (all page '
            f'approvers) or {{"web:{user.name}": ["approver"]}} (this user only).[/dim]'
        )


@user_app.command("list")
def user_list(ctx: typer.Context) -> None:
    """Page users and their roles."""
    table = Table(header_style="bold")
    for column in ("name", "role", "created (UTC)"):
        table.add_column(column)
    for user in _auth(ctx).users():
        table.add_row(user.name, user.role, user.created_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@user_app.command("remove")
def user_remove(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Delete a page user; their open sessions stop working at their next request."""
    try:
        _auth(ctx).remove(name)
    except DevMeshError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"removed user {name!r}")


@app.command("link")
def link(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The user the link logs in as.")],
    ttl: Annotated[str, typer.Option(help="How long the link works (e.g. 10m, 1h).")] = "10m",
    base_url: Annotated[
        str | None,
        typer.Option(help="Public address of the server (default http://API_HOST:API_PORT)."),
    ] = None,
) -> None:
    """Print a one-time login link (single use, short expiry) for a page user."""
    settings = get_settings(ctx)
    try:
        lifetime: timedelta = parse_duration(ttl)
        token, expires = _auth(ctx).create_link(name, lifetime)
    except DevMeshError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    base = (base_url or f"http://{settings.api_host}:{settings.api_port}").rstrip("/")
    err_console.print(f"one-time link for {name!r}, valid until {expires:%Y-%m-%d %H:%M:%S} UTC:")
    print(f"{base}/ui/link?token={token}")
