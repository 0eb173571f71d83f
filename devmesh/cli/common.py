"""Helpers every ``devmesh`` command shares: settings from the context, store, miner, consoles."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from devmesh_core import services
from devmesh_core.config import Settings
from devmesh_core.errors import DevMeshError
from devmesh_core.runtime import Core
from devmesh_core.store import LogStore, open_store
from devmesh_core.templates.miner import TemplateMiner

console = Console()
err_console = Console(stderr=True)


def get_settings(ctx: typer.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


def store_for(settings: Settings) -> LogStore:
    settings.ensure_data_dir()
    return open_store(settings.effective_database_url)


def miner_for(settings: Settings, store: LogStore) -> TemplateMiner | None:
    """The template miner of this data dir, or None (said on stderr) when it can't be had."""
    try:
        return services.open_miner(settings, store)
    except DevMeshError as exc:
        err_console.print(
            f"[yellow]not mining templates:[/yellow] {exc}; "
            "run `devmesh templates backfill` once it is free"
        )
        return None


def fail(exc: Exception) -> NoReturn:
    """Say what went wrong on stderr and exit 1 (no traceback for an expected error)."""
    # soft_wrap: the terminal wraps, so paths and names in the message stay whole when copied
    err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(1) from exc


@contextmanager
def open_core(ctx: typer.Context) -> Iterator[Core]:
    """The store-backed ``Core`` of a command (no vector index), closed afterwards; a store
    that cannot be opened is a one-line error and exit 1."""
    try:
        core = Core.open(get_settings(ctx), vectors=False)
    except DevMeshError as exc:
        fail(exc)
    try:
        yield core
    finally:
        core.close()
