"""``devmesh telegram``: run the Telegram bot in this process over a ``Core``. Thin.

It opens the same store and services the API server uses (incidents, remediation, the
notifier hub) so the bot can answer and approve on its own. Incident detection runs in
whichever process is told to (``--detect``); run it in exactly one process — by default
that is the API server (``devmesh serve``/``devmesh up``), so this command only chats.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

import typer

from devmesh.cli.common import err_console, get_settings
from devmesh_core.errors import DevMeshError
from devmesh_core.runtime import Core


def telegram(
    ctx: typer.Context,
    detect: Annotated[
        bool,
        typer.Option(
            help="Also run incident detection here (only if no API server detects for this store)."
        ),
    ] = False,
) -> None:
    """Run the Telegram bot (long polling, or a webhook when DEVMESH_TELEGRAM__WEBHOOK_URL
    is set) until Ctrl-C."""
    settings = get_settings(ctx)
    if settings.telegram.token is None:
        err_console.print(
            "[red]error:[/red] set DEVMESH_TELEGRAM__TOKEN (from @BotFather) first; "
            "see bots/telegram/README.md"
        )
        raise typer.Exit(2)
    try:
        core = Core.open(settings, vectors=settings.vectors_enabled)
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
    """Wire the core's services for this process (as the server and ``devmesh discord``
    do), then run the bot until it stops."""
    from bots.telegram import run_telegram
    from devmesh_core.wiring import serve_services

    async with serve_services(core, detect=detect):
        await run_telegram(core)
