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
    JournalConfig,
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
) -> ShipperConfig:
    """The config file (if any) with command-line overrides applied, validated."""
    cfg = load_config(config) if config is not None else ShipperConfig()
    top: dict[str, Any] = {}
    journal: dict[str, Any] = {}
    if server is not None:
        top["server"] = server.rstrip("/")
    if token_file is not None:
        top["token"] = read_token_file(token_file)
    elif token is not None:
        top["token"] = token
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
        ("batch_max_events", batch_size), ("batch_max_seconds", batch_seconds),
        ("spool_max_mb", spool_mb), ("filters_file", filters), ("host", host),
        ("heartbeat_seconds", heartbeat_seconds), ("drain_timeout", drain_timeout),
    ):
        if value is not None:
            top[key] = value
    jcfg: JournalConfig = replace(cfg.journal, **journal) if journal else cfg.journal
    return replace(cfg, journal=jcfg, **top).validated()


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
        typer.Option(envvar="DEVMESH_SHIPPER_TOKEN", show_envvar=True,
                     help="API token (visible in ps: prefer --token-file or the env var)."),
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Cursor and spool directory.")
    ] = None,
    file: Annotated[
        list[Path] | None,
        typer.Option("--file", help="Read journal file(s) instead of the system journal."),
    ] = None,
    directory: Annotated[
        Path | None, typer.Option(help="Read a journal directory instead of the system journal.")
    ] = None,
    follow: Annotated[
        bool | None,
        typer.Option("--follow/--no-follow",
                     help="Keep shipping new entries, or stop once everything is shipped."),
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Without a saved cursor: head (all) or tail (new only).")
    ] = None,
    journal_format: Annotated[
        str | None,
        typer.Option("--format", help="journalctl output: json (default) or export (faster)."),
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
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Ship this node's journald entries to the DevMesh server, each exactly once.

    Reads with journalctl, filters noise, batches, POSTs to /ingest/logs and commits the
    journal cursor only after the server (or the on-disk spool) has the batch. Exit codes:
    0 done, 1 journal unreadable, 75 server unreachable past --drain-timeout, 78 bad config.
    """
    code = run_shipper(
        config, log_level=log_level, server=server, token=token, token_file=token_file,
        state_dir=state_dir, files=file, directory=directory, follow=follow, start=start,
        journal_format=journal_format, batch_size=batch_size, batch_seconds=batch_seconds,
        spool_mb=spool_mb, filters=filters,
        host=host, heartbeat_seconds=heartbeat_seconds, drain_timeout=drain_timeout,
    )
    if code:
        raise typer.Exit(code)


def run_shipper(config: Path | None, *, log_level: str = "INFO", **overrides: Any) -> int:
    """Configure logging (unless the main CLI did), build the config, run; return the exit code."""
    import structlog

    from devmesh_core.log import configure_logging
    from ingest.shipper import EX_CONFIG, Shipper

    if not structlog.is_configured():
        configure_logging("auto", log_level)
    if config is None and DEFAULT_CONFIG.exists():
        config = DEFAULT_CONFIG
    try:
        cfg = build_config(config, **overrides)
        rules = ReloadableFilter(cfg.filters_file)
    except (ShipperConfigError, FilterConfigError) as exc:
        sys.stderr.write(f"devmesh ship: configuration error: {exc}\n")
        return EX_CONFIG
    return Shipper(cfg, filters=rules).run()


def _parser() -> argparse.ArgumentParser:
    """The same options as :func:`ship`, for the light entry point (no typer at run time:
    typer pulls in pydantic when it builds a command, about 10 MB of RSS on a node)."""
    p = argparse.ArgumentParser(prog="python -m devmesh.cli.ship", description=ship.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", type=Path)
    p.add_argument("--server")
    p.add_argument("--token-file", type=Path)
    p.add_argument("--token", default=os.environ.get("DEVMESH_SHIPPER_TOKEN"),
                   help="default: $DEVMESH_SHIPPER_TOKEN")
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
