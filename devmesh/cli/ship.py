"""``devmesh ship``: run the node shipper (journald → DevMesh server).

Registered on the main CLI as ``app.command()(ship)``. It can also run on its own as
``python -m devmesh.cli.ship`` — what the systemd unit does, because the full ``devmesh``
CLI imports the store and server stack, which a node agent does not need (RSS budget 60 MB).
Nothing here touches the store: the node agent speaks only HTTP to the server.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from ingest.config import (
    FileInput,
    JournalConfig,
    MultilineConfig,
    ShipperConfig,
    ShipperConfigError,
    load_config,
    read_token_file,
)
from ingest.filters import FilterConfigError, ReloadableFilter

DEFAULT_CONFIG = Path("/etc/devmesh/shipper.yaml")


def build_config(
    config: Path | None,
    *,
    server: str | None = None,
    token: str | None = None,
    token_file: Path | None = None,
    state_dir: Path | None = None,
    files: list[Path] | None = None,
    directory: Path | None = None,
    follow: bool | None = None,
    start: str | None = None,
    journal_format: str | None = None,
    batch_size: int | None = None,
    batch_seconds: float | None = None,
    spool_mb: float | None = None,
    filters: Path | None = None,
    host: str | None = None,
    heartbeat_seconds: float | None = None,
    drain_timeout: float | None = None,
    paths: list[str] | None = None,
    service: str | None = None,
    multiline_start: str | None = None,
    multiline: bool | None = None,
    multiline_timeout: float | None = None,
    max_line_bytes: int | None = None,
    poll_interval: float | None = None,
    rotate_wait: float | None = None,
    partial_line_seconds: float | None = None,
) -> ShipperConfig:
    """The config file (if any) with command-line overrides applied, validated.

    ``paths`` (``--path``, globs) replace the config's ``files:`` with one entry per glob
    under ``service``; they also switch the journal off unless ``--file``/``--directory``
    name one explicitly (``devmesh ship --path ...`` ships those files, nothing else).
    """
    cfg = load_config(config) if config is not None else ShipperConfig()
    top: dict[str, Any] = {}
    journal: dict[str, Any] = {}
    if server is not None:
        top["server"] = server.rstrip("/")
    chosen = pick_token(token, token_file)
    if chosen is not None:
        top["token"] = chosen
    if state_dir is not None:
        top["state_dir"] = state_dir
    if files:
        journal.update(mode="file", files=tuple(files))
    elif directory is not None:
        journal.update(mode="directory", directory=directory)
    if follow is not None:
        journal["follow"] = follow
    if start is not None:
        if start not in ("head", "tail"):
            raise ShipperConfigError(f"--start must be head or tail, got {start!r}")
        journal["start"] = start
    if journal_format is not None:
        if journal_format not in ("json", "export"):
            raise ShipperConfigError(f"--format must be json or export, got {journal_format!r}")
        journal["format"] = journal_format
    for key, value in (
        ("batch_max_events", batch_size),
        ("batch_max_seconds", batch_seconds),
        ("spool_max_mb", spool_mb),
        ("filters_file", filters),
        ("host", host),
        ("heartbeat_seconds", heartbeat_seconds),
        ("drain_timeout", drain_timeout),
    ):
        if value is not None:
            top[key] = value
    if paths:
        top["files"] = _file_inputs(
            paths,
            service,
            start=start,
            multiline_start=multiline_start,
            multiline=multiline,
            multiline_timeout=multiline_timeout,
            max_line_bytes=max_line_bytes,
        )
        if not files and directory is None:
            journal["enabled"] = False
    elif service is not None:
        raise ShipperConfigError("--service names the service of --path files: add --path")
    tail: dict[str, float] = {}
    for key, value in (
        ("poll_interval", poll_interval),
        ("rotate_wait", rotate_wait),
        ("partial_line_timeout", partial_line_seconds),
    ):
        if value is not None:
            tail[key] = value
    if tail:
        top["tail"] = replace(cfg.tail, **tail)
    jcfg: JournalConfig = replace(cfg.journal, **journal) if journal else cfg.journal
    return replace(cfg, journal=jcfg, **top).validated()


def pick_token(token: str | None, token_file: Path | None) -> str | None:
    """The API token a node program uses: the token file's when one is named (it stays out of
    ``ps``), else ``--token``/the env var, else None (the config file's, if any, stays)."""
    return read_token_file(token_file) if token_file is not None else token


def prepare_run(config: Path | None, default_config: Path, log_level: str) -> Path | None:
    """What every node program (``devmesh ship``, ``devmesh agent``) does before building its
    config: configure logging unless the main CLI already did, and fall back to the default
    config file when none was named and it exists. Returns the config file to use."""
    import structlog

    from devmesh_core.log import configure_logging

    if not structlog.is_configured():
        configure_logging("auto", log_level)
    if config is None and default_config.exists():
        return default_config
    return config


def _file_inputs(
    paths: list[str],
    service: str | None,
    *,
    start: str | None,
    multiline_start: str | None,
    multiline: bool | None,
    multiline_timeout: float | None,
    max_line_bytes: int | None,
) -> tuple[FileInput, ...]:
    """``--path`` globs as ``files:`` entries (absolute, so a restart elsewhere finds them)."""
    import re

    if not service or not service.strip():
        raise ShipperConfigError("--path needs --service NAME (the service the lines belong to)")
    if multiline_start is not None:
        try:
            re.compile(multiline_start)
        except re.error as exc:
            raise ShipperConfigError(f"--multiline-start: bad regex: {exc}") from exc
    ml = MultilineConfig(enabled=multiline is not False, start=multiline_start)
    if multiline_timeout is not None:
        ml = replace(ml, timeout=multiline_timeout)
    entry = FileInput(
        path="", service=service.strip(), start="tail" if start == "tail" else "head", multiline=ml
    )
    if max_line_bytes is not None:
        entry = replace(entry, max_line_bytes=max_line_bytes)
    return tuple(replace(entry, path=os.path.abspath(os.path.expanduser(p))) for p in paths)


def ship(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help=f"YAML config (default {DEFAULT_CONFIG} if present)."),
    ] = None,
    server: Annotated[str | None, typer.Option(help="DevMesh API URL.")] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="File holding the API token (preferred over --token).")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="DEVMESH_SHIPPER_TOKEN",
            show_envvar=True,
            help="API token (visible in ps: prefer --token-file or the env var).",
        ),
    ] = None,
    state_dir: Annotated[Path | None, typer.Option(help="Cursor and spool directory.")] = None,
    file: Annotated[
        list[Path] | None,
        typer.Option("--file", help="Read journal file(s) instead of the system journal."),
    ] = None,
    directory: Annotated[
        Path | None, typer.Option(help="Read a journal directory instead of the system journal.")
    ] = None,
    follow: Annotated[
        bool | None,
        typer.Option(
            "--follow/--no-follow",
            help="Keep shipping new entries, or stop once everything is shipped.",
        ),
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Without a saved cursor: head (all) or tail (new only).")
    ] = None,
    journal_format: Annotated[
        str | None,
        typer.Option("--format", help="journalctl output: export (default, faster) or json."),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Events per batch.")] = None,
    batch_seconds: Annotated[
        float | None, typer.Option(help="Longest wait to fill a batch.")
    ] = None,
    spool_mb: Annotated[float | None, typer.Option(help="Spool size cap in MB.")] = None,
    filters: Annotated[
        Path | None, typer.Option(help="Noise filter YAML (re-read on SIGHUP).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Host name for the node's own events.")] = None,
    heartbeat_seconds: Annotated[float | None, typer.Option(help="Heartbeat period.")] = None,
    drain_timeout: Annotated[
        float | None,
        typer.Option(help="With --no-follow: exit 75 if the server stays away this long."),
    ] = None,
    path: Annotated[
        list[str] | None,
        typer.Option(
            "--path",
            help="Tail plain log files (a glob; repeatable) instead of the "
            "journal, surviving rotation. Needs --service.",
        ),
    ] = None,
    service: Annotated[
        str | None, typer.Option(help="Service name of the --path files' lines.")
    ] = None,
    multiline_start: Annotated[
        str | None,
        typer.Option(
            help="Regex of a record's first line (other lines join the event before "
            "them). Default: stack-trace lines join the line before them."
        ),
    ] = None,
    multiline: Annotated[
        bool | None,
        typer.Option("--multiline/--no-multiline", help="Join stack traces (default on)."),
    ] = None,
    multiline_timeout: Annotated[
        float | None, typer.Option(help="Seconds before the last multi-line event is shipped.")
    ] = None,
    max_line_bytes: Annotated[
        int | None, typer.Option(help="Cut longer lines here (with a marker).")
    ] = None,
    poll_interval: Annotated[
        float | None, typer.Option(help="Seconds between checks of the --path files.")
    ] = None,
    rotate_wait: Annotated[
        float | None,
        typer.Option(help="Seconds a rotated-away file stays open after its last growth."),
    ] = None,
    partial_line_seconds: Annotated[
        float | None,
        typer.Option(help="Seconds before a last line without newline is shipped as it is."),
    ] = None,
    agent: Annotated[
        bool,
        typer.Option(
            "--agent",
            help="Also run the remediation agent (polls for approved "
            "actions for --host; node allowlist /etc/devmesh/actions.yaml).",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Ship this node's journald entries (or, with --path, log files) to DevMesh, each once.

    Reads with journalctl, filters noise, batches, POSTs to /ingest/logs and commits the
    journal cursor only after the server (or the on-disk spool) has the batch. --path GLOB
    --service NAME tails plain log files instead (rotation, multi-line events, per-file
    checkpoints: see ingest/tail.py). Exit codes:
    0 done, 1 journal unreadable, 75 server unreachable past --drain-timeout, 78 bad config.
    """
    code = run_shipper(
        config,
        log_level=log_level,
        agent=agent,
        server=server,
        token=token,
        token_file=token_file,
        state_dir=state_dir,
        files=file,
        directory=directory,
        follow=follow,
        start=start,
        journal_format=journal_format,
        batch_size=batch_size,
        batch_seconds=batch_seconds,
        spool_mb=spool_mb,
        filters=filters,
        host=host,
        heartbeat_seconds=heartbeat_seconds,
        drain_timeout=drain_timeout,
        paths=path,
        service=service,
        multiline_start=multiline_start,
        multiline=multiline,
        multiline_timeout=multiline_timeout,
        max_line_bytes=max_line_bytes,
        poll_interval=poll_interval,
        rotate_wait=rotate_wait,
        partial_line_seconds=partial_line_seconds,
    )
    if code:
        raise typer.Exit(code)


def run_shipper(
    config: Path | None, *, log_level: str = "INFO", agent: bool = False, **overrides: Any
) -> int:
    """Configure logging (unless the main CLI did), build the config, run; return the exit code."""
    from ingest.shipper import EX_CONFIG, Shipper

    config = prepare_run(config, DEFAULT_CONFIG, log_level)
    try:
        cfg = build_config(config, **overrides)
        rules = ReloadableFilter(cfg.filters_file)
    except (ShipperConfigError, FilterConfigError) as exc:
        sys.stderr.write(f"devmesh ship: configuration error: {exc}\n")
        return EX_CONFIG
    if agent:  # the remediation agent (ingest/agent.py) polls in a thread beside shipping
        from devmesh.cli.agent import DEFAULT_CONFIG as ACTIONS_CONFIG
        from ingest.agent import build_agent, start_in_thread

        start_in_thread(
            build_agent(
                cfg.server,
                cfg.token,
                cfg.node_host,
                config=ACTIONS_CONFIG if ACTIONS_CONFIG.exists() else None,
            )
        )
    return Shipper(cfg, filters=rules).run()


def _parser() -> argparse.ArgumentParser:
    """The same options as :func:`ship`, for the light entry point (no typer at run time:
    typer pulls in pydantic when it builds a command, about 10 MB of RSS on a node)."""
    p = argparse.ArgumentParser(
        prog="python -m devmesh.cli.ship",
        description=ship.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", "-c", type=Path)
    p.add_argument("--server")
    p.add_argument("--token-file", type=Path)
    p.add_argument(
        "--token",
        default=os.environ.get("DEVMESH_SHIPPER_TOKEN"),
        help="default: $DEVMESH_SHIPPER_TOKEN",
    )
    p.add_argument("--state-dir", type=Path)
    p.add_argument("--file", type=Path, action="append", dest="files")
    p.add_argument("--directory", type=Path)
    p.add_argument("--follow", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--start", choices=("head", "tail"))
    p.add_argument("--format", dest="journal_format", choices=("json", "export"))
    p.add_argument("--batch-size", type=int)
    p.add_argument("--batch-seconds", type=float)
    p.add_argument("--spool-mb", type=float)
    p.add_argument("--filters", type=Path)
    p.add_argument("--host")
    p.add_argument("--heartbeat-seconds", type=float)
    p.add_argument("--drain-timeout", type=float)
    p.add_argument("--path", action="append", dest="paths")
    p.add_argument("--service")
    p.add_argument("--multiline-start")
    p.add_argument("--multiline", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--multiline-timeout", type=float)
    p.add_argument("--max-line-bytes", type=int)
    p.add_argument("--poll-interval", type=float)
    p.add_argument("--rotate-wait", type=float)
    p.add_argument("--partial-line-seconds", type=float)
    p.add_argument("--agent", action="store_true", help="also run the remediation agent")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m devmesh.cli.ship``: the light path the systemd unit uses (RSS < 60 MB)."""
    args = vars(_parser().parse_args(argv))
    config = args.pop("config")
    log_level = args.pop("log_level")
    return run_shipper(config, log_level=log_level, **args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
