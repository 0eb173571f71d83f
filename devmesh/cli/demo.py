"""``devmesh demo``: run the chaos scenario that proves the whole loop on this machine.

Thin: check the options against the settings, make the demo directory, run
:class:`devmesh.demo.scenario.Demo`, exit with its code. Registered on the main CLI with
``app.command("demo")(demo)``.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr
from rich.markup import escape

from devmesh.cli.common import console, err_console, get_settings
from devmesh_core.config import Settings
from devmesh_core.errors import DevMeshError

AUTO_APPROVE_SETTING = "DEVMESH_ACTIONS__ALLOW_AUTO_APPROVE"


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the demo like Ctrl-C: everything it started is stopped first."""
    raise KeyboardInterrupt


def demo(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Demo directory (new or empty; default: a fresh temporary one). Holds the "
            "demo server's data, the services' logs, configs and demo-steps.jsonl.",
        ),
    ] = None,
    auto_approve: Annotated[
        bool,
        typer.Option(
            "--auto-approve",
            help=f"Approve the proposed action without asking (tests only; refused unless "
            f"{AUTO_APPROVE_SETTING}=true is set in the environment or .env).",
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=5.0, help="Seconds each step may take before the demo fails.")
    ] = 180.0,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the demo directory afterwards.")
    ] = False,
) -> None:
    """Chaos demo: two tiny services, the upstream killed, DevMesh detects, pings, diagnoses,
    proposes a restart, waits for your approval, restarts it through the node agent and
    verifies the fix. Everything runs on 127.0.0.1 and stops at the end (or on Ctrl-C).

    The demo's services are plain processes: a small supervisor and a `systemctl` shim on
    the agent's PATH stand in for systemd, so the agent's real `systemctl restart` argv
    restarts the demo's inventory process.
    """
    from devmesh.demo.scenario import Demo, DemoOptions

    settings = get_settings(ctx)
    if auto_approve:
        try:
            allowed = settings.actions.effective().allow_auto_approve
        except DevMeshError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from exc
        if not allowed:
            err_console.print(
                "[red]refused:[/red] --auto-approve approves a remediation without a person; "
                f"it is for tests only and needs {AUTO_APPROVE_SETTING}=true in the "
                "environment or .env. Run without it and approve from another terminal."
            )
            raise typer.Exit(2)
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="devmesh-demo-"))
    else:
        data_dir = data_dir.expanduser().resolve()
        if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
            err_console.print(
                f"[red]error:[/red] {escape(str(data_dir))} is not an empty directory; the demo "
                "needs a fresh one"
            )
            raise typer.Exit(2)
        data_dir.mkdir(parents=True, exist_ok=True)
    options = DemoOptions(
        data_dir=data_dir,
        auto_approve=auto_approve,
        timeout=timeout,
        keep=keep,
        chat_env=chat_environment(settings),
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = Demo(options, console).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code == 0 and not keep:  # the directory was new or empty: only demo files are in it
        shutil.rmtree(data_dir, ignore_errors=True)
        console.print(f"[dim]removed {escape(str(data_dir))} (--keep keeps it)[/dim]")
    elif code == 0:
        console.print(f"[dim]demo files kept in {escape(str(data_dir))}[/dim]")
    if code:
        raise typer.Exit(code)


def chat_environment(settings: Settings) -> dict[str, str]:
    """The configured chat bots' settings as ``DEVMESH_*`` variables for the demo server
    (empty when no bot has a token: the demo then pings the webhook only)."""
    env: dict[str, str] = {}
    for section, model in (("DISCORD", settings.discord), ("TELEGRAM", settings.telegram)):
        if model.token is None:
            continue
        dumped = json.loads(model.model_dump_json())
        for key, value in dumped.items():
            raw = getattr(model, key)
            if raw is None:
                continue
            if isinstance(raw, SecretStr):  # the dump masks secrets; the server needs them
                value = raw.get_secret_value()
            env[f"DEVMESH_{section}__{key.upper()}"] = (
                value if isinstance(value, str) else json.dumps(value)
            )
    return env
