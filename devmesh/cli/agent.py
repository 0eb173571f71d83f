"""``devmesh agent``: the node agent that runs approved remediation requests.

It polls the server (``--server``, with the node's API token) for approved requests for this
host, runs them as argv lists (never a shell), and reports exit code, output tail, duration
and a verification check. ``--config`` is the node's own actions YAML (same fields as
``DEVMESH_ACTIONS__*``: ``allow``, ``caches``, ``logs``, ``scripts_dir``, ``scripts``): with it
the node refuses anything its own allowlist does not name.

Also runnable as ``python -m devmesh.cli.agent`` (argparse; no typer at run time), the light
path for a systemd unit on a small node.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_CONFIG = Path("/etc/devmesh/actions.yaml")


def run_agent(
    server: str,
    *,
    token: str | None = None,
    token_file: Path | None = None,
    host: str | None = None,
    config: Path | None = None,
    dry_run: bool = False,
    poll_interval: float = 5.0,
    log_level: str = "INFO",
) -> int:
    """Build and run the agent until SIGTERM/SIGINT; return the exit code."""
    from devmesh.cli.ship import pick_token, prepare_run
    from devmesh_core.errors import ConfigError
    from ingest.agent import EX_CONFIG, build_agent
    from ingest.config import ShipperConfigError

    config = prepare_run(config, DEFAULT_CONFIG, log_level)
    try:
        agent = build_agent(
            server.rstrip("/"),
            pick_token(token, token_file),
            host or socket.gethostname(),
            config=config,
            dry_run=dry_run,
            poll_interval=poll_interval,
        )
    except (ConfigError, ShipperConfigError, ValueError, OSError) as exc:
        sys.stderr.write(f"devmesh agent: configuration error: {exc}\n")
        return EX_CONFIG

    def _stop(signum: int, frame: object) -> None:
        agent.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    return agent.run()


def agent(
    server: Annotated[str, typer.Option(envvar="DEVMESH_AGENT_SERVER", help="DevMesh API URL.")],
    token: Annotated[
        str | None,
        typer.Option(
            envvar="DEVMESH_AGENT_TOKEN",
            show_envvar=True,
            help="Node API token (visible in ps: prefer --token-file or the env var).",
        ),
    ] = None,
    token_file: Annotated[Path | None, typer.Option(help="File holding the token.")] = None,
    host: Annotated[
        str | None, typer.Option(help="This node's host name (default: the hostname).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help=f"Node actions YAML (default {DEFAULT_CONFIG})."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would run; run nothing.")
    ] = False,
    poll_interval: Annotated[float, typer.Option(min=0.05, help="Seconds between polls.")] = 5.0,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Run approved remediation requests for this node (pull-based; exit 78 on a bad token
    or config)."""
    code = run_agent(
        server,
        token=token,
        token_file=token_file,
        host=host,
        config=config,
        dry_run=dry_run,
        poll_interval=poll_interval,
        log_level=log_level,
    )
    if code:
        raise typer.Exit(code)


def build_parser() -> argparse.ArgumentParser:
    """The options of the light entry point (also what the systemd unit may pass)."""
    p = argparse.ArgumentParser(prog="python -m devmesh.cli.agent", description=agent.__doc__)
    p.add_argument("--server", default=os.environ.get("DEVMESH_AGENT_SERVER"), required=False)
    p.add_argument("--token", default=os.environ.get("DEVMESH_AGENT_TOKEN"))
    p.add_argument("--token-file", type=Path)
    p.add_argument("--host")
    p.add_argument("--config", "-c", type=Path)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--poll-interval", type=float, default=5.0)
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m devmesh.cli.agent``: the light entry point."""
    p = build_parser()
    args = p.parse_args(argv)
    if not args.server:
        p.error("--server (or DEVMESH_AGENT_SERVER) is required")
    return run_agent(
        args.server,
        token=args.token,
        token_file=args.token_file,
        host=args.host,
        config=args.config,
        dry_run=args.dry_run,
        poll_interval=args.poll_interval,
        log_level=args.log_level,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
