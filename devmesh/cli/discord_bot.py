"""``devmesh discord``: run the Discord bot in this process over a freshly opened ``Core``.

Thin: open the core's services, hand the ``Core`` to :func:`bots.discord.run_discord`.
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
    from devmesh_core.detect.loop import DetectionHandle
    from devmesh_core.notify.base import NotifierHub
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
    handle = None
    try:
        hub, handle = _wire(core, detect=detect)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(core, hub))
    except DevMeshError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        if handle is not None:
            handle.stop()
        core.close()


def _wire(core: Core, *, detect: bool) -> tuple[NotifierHub, DetectionHandle | None]:
    """Runbooks, remediation, incidents and the notifier hub, as the server wires them."""
    from devmesh_core.actions.service import ActionService
    from devmesh_core.detect.loop import build_hub, incident_service, start_detection
    from devmesh_core.reason.runbooks import load_configured_runbooks

    try:
        core.runbooks = load_configured_runbooks(core.settings)
    except DevMeshError as exc:
        err_console.print(f"[yellow]runbooks not loaded:[/yellow] {exc}")
    try:
        core.actions = ActionService.from_core(core)
    except DevMeshError as exc:
        err_console.print(f"[yellow]remediation off:[/yellow] {exc}")
    hub = build_hub(core)
    core.notifiers = hub
    handle = None
    if detect:
        handle = start_detection(core, hub)
    else:
        incident_service(core).add_listener(hub.submit)
    return hub, handle


async def _serve(core: Core, hub: NotifierHub) -> None:
    from bots.discord import run_discord

    hub.attach(asyncio.get_running_loop())
    try:
        await run_discord(core)
    finally:
        await hub.aclose()
