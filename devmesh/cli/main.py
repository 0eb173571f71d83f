"""The ``devmesh`` command (typer). Thin: parse arguments, call ``devmesh_core``, print."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from devmesh.cli.actions import app as actions_app
from devmesh.cli.actions import audit as audit_command
from devmesh.cli.agent import agent as agent_command
from devmesh.cli.ask import ask_command, make_askable
from devmesh.cli.common import console, err_console, get_settings, miner_for, store_for
from devmesh.cli.config import app as config_app
from devmesh.cli.demo import demo as demo_command
from devmesh.cli.discord_bot import discord_bot as discord_command
from devmesh.cli.event import app as event_app
from devmesh.cli.graph import app as graph_app
from devmesh.cli.incidents import app as incidents_app
from devmesh.cli.runbooks import app as runbooks_app
from devmesh.cli.search import search, similar
from devmesh.cli.ship import ship
from devmesh.cli.telegram_bot import telegram as telegram_command
from devmesh.cli.templates import app as templates_app
from devmesh.cli.ui import app as ui_app
from devmesh_core import services
from devmesh_core.config import Settings
from devmesh_core.errors import DevMeshError
from devmesh_core.log import configure_logging, get_logger
from devmesh_core.models import Level
from devmesh_core.store import LogQuery
from devmesh_core.timeparse import parse_time

app = typer.Typer(
    name="devmesh",
    help="DevMesh: local-first incident triage for homelabs and small fleets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
token_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(templates_app, name="templates")
app.add_typer(graph_app, name="graph")
app.command("search")(search)
app.command("ask")(ask_command)
app.command("ship")(ship)
app.command("similar")(similar)
app.add_typer(event_app, name="event")
app.add_typer(actions_app, name="actions")
app.command("audit")(audit_command)
app.command("agent")(agent_command)
app.add_typer(incidents_app, name="incidents")
app.add_typer(runbooks_app, name="runbooks")
app.add_typer(ui_app, name="ui")
app.add_typer(config_app, name="config")
app.command("telegram")(telegram_command)
app.command("discord")(discord_command)
app.command("demo")(demo_command)


_LEVEL_STYLE = {
    Level.DEBUG: "dim",
    Level.INFO: "",
    Level.WARNING: "yellow",
    Level.ERROR: "red",
    Level.CRITICAL: "bold white on red",
}


@app.callback()
def main(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None, typer.Option(help="State directory (env DEVMESH_DATA_DIR).")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="sqlite:///path or mysql://… (env DEVMESH_DATABASE_URL).")
    ] = None,
    log_format: Annotated[
        str | None, typer.Option(help="auto, json or console (env DEVMESH_LOG_FORMAT).")
    ] = None,
) -> None:
    """Build the settings once; every command receives them through the context."""
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if database_url is not None:
        overrides["database_url"] = database_url
    if log_format is not None:
        overrides["log_format"] = log_format
    try:
        settings = Settings(**overrides)
    except Exception as exc:  # pydantic's ValidationError: show it, not a traceback
        err_console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc
    configure_logging(settings.log_format, settings.log_level)
    ctx.obj = settings


def _uvicorn_server() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGINT/SIGTERM once its graceful shutdown is done (so that a
        parent sees the signal); by then DevMesh has stopped everything cleanly, so the
        command exits 0 instead of dying of the signal with a traceback."""

        async def _serve(self, sockets: Any = None) -> None:
            await super()._serve(sockets)
            self._captured_signals.clear()

    return Server


def _run_server(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from devmesh.api.app import create_app, is_loopback

    _Server = _uvicorn_server()
    log = get_logger("devmesh.serve")
    store = store_for(settings)
    try:
        has_tokens = bool(settings.api_tokens) or bool(store.token_hashes())
        if not has_tokens and not is_loopback(host):
            log.warning(
                "no_api_token_binding_loopback",
                requested_host=host,
                hint="create one with `devmesh token create NAME` to listen on other addresses",
            )
            host = "127.0.0.1"
        elif not has_tokens:
            log.info("no_api_token", note="ingest is open to local clients only")
        log.info("serving", url=f"http://{host}:{port}", store=store.backend)
        config = uvicorn.Config(
            create_app(settings, store), host=host, port=port, log_config=None, access_log=False
        )
        _Server(config).run()
    finally:
        store.close()


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default from settings).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
) -> None:
    """Run the HTTP API (ingest and query)."""
    settings = get_settings(ctx)
    _run_server(
        settings, host or settings.api_host, port if port is not None else settings.api_port
    )


