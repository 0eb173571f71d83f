"""``devmesh event``: write and collect node event files. Thin: parse, call ``ingest.events``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from devmesh.cli.common import console, err_console
from ingest.client import FatalConfigError, HttpPoster, IngestClient, TransientError
from ingest.events import SEVERITIES, EventCollector, EventError, write_event

app = typer.Typer(help="Node event files of the homelab event system.", no_args_is_help=True)

RootOption = Annotated[
    Path, typer.Option("--root", envvar="DEVMESH_EVENT_ROOT", help="EVENT_ROOT directory.")
]


@app.command()
def emit(
    event_type: Annotated[str, typer.Argument(metavar="TYPE", help="e.g. deployment_failed")],
    root: RootOption,
    node: Annotated[str, typer.Option(help="This node's name.")],
    service: Annotated[str | None, typer.Option()] = None,
    severity: Annotated[str, typer.Option(help=", ".join(SEVERITIES))] = "info",
    source: Annotated[str, typer.Option(help="What emits it (deploy, healthcheck, …).")] = "cli",
    correlation_id: Annotated[str | None, typer.Option()] = None,
    payload: Annotated[str, typer.Option(help="A JSON object.")] = "{}",
) -> None:
    """Write one event file atomically and print its path."""
    try:
        data: Any = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        err_console.print(f"[red]payload:[/red] not valid JSON: {exc}")
        raise typer.Exit(2) from exc
    try:
        path = write_event(
            root,
            event_type,
            node=node,
            service=service,
            severity=severity,
            source=source,
            correlation_id=correlation_id,
            payload=data,
        )
    except EventError as exc:
        err_console.print(f"[red]invalid event:[/red] {exc}")
        raise typer.Exit(2) from exc
    print(path)


@app.command()
def collect(
    root: RootOption,
    server: Annotated[str, typer.Option(envvar="DEVMESH_SERVER", help="DevMesh API URL.")],
    token: Annotated[str | None, typer.Option(envvar="DEVMESH_TOKEN")] = None,
    state: Annotated[Path | None, typer.Option(help="Where to remember what was sent.")] = None,
    follow: Annotated[bool, typer.Option(help="Keep collecting every --interval.")] = False,
    interval: Annotated[float, typer.Option(min=0.5)] = 5.0,
) -> None:
    """Send event files not sent yet (all days, so an offline node catches up)."""
    collector = EventCollector(
        root,
        state or root / ".devmesh-collector.json",
        IngestClient(HttpPoster(server, token, timeout=30)),
    )
    while True:
        try:
            stats = collector.run_once()
            console.print(
                f"sent {stats.sent}, duplicates {stats.duplicates}, "
                f"invalid {stats.invalid}, refused {stats.refused}"
            )
        except FatalConfigError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
        except TransientError as exc:
            err_console.print(f"[yellow]server unavailable:[/yellow] {exc}; will retry")
            if not follow:
                raise typer.Exit(1) from exc
        if not follow:
            return
        time.sleep(interval)
