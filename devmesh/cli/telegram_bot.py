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
from devmesh_core.log import get_logger
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
    finally:
        core.close()


async def _serve(core: Core, *, detect: bool) -> None:
    """Wire the core's services for this process, then run the bot."""
    from bots.telegram import run_telegram
    from devmesh_core.actions.service import ActionService
    from devmesh_core.detect.loop import build_hub, incident_service, start_detection
    from devmesh_core.reason.runbooks import lint_runbooks, runbooks_dir

    log = get_logger("devmesh.telegram")
    runbooks, problems = lint_runbooks(runbooks_dir(core.settings))
    core.runbooks = runbooks
    if problems:
        log.warning("runbooks_skipped", problems=problems[:5])
    hub = build_hub(core)
    hub.attach(asyncio.get_running_loop())
    core.notifiers = hub
    incidents = incident_service(core)
    handle = None
    if detect:
        handle = start_detection(core, hub)
    else:
        incidents.add_listener(hub.submit)
    actions = ActionService.from_core(core)
    core.actions = actions
    actions.start()
    try:
        await run_telegram(core)
    finally:
        if handle is not None:
            await asyncio.to_thread(handle.stop)
        await asyncio.to_thread(actions.stop)
        await hub.aclose()
