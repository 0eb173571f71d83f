"""``devmesh up``: the whole loop in one supervised process group on the embedded defaults.

The server process runs the API, receivers, miner, embedding worker, graph projection,
detectors, notifiers and configured bots (see ``devmesh.api.app``/``background``). Beside it,
``up`` runs this machine's node side — ``devmesh ship --agent`` over the local journal — as a
child process it starts once the API is healthy and stops (SIGTERM: the shipper commits or
spools its batch) before the server shuts down.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devmesh.cli.common import console
from devmesh_core import services
from devmesh_core.config import Settings
from devmesh_core.store.base import LogStore

LOCAL_NODE_TOKEN = "local-node"


def journal_readable(timeout: float = 10.0) -> tuple[bool, str]:
    """Whether this machine has a journal the current user can read, and why not."""
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        return False, "journalctl is not installed"
    try:
        out = subprocess.run(
            [journalctl, "-n", "1", "-o", "json", "--no-pager", "-q"],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"journalctl failed: {exc}"
    if out.returncode != 0:
        reason = out.stderr.decode(errors="replace").strip() or f"exit {out.returncode}"
        return False, f"journalctl cannot read the journal ({reason})"
    if not out.stdout.strip():
        return False, "the journal is empty or not readable by this user"
    return True, "journal readable"


def local_node_token(settings: Settings, store: LogStore) -> Path | None:
    """The token file the local node ships with, when the API needs tokens (any exist):
    created once, kept under the data dir (0600), its hash in the store like any token."""
    if not settings.api_tokens and not store.token_hashes():
        return None
    path = settings.data_dir / "local-node" / "token"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = services.create_token(store, LOCAL_NODE_TOKEN, host=socket.gethostname())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return path


def detect_sample(settings: Settings, store: LogStore) -> list[str]:
    """Run the detectors over the just-loaded sample (the server's loop starts after what is
    already stored), so a first ``devmesh incidents list`` shows what DevMesh made of it.
    Returns the ids and titles of the incidents opened."""
    from devmesh_core.detect.loop import DetectionRunner, build_detector, incident_service
    from devmesh_core.runtime import Core
    from devmesh_core.wiring import load_runbooks

    core = Core(settings, store)
    load_runbooks(core)
    DetectionRunner(core, build_detector(core), watermark=0).run_pass()
    return [f"{i.id} {i.title}" for i in incident_service(core).list("active")]


@dataclass
class LocalNode:
    """This machine's shipper + agent as a child process of ``devmesh up``."""

    settings: Settings
    base_url: str
    token_file: Path | None
    proc: subprocess.Popen[bytes] | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

    def command(self) -> list[str]:
        state = self.settings.data_dir / "local-node"
        argv = [
            sys.executable,
            "-m",
            "devmesh.cli.ship",
            "--server",
            self.base_url,
            "--state-dir",
            str(state),
            "--start",
            "tail",
            "--host",
            socket.gethostname(),
            "--agent",
        ]
        if self.token_file is not None:
            argv += ["--token-file", str(self.token_file)]
        return argv

    def start_when_healthy(self, timeout: float = 120.0) -> threading.Thread:
        """Wait (in a thread) for the API to answer, then start the shipper."""

        def run() -> None:
            if not wait_for_health(self.base_url, timeout, self._stopping):
                return
            log_path = self.settings.data_dir / "local-node" / "shipper.log"
            log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with log_path.open("ab") as log_file:
                self.proc = subprocess.Popen(
                    self.command(), stdout=log_file, stderr=subprocess.STDOUT
                )
            console.print(
                f"Local node: shipping this machine's journal, agent on (log: {log_path})"
            )

        thread = threading.Thread(target=run, name="devmesh-local-node", daemon=True)
        thread.start()
        return thread

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the shipper (it sends or spools the batch in hand and commits)."""
        self._stopping.set()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for_health(base_url: str, timeout: float, stop: threading.Event | None = None) -> bool:
    """Poll ``/health`` until it answers 200; False on timeout or when ``stop`` is set."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            return False
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{base_url}/health", timeout=2) as response,
        ):
            if response.status == 200:
                return True
        time.sleep(0.1)
    return False


def report_when_up(base_url: str, started: float, settings: Settings) -> threading.Thread:
    """Print how long start-up took and how to talk to DevMesh, once it answers."""

    def run() -> None:
        if not wait_for_health(base_url, 300):
            return
        took = time.monotonic() - started
        console.print(f"[green]DevMesh is up[/green] in {took:.1f} s: {base_url}")
        lines = []
        bots = [
            name
            for name, token in (
                ("Discord", settings.discord.token),
                ("Telegram", settings.telegram.token),
            )
            if token is not None
        ]
        if bots and settings.bots_enabled:
            lines.append(f"  chat: the {' and '.join(bots)} bot is running")
        else:
            lines.append(
                "  no chat bot configured (set DEVMESH_DISCORD__TOKEN or "
                "DEVMESH_TELEGRAM__TOKEN); meanwhile, in another terminal:"
            )
        lines += [
            "    devmesh incidents list",
            '    devmesh ask "why is nginx failing?"',
            "    devmesh logs --level warning --since 1h",
            f"    open {base_url}/ui (add a user: devmesh ui user add NAME --role approver)",
            f"    curl {base_url}/incidents",
        ]
        if not settings.notify.webhooks:
            lines.append(
                '  pings: set DEVMESH_NOTIFY__WEBHOOKS=\'[{"url": "...", "secret": "..."}]\''
                " for signed incident webhooks"
            )
        console.print("\n".join(lines))

    thread = threading.Thread(target=run, name="devmesh-up-report", daemon=True)
    thread.start()
    return thread
