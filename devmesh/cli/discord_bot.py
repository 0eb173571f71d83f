"""``devmesh discord``: run the Discord bot in this process over a freshly opened ``Core``.

Thin: open the core, run its services with :func:`devmesh_core.wiring.serve_services` (the
wiring the API server and ``devmesh telegram`` share), hand the ``Core`` to
:func:`bots.discord.run_discord`.
discord.py is imported only when the command runs, so other commands do not pay for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Annotated

import typer

from devmesh.cli.common import err_console, get_settings
from devmesh_core.errors import DevMeshError

if TYPE_CHECKING:
    from devmesh_core.runtime import Core


def discord_bot(
    ctx: typer.Context,
    detect: Annotated[
        bool,
        typer.Option(
            "--detect/--no-detect",
            help="Also run incident detection here (when no `devmesh serve` runs it).",
        ),
    ] = False,
) -> None:
    """Run the Discord bot (needs DEVMESH_DISCORD__TOKEN; see bots/discord/README.md)."""
    from devmesh_core.runtime import Core

    settings = get_settings(ctx)
    if settings.discord.token is None:
        err_console.print(
            "[red]error:[/red] set DEVMESH_DISCORD__TOKEN (see bots/discord/README.md)"
        )
        raise typer.Exit(2)
    try:
        core = Core.open(settings)
    except DevMeshError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(core, detect=detect))
    except DevMeshError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        core.close()


async def _serve(core: Core, *, detect: bool) -> None:
    """Wire the core's services for this process (as the server and ``devmesh telegram``
    do), then run the bot until it stops."""
    from bots.discord import run_discord
    from devmesh_core.wiring import serve_services

    async with serve_services(core, detect=detect):
        await run_discord(core)