@app.command()
def up(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    sample: Annotated[
        bool, typer.Option(help="Load the bundled sample into an empty store.")
    ] = True,
    local_node: Annotated[
        bool,
        typer.Option(help="Ship this machine's journal and run its agent, when readable."),
    ] = True,
) -> None:
    """Start the whole loop on the embedded defaults: API, receivers, miner, embeddings,
    graph, detectors, notifiers, configured bots, and this machine's node agent."""
    from devmesh.cli import up as up_parts

    started = time.monotonic()
    settings = get_settings(ctx)
    bind = host or settings.api_host
    bind_port = port if port is not None else settings.api_port
    base_url = f"http://{'127.0.0.1' if bind in ('0.0.0.0', '::') else bind}:{bind_port}"
    with store_for(settings) as store:
        if sample and store.count() == 0:
            miner = miner_for(settings, store)
            try:
                report = services.load_sample(store, miner=miner)
            finally:
                if miner is not None:
                    miner.close()
            console.print(f"Loaded the bundled sample: {report.accepted} events.")
            opened = up_parts.detect_sample(settings, store)
            if opened:
                console.print(f"Detected in the sample: {', '.join(opened)}.")
        node: up_parts.LocalNode | None = None
        if local_node:
            readable, why = up_parts.journal_readable()
            if readable:
                node = up_parts.LocalNode(
                    settings, base_url, up_parts.local_node_token(settings, store)
                )
            else:
                console.print(
                    f"Local node: not shipping this machine's journal: {why}. "
                    "Ship log files with `devmesh ship --path GLOB --service NAME`."
                )
    console.print(f"Starting DevMesh: data in {settings.data_dir} …")
    up_parts.report_when_up(base_url, started, settings)
    if node is not None:
        node.start_when_healthy()
    try:
        _run_server(settings, bind, bind_port)
    finally:
        if node is not None:
            node.stop()


@app.command()
def logs(
    ctx: typer.Context,
    service: Annotated[str | None, typer.Option("--service", "-s")] = None,
    host: Annotated[str | None, typer.Option("--host", "-H")] = None,
    level: Annotated[str | None, typer.Option("--level", "-l", help="Minimum level.")] = None,
    since: Annotated[str | None, typer.Option(help="15m, 2h, 3d or an ISO timestamp.")] = None,
    until: Annotated[str | None, typer.Option(help="15m, 2h, 3d or an ISO timestamp.")] = None,
    text: Annotated[str | None, typer.Option("--text", "-t", help="Substring.")] = None,
    trace_id: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 50,
    order: Annotated[str, typer.Option(help="desc (newest first) or asc.")] = "desc",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Query stored logs from the terminal."""
    settings = get_settings(ctx)
    try:
        if order not in ("desc", "asc"):
            raise typer.BadParameter("order must be desc or asc")
        direction: Literal["desc", "asc"] = "desc" if order == "desc" else "asc"
        query = LogQuery(
            service=service,
            host=host,
            level=Level.parse(level) if level else None,
            start_time=parse_time(since) if since else None,
            end_time=parse_time(until) if until else None,
            text=text,
            trace_id=trace_id,
            limit=limit,
            order=direction,
        )
        with store_for(settings) as store:
            page = store.query(query)
    except (DevMeshError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        for event in page.events:
            sys.stdout.write(orjson.dumps(event.to_api()).decode() + "\n")
        return
    table = Table(show_lines=False, header_style="bold")
    for column in ("time (UTC)", "level", "host", "service", "message"):
        table.add_column(column, overflow="fold")
    for event in page.events:
        table.add_row(
            event.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            f"[{_LEVEL_STYLE[event.level]}]{event.level.value}[/]"
            if _LEVEL_STYLE[event.level]
            else event.level.value,
            escape(event.host),
            escape(event.service),
            escape(event.message if len(event.message) <= 500 else event.message[:500] + "…"),
            end_section=False,
        )
    console.print(table)
    console.print(f"[dim]{len(page.events)} event(s){' — more available' if page.next else ''}[/]")


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    batch_size: Annotated[int, typer.Option(min=1, max=10_000)] = 1_000,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any line was rejected.")] = False,
) -> None:
    """Bulk-load a JSONL file of log objects; malformed lines are reported, the rest loaded."""
    settings = get_settings(ctx)
    with (
        store_for(settings) as store,
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        ) as bar,
    ):
        task = bar.add_task(f"importing {file.name}", total=file.stat().st_size)
        miner = miner_for(settings, store)
        try:
            report = services.import_jsonl(
                store,
                file,
                batch_size=batch_size,
                progress=lambda n: bar.advance(task, n),
                miner=miner,
            )
        except DevMeshError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
        finally:
            if miner is not None:
                miner.close()
    if report.accepted:
        make_askable(settings)
    for rejection in report.rejected[:50]:
        err_console.print(f"[yellow]line {rejection.index}:[/yellow] {rejection.error}")
    if len(report.rejected) > 50:
        err_console.print(f"… and {len(report.rejected) - 50} more rejected line(s)")
    console.print(
        f"stored {report.accepted}, duplicates {report.duplicates}, rejected {len(report.rejected)}"
    )
    if strict and report.rejected:
        raise typer.Exit(1)


@app.command()
def retention(
    ctx: typer.Context,
    days: Annotated[int | None, typer.Option(min=1, help="Keep this many days.")] = None,
) -> None:
    """Delete events older than the retention period (default 90 days, from settings)."""
    settings = get_settings(ctx)
    keep = days or settings.retention_days
    with store_for(settings) as store:
        deleted = services.apply_retention(store, keep)
    console.print(f"deleted {deleted} event(s) older than {keep} day(s)")


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who or what uses it.")],
    host: Annotated[
        str | None,
        typer.Option(
            help="Make it a node token bound to this host: its agent may only poll and "
            "report that host's actions, and it can never propose or approve any."
        ),
    ] = None,
) -> None:
    """Make a new API token. It is printed once; only its hash is stored."""
    with store_for(get_settings(ctx)) as store:
        token = services.create_token(store, name, host=host)
    err_console.print(f"token for {name!r} (shown once, keep it secret):")
    print(token)


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Revoke every token with this name."""
    with store_for(get_settings(ctx)) as store:
        count = store.revoke_token(name)
    console.print(f"revoked {count} token(s)")
    if not count:
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    app()
