"""``devmesh demo``: a small, real scenario on this machine that closes DevMesh's whole loop.

What runs (all on 127.0.0.1, all state in one fresh demo directory):

* a DevMesh server (``devmesh serve``, a subprocess) with a 1 s detection interval, a
  topology file declaring ``demo-shop`` DEPENDS_ON ``demo-inventory``, an actions allowlist
  that permits ``restart_unit`` of ``demo-inventory.service`` on this host only, the
  ``cli:<you>`` identity as approver, and a webhook notifier pointing at
  :class:`~devmesh.demo.receivers.WebhookReceiver` (HMAC-checked);
* two tiny real services (:mod:`devmesh.demo.apps`): ``demo-inventory`` and ``demo-shop`` in
  front of it, each writing a plain log file, under :class:`~devmesh.demo.units.UnitSupervisor`
  — **the demo's stand-in for systemd**, which also writes the lines systemd would journal
  when a unit's process dies (``demo-inventory.service: Main process exited,
  code=killed, status=9/KILL``) into that unit's log — plus a load generator on the shop;
* the node side, one ``devmesh ship`` process tailing both log files with the remediation
  agent on, with a ``systemctl`` shim (:mod:`devmesh.demo.systemctl`) first on its ``PATH``:
  **the shim stands in for systemd's systemctl in the demo**, so the agent's real
  ``systemctl restart demo-inventory.service`` (an argv, as on any node) restarts the demo's
  inventory process instead of a systemd unit.

Then the chaos trigger (SIGKILL to the inventory; the shop starts logging ``connect() failed
(111: Connection refused)`` and answering 502) and DevMesh's part, each step checked through
its public API: one incident opened, a signed webhook ping, a diagnosis with cited evidence,
the runbook's restart proposed, a confirmation (``devmesh actions approve ID`` from another
terminal, or ``--auto-approve`` when the settings allow it), the agent running the restart,
the recovery verified, the fix recorded (incident mitigated; the fix recalled from the
knowledge graph, which the diagnosis opened), the audit trail. Every step is
printed and written to ``<demo dir>/demo-steps.jsonl`` (:mod:`devmesh.demo.steps`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from devmesh.demo.receivers import LoadGenerator, WebhookReceiver
from devmesh.demo.steps import DemoFailed, StepLog
from devmesh.demo.units import UnitError, UnitSupervisor
from devmesh_core.actions.service import cli_identity

T = TypeVar("T")

INVENTORY = "demo-inventory"
SHOP = "demo-shop"
INVENTORY_UNIT = f"{INVENTORY}.service"
SHOP_UNIT = f"{SHOP}.service"
STEPS_FILE = "demo-steps.jsonl"
BASELINE_SECONDS = 4.0
RECOVERED_STREAK = 8  # consecutive 200s from the shop after the restart (2 s of traffic)
_HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def node_name() -> str:
    """This machine's host name as DevMesh will see it (a safe fallback if it has one that
    is not a valid DevMesh host name)."""
    name = socket.gethostname()
    return name if _HOST_RE.fullmatch(name) else "devmesh-demo"


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def devmesh_command() -> list[str]:
    """How to run the ``devmesh`` CLI from another terminal."""
    if shutil.which("devmesh"):
        return ["devmesh"]
    sibling = Path(sys.executable).with_name("devmesh")
    if sibling.exists():
        return [str(sibling)]
    return [sys.executable, "-m", "devmesh.cli.main"]


@dataclass
class DemoOptions:
    """What ``devmesh demo`` was asked for. ``timeout`` bounds each step (seconds)."""

    data_dir: Path
    auto_approve: bool = False
    timeout: float = 180.0
    keep: bool = False
    # The user's chat bot settings (DEVMESH_DISCORD__*/DEVMESH_TELEGRAM__* as environment
    # variables): when a token is among them the demo server runs that bot, so the ping,
    # diagnosis and Confirm/Cancel buttons also reach chat.
    chat_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Child:
    """A subprocess the demo started (server, shipper) with its output file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 15) -> str:
        """The last lines of its output (for failure messages)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Demo:
    """The scenario (see the module docstring). :meth:`run` returns the exit code: 0 when
    the loop closed, 1 when a step failed (named in the output and the steps file), 130
    when interrupted. Everything started is stopped in every case."""

    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.opts = options
        self.console = console
        self.dir = options.data_dir
        self.steps = StepLog(console, self.dir / STEPS_FILE)
        self.host = node_name()
        self.user_identity = cli_identity()
        self.secret = secrets.token_hex(16)
        self.webhook: WebhookReceiver | None = None
        self.server: Child | None = None
        self.shipper: Child | None = None
        self.units: UnitSupervisor | None = None
        self.load: LoadGenerator | None = None
        self.http: httpx.Client | None = None
        self.base = ""
        self.incident_id: str | None = None
        self.request_id: str | None = None
        self.chaos_at = 0.0
        self.executed_at = 0.0

    # -- plumbing -------------------------------------------------------------------------
    @property
    def server_dir(self) -> Path:
        """The demo server's ``DEVMESH_DATA_DIR``."""
        return self.dir / "server"

    @property
    def actions_file(self) -> Path:
        """The server's actions config (allowlist and roles)."""
        return self.dir / "actions.yaml"

    def api(self, method: str, path: str, step: str, **kwargs: Any) -> Any:
        """Call the demo server; ``DemoFailed`` naming ``step`` on an error answer."""
        assert self.http is not None
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DemoFailed(step, f"{method} {path} failed: {exc}", transient=True) from exc
        if response.status_code >= 400:
            raise DemoFailed(
                step,
                f"{method} {path} answered {response.status_code}: {response.text[:300]}",
                transient=response.status_code >= 500,
            )
        return response.json() if response.content else None

    def wait(
        self, step: str, what: str, probe: Callable[[], T | None], *, interval: float = 0.25
    ) -> T:
        """Poll ``probe`` until it returns something (not ``None``/``False``) or the step's
        timeout passes (``DemoFailed``). A probe's transient failure (no answer, a 5xx from
        a busy server) is retried; fails early if the server or shipper died."""
        deadline = time.monotonic() + self.opts.timeout
        last_error = ""
        while True:
            try:
                value = probe()
            except DemoFailed as exc:
                if not exc.transient:
                    raise
                value, last_error = None, f" (last error: {exc.message})"
            if value is not None and value is not False:
                return value
            for child in (self.server, self.shipper):
                if child is not None and child.proc.poll() is not None:
                    raise DemoFailed(
                        step,
                        f"{child.name} exited with code {child.proc.returncode} while waiting "
                        f"for {what}; its last output:\n{child.tail()}",
                    )
            if time.monotonic() >= deadline:
                raise DemoFailed(
                    step, f"timed out after {self.opts.timeout:g}s waiting for {what}{last_error}"
                )
            time.sleep(interval)

    def _child_env(self) -> dict[str, str]:
        """The environment of the demo's subprocesses: the caller's, minus every
        ``DEVMESH_*`` setting (the demo must not touch the user's real database or tokens)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEVMESH_")}
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        log_path = self.dir / f"{name}.log"
        output = log_path.open("ab")
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.dir,  # no .env of the caller's working directory is read
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops them in order
            )
        finally:
            output.close()
        return Child(name, proc, log_path)

    # -- the scenario ---------------------------------------------------------------------
    def run(self) -> int:
        """Run every step, then stop everything; the exit code."""
        code = 0
        failed = ""
        self.console.rule("[bold]DevMesh demo: chaos → incident → diagnosis → fix[/bold]")
        self.steps.note(f"[dim]demo directory: {escape(str(self.dir))}[/dim]")
        try:
            self.start_server()
            self.start_apps()
            self.start_node()
            self.baseline()
            self.chaos()
            self.await_incident()
            self.await_webhook()
            diagnosis = self.diagnose()
            self.propose(diagnosis)
            self.await_approval()
            self.await_execution()
            self.await_recovery()
            self.await_verification()
            self.await_mitigation()
            self.await_fix_in_graph()
            self.show_audit()
        except DemoFailed as exc:
            self.steps.record(exc.step, exc.message, status="failed", failed_step=exc.step)
            code, failed = 1, f"failed at step {exc.step!r}"
        except KeyboardInterrupt:
            self.steps.record("interrupted", "stopped by the user", status="failed")
            code, failed = 130, "stopped"
        except Exception as exc:  # an unexpected bug still gets a clean shutdown
            self.steps.record("error", f"{type(exc).__name__}: {exc}", status="failed")
            code, failed = 1, f"failed: {type(exc).__name__}"
        finally:
            self.shutdown()
        if code == 0:
            self.steps.record(
                "done", f"the loop closed in {self.steps.records[-1].elapsed_s:.0f}s", status="ok"
            )
        else:
            self.console.print(
                f"[red]demo {escape(failed)}[/red]; its files are kept in {escape(str(self.dir))} "
                "(server.log, shipper.log, logs/, demo-steps.jsonl)"
            )
        return code

    # 1. server --------------------------------------------------------------------------
    def write_configs(self) -> dict[str, Path]:
        """Topology, actions allowlist/roles and the shim; their paths."""
        topology = self.dir / "topology.yaml"
        topology.write_text(
            yaml.safe_dump(
                {
                    "version": 1,
                    "services": {
                        SHOP: {"kind": "web", "depends_on": [INVENTORY]},
                        INVENTORY: {"kind": "api"},
                    },
                }
            ),
            encoding="utf-8",
        )
        self.actions_file.write_text(
            yaml.safe_dump(
                {
                    "allow": {self.host: {"units": [INVENTORY_UNIT], "actions": ["restart_unit"]}},
                    "roles": {self.user_identity.key: ["approver"]},
                }
            ),
            encoding="utf-8",
        )
        return {"topology": topology, "actions": self.actions_file}

    def start_server(self) -> None:
        step = "server_up"
        files = self.write_configs()
        self.webhook = WebhookReceiver(self.secret)
        self.webhook.start()
        port = free_port()
        env = self._child_env()
        env.update(
            {
                "DEVMESH_DATA_DIR": str(self.server_dir),
                "DEVMESH_LOG_FORMAT": "json",
                "DEVMESH_VECTORS_ENABLED": "false",
                "DEVMESH_GRAPH_ENABLED": "false",
                "DEVMESH_BOTS_ENABLED": "true" if self.opts.chat_env else "false",
                "DEVMESH_TOPOLOGY_FILE": str(files["topology"]),
                "DEVMESH_DETECT__INTERVAL": "1",
                # Incidents are projected into the knowledge graph once it is open (the
                # diagnosis opens it), so the recorded fix can be recalled from there.
                "DEVMESH_DETECT__USE_GRAPH": "true",
                "DEVMESH_REASON__LLM": "none",
                "DEVMESH_ACTIONS__CONFIG_FILE": str(files["actions"]),
                "DEVMESH_ACTIONS__VERIFY_MINUTES": "0.15",
                "DEVMESH_ACTIONS__SWEEP_SECONDS": "1",
                "DEVMESH_NOTIFY__WEBHOOKS": json.dumps(
                    [{"name": "demo-webhook", "url": self.webhook.url, "secret": self.secret}]
                ),
            }
        )
        env.update(self.opts.chat_env)
        argv = [sys.executable, "-m", "devmesh.cli.main", "serve", "--port", str(port)]
        self.server = self._spawn("server", argv, env)
        self.base = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.base, timeout=self.opts.timeout, trust_env=False)

        def healthy() -> bool:
            assert self.http is not None
            with contextlib.suppress(httpx.HTTPError):
                return self.http.get("/health", timeout=2).status_code == 200
            return False

        self.wait(step, "the server's /health", healthy)
        self.steps.record(
            step,
            f"DevMesh server at {self.base} (pid {self.server.proc.pid}, data {self.server_dir})",
            url=self.base,
            pid=self.server.proc.pid,
            webhook=self.webhook.url,
        )
        self.steps.note(
            f"[dim]detection every 1 s · topology: {SHOP} → {INVENTORY} · allowlist: "
            f"restart_unit {INVENTORY_UNIT} on {escape(self.host)} · approver: "
            f"{escape(self.user_identity.key)} · webhook → {self.webhook.url} (HMAC)[/dim]"
        )

    # 2. apps ----------------------------------------------------------------------------
    def start_apps(self) -> None:
        step = "apps_up"
        logs = self.dir / "logs"
        inventory_port, shop_port = free_port(), free_port()

        def event(unit: str, what: str) -> None:
            self.steps.note(f"[magenta]demo-systemd[/magenta] {escape(unit)}: {escape(what)}")

        self.units = UnitSupervisor(
            self.dir / "systemd", ready_timeout=self.opts.timeout, on_event=event
        )
        app = [sys.executable, "-m", "devmesh.demo.apps"]
        self.units.add(
            INVENTORY_UNIT,
            [
                *app,
                "inventory",
                "--port",
                str(inventory_port),
                "--log",
                str(logs / "inventory.log"),
            ],
            log_path=logs / "inventory.log",
            port=inventory_port,
        )
        self.units.add(
            SHOP_UNIT,
            [
                *app,
                "shop",
                "--port",
                str(shop_port),
                "--upstream",
                str(inventory_port),
                "--log",
                str(logs / "shop.log"),
            ],
            log_path=logs / "shop.log",
            port=shop_port,
        )
        try:
            inventory = self.units.start(INVENTORY_UNIT)
            shop = self.units.start(SHOP_UNIT)
        except UnitError as exc:
            raise DemoFailed(step, str(exc)) from exc
        self.units.run_in_thread()
        self.load = LoadGenerator(f"http://127.0.0.1:{shop_port}/items")
        self.load.start()
        load = self.load
        self.wait(step, "the shop's first 200", lambda: load.ok_streak() >= 1)
        self.steps.record(
            step,
            f"{INVENTORY} on :{inventory_port} (pid {inventory.pid}), {SHOP} on :{shop_port} "
            f"(pid {shop.pid}) → {INVENTORY}; load: 4 requests/s on the shop",
            inventory={"port": inventory_port, "pid": inventory.pid},
            shop={"port": shop_port, "pid": shop.pid},
            logs=str(logs),
        )

    # 3. node side -----------------------------------------------------------------------
    def write_shim(self) -> Path:
        """``<dir>/bin/systemctl``: the systemd stand-in the agent finds first on PATH."""
        bin_dir = self.dir / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        shim = bin_dir / "systemctl"
        shim.write_text(
            "#!/bin/sh\n"
            "# devmesh demo: stands in for systemd's systemctl (see devmesh/demo/systemctl.py).\n"
            f"exec {shlex.quote(sys.executable)} -m devmesh.demo.systemctl "
            f'--control {shlex.quote(str(self.dir / "systemd"))} "$@"\n',
            encoding="utf-8",
        )
        shim.chmod(0o755)
        return shim

    def start_node(self) -> None:
        step = "node_up"
        shim = self.write_shim()
        logs = self.dir / "logs"
        config = self.dir / "shipper.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "server": self.base,
                    "state_dir": str(self.dir / "shipper-state"),
                    "host": self.host,
                    "journal": {"enabled": False},
                    "batch": {"max_events": 100, "max_seconds": 0.5},
                    "heartbeat_seconds": 5,
                    "tail": {"poll_interval": 0.2},
                    "files": [
                        {
                            "path": str(logs / "inventory.log"),
                            "service": INVENTORY,
                            "multiline": False,
                        },
                        {"path": str(logs / "shop.log"), "service": SHOP, "multiline": False},
                    ],
                },
                sort_keys=False,
            ),
            encoding="utf-8",
        )
        env = self._child_env()
        env["PATH"] = f"{shim.parent}{os.pathsep}{env.get('PATH', '')}"
        argv = [sys.executable, "-m", "devmesh.cli.ship", "--config", str(config), "--agent"]
        self.shipper = self._spawn("shipper", argv, env)

        def shipped() -> bool:
            found = [
                self.api("GET", "/query/logs", step, params={"service": s, "limit": 1})["events"]
                for s in (INVENTORY, SHOP)
            ]
            return all(found)

        self.wait(step, f"the first lines of {INVENTORY} and {SHOP} in DevMesh", shipped)
        self.steps.record(
            step,
            f"shipper + agent (pid {self.shipper.proc.pid}) tailing {logs}/*.log as host "
            f"{self.host}; systemctl on its PATH is the demo's shim ({shim})",
            pid=self.shipper.proc.pid,
            host=self.host,
            shim=str(shim),
            command=" ".join(argv[1:]),
        )
        self.steps.note(
            "[yellow]note:[/yellow] the systemctl shim stands in for systemd in this demo: the "
            f"agent runs the real argv `systemctl restart {INVENTORY_UNIT}`, the shim hands it "
            "to the demo's supervisor, which restarts the inventory process"
        )

    # 4. baseline, 5. chaos --------------------------------------------------------------
    def baseline(self) -> None:
        step = "baseline"
        assert self.load is not None
        since = time.monotonic()
        time.sleep(BASELINE_SECONDS)
        counts = self.load.counts(since)
        incidents = self.api("GET", "/incidents", step)["incidents"]
        if incidents:
            raise DemoFailed(step, f"incidents open before any chaos: {incidents}")
        if counts.get("200", 0) * 2 <= sum(counts.values()):  # a slow answer on a busy box
            raise DemoFailed(step, f"the shop is not healthy at baseline: {counts}")
        self.steps.record(
            step,
            f"{BASELINE_SECONDS:g}s of normal traffic: {counts.get('200', 0)} × 200, no incident",
            requests=counts,
        )

    def chaos(self) -> None:
        step = "chaos"
        assert self.units is not None
        try:
            pid = self.units.kill(INVENTORY_UNIT, signal.SIGKILL)
        except (UnitError, OSError) as exc:
            raise DemoFailed(step, f"could not kill the inventory: {exc}") from exc
        self.chaos_at = time.monotonic()
        self.steps.record(
            step, f"SIGKILL → {INVENTORY} (pid {pid}): the shop's upstream is gone", pid=pid
        )

    # 6. incident, 7. webhook -----------------------------------------------------------
    def await_incident(self) -> None:
        step = "incident_opened"

        def opened() -> list[dict[str, Any]] | None:
            found = self.api("GET", "/incidents", step)["incidents"]
            return found or None

        first = self.wait(step, "DevMesh to open an incident", opened)
        took = time.monotonic() - self.chaos_at
        number = first[-1]["id"]

        def settled() -> dict[str, Any] | None:  # both services' signals in (origin known)
            incident = self.api("GET", f"/incidents/{number}", step)["incident"]
            return incident if {SHOP, INVENTORY} <= set(incident["services"]) else None

        deadline = time.monotonic() + min(20.0, self.opts.timeout)
        incident: dict[str, Any] | None = None
        while time.monotonic() < deadline and incident is None:
            incident = settled()
            if incident is None:
                time.sleep(0.25)
        incident = incident or self.api("GET", f"/incidents/{number}", step)["incident"]
        everything = self.api("GET", "/incidents", step)["incidents"]
        if len(everything) != 1:
            raise DemoFailed(
                step,
                f"expected exactly one incident, DevMesh opened {len(everything)}: "
                + ", ".join(f"{i['id']} {i['title']}" for i in everything),
            )
        self.incident_id = incident["id"]
        origin = incident.get("origin_service")
        self.steps.record(
            step,
            f"{incident['id']} ({incident['severity']}) opened {took:.1f}s after the chaos: "
            f"{incident['title']}",
            incident_id=incident["id"],
            count=len(everything),
            severity=incident["severity"],
            origin_service=origin,
            services=incident["services"],
            runbook_ids=incident["runbook_ids"],
            seconds_after_chaos=round(took, 2),
        )
        why = (
            f"the topology says {SHOP} depends on it"
            if origin == INVENTORY
            else "the first service with signals"
        )
        self.steps.note(
            f"origin: [bold]{escape(str(origin))}[/bold] ({why}); services: "
            f"{escape(', '.join(incident['services']))}; runbooks: "
            f"{escape(', '.join(incident['runbook_ids']) or '-')}"
        )

    def await_webhook(self) -> None:
        step = "webhook_received"
        assert self.webhook is not None
        ping = self.webhook.wait_for("opened", self.incident_id, self.opts.timeout)
        if ping is None:
            raise DemoFailed(step, f"no webhook ping for {self.incident_id} opened")
        if not ping.verified:
            raise DemoFailed(step, f"the webhook ping for {self.incident_id} had a bad signature")
        self.steps.record(
            step,
            f"webhook received {ping.incident_id} {ping.kind} (HMAC-SHA256 signature verified)",
            incident_id=ping.incident_id,
            kind=ping.kind,
            verified=ping.verified,
        )

    # 8. diagnosis, 9. proposal ---------------------------------------------------------
    def diagnose(self) -> dict[str, Any]:
        step = "diagnosis"
        question = f"Why is {SHOP} answering 502?"
        diagnosis: dict[str, Any] = self.api(
            "POST", "/ask", step, json={"question": question, "incident_id": self.incident_id}
        )
        evidence = diagnosis.get("evidence") or []
        if not evidence:
            raise DemoFailed(step, f"the diagnosis cites no evidence: {diagnosis}")
        self.steps.record(
            step,
            f"root cause ({diagnosis['backend']}, confidence {diagnosis['confidence']:.2f}): "
            f"{diagnosis['root_cause']}",
            incident_id=self.incident_id,
            origin_service=diagnosis.get("origin_service"),
            evidence_ids=[e["id"] for e in evidence],
            runbook_ids=diagnosis.get("runbook_ids", []),
            proposed_actions=diagnosis.get("proposed_actions", []),
        )
        for item in evidence[:6]:
            self.steps.note(f"[dim]cites[/dim] {escape(item['id'])}: {escape(item['text'][:110])}")
        if len(evidence) > 6:
            self.steps.note(f"[dim]… and {len(evidence) - 6} more[/dim]")
        return diagnosis

    def propose(self, diagnosis: dict[str, Any]) -> None:
        step = "action_proposed"
        assert self.http is not None
        refusals: list[str] = []
        made: dict[str, Any] | None = None
        source = ""
        for item in diagnosis.get("proposed_actions") or []:
            if item.get("action") != "restart_unit":
                continue
            body = {
                "action": item["action"],
                "params": item.get("params") or {},
                "host": item.get("host") or self.host,
                "incident_id": self.incident_id,
                "requested_by": "system:diagnosis",
            }
            response = self.http.post("/actions", json=body)
            if response.status_code == 201:
                made = response.json()
                source = f"the diagnosis (runbook {item.get('runbook_id')})"
                break
            refusals.append(f"{item['params']}: {response.json().get('detail', response.text)}")
        if made is None:
            source = "the demo (the diagnosis proposed no allowlisted restart)"
            made = self.api(
                "POST",
                "/actions",
                step,
                json={
                    "action": "restart_unit",
                    "params": {"unit": INVENTORY_UNIT},
                    "host": self.host,
                    "incident_id": self.incident_id,
                    "requested_by": "system:diagnosis",
                },
            )
        assert made is not None
        self.request_id = made["id"]
        self.steps.record(
            step,
            f"{made['id']}: {made['summary']} ({made['risk']} risk, proposed by "
            f"{made['requested_by']} from {source})",
            request_id=made["id"],
            action=made["action"],
            params=made["params"],
            host=made["host"],
            source="diagnosis" if "diagnosis (" in source else "fallback",
            refused=refusals,
        )
        for refusal in refusals:
            self.steps.note(f"[dim]refused by the allowlist:[/dim] {escape(refusal)}")

    # 10. approval ----------------------------------------------------------------------
    def approve_command(self) -> str:
        """The command that approves the request from another terminal."""
        env = f"DEVMESH_ACTIONS__CONFIG_FILE={shlex.quote(str(self.actions_file))}"
        cli = " ".join(shlex.quote(part) for part in devmesh_command())
        # Named, so a DEVMESH_DATABASE_URL in that terminal cannot point it elsewhere.
        database = f"sqlite:///{self.server_dir / 'devmesh.db'}"
        return (
            f"{env} {cli} --data-dir {shlex.quote(str(self.server_dir))} "
            f"--database-url {shlex.quote(database)} actions approve {self.request_id}"
        )

    def await_approval(self) -> None:
        step = "approved"
        command = self.approve_command()
        self.steps.record(
            "awaiting_approval",
            f"{self.request_id} waits for a confirmation",
            status="info",
            request_id=self.request_id,
            command=command,
            auto_approve=self.opts.auto_approve,
        )
        self.console.print(
            Panel(
                f"DevMesh will not run {self.request_id} until someone approves it. "
                "Approve it from another terminal with the command below (or press Ctrl-C "
                "to stop the demo).",
                title="confirmation needed",
                border_style="yellow",
            )
        )
        # One unwrapped line, so it can be copied as it is.
        self.console.print(command, soft_wrap=True, markup=False, highlight=False)
        if self.opts.auto_approve:
            identity = self.user_identity.model_copy(
                update={"display": "devmesh demo --auto-approve"}
            )
            self.api(
                "POST",
                f"/actions/{self.request_id}/approve",
                step,
                json={"identity": identity.model_dump(mode="json")},
            )
            self.steps.note(
                f"[yellow]--auto-approve[/yellow]: approving as {escape(identity.key)} "
                "(allowed by DEVMESH_ACTIONS__ALLOW_AUTO_APPROVE)"
            )

        def decided() -> dict[str, Any] | None:
            request = self.api("GET", f"/actions/{self.request_id}", step)
            return None if request["status"] == "pending" else request

        request = self.wait(step, f"{self.request_id} to be approved", decided, interval=0.5)
        if request["status"] not in ("approved", "running", "succeeded", "failed"):
            raise DemoFailed(
                step, f"{self.request_id} was {request['status']}: {request.get('reason') or ''}"
            )
        self.steps.record(
            step,
            f"{self.request_id} approved by {', '.join(request['approvals'])}",
            request_id=self.request_id,
            approvals=request["approvals"],
            auto=self.opts.auto_approve,
        )

    # 11. execution, 12. recovery, 13. verification -------------------------------------
    def await_execution(self) -> None:
        step = "executed"

        def finished() -> dict[str, Any] | None:
            request = self.api("GET", f"/actions/{self.request_id}", step)
            return request if request["status"] in ("succeeded", "failed", "expired") else None

        self.steps.note("[dim]waiting for the node agent to pick it up (it polls every 5 s)[/dim]")
        request = self.wait(step, f"the agent to run {self.request_id}", finished)
        result = request.get("result") or {}
        if request["status"] != "succeeded":
            raise DemoFailed(
                step,
                f"{self.request_id} {request['status']}: {request.get('reason') or ''} "
                f"{result.get('output', '')}".strip(),
            )
        self.executed_at = time.monotonic()
        verify = result.get("verify") or {}
        self.steps.record(
            step,
            f"the agent ran {' '.join(result.get('argv') or [])} → exit {result.get('exit_code')} "
            f"in {result.get('duration')}s; is-active: {verify.get('state', '-')}",
            request_id=self.request_id,
            exit_code=result.get("exit_code"),
            argv=result.get("argv"),
            output=result.get("output"),
            verify=verify,
        )
        if result.get("output"):
            self.steps.note(f"[dim]output:[/dim] {escape(str(result['output']).strip()[:200])}")

    def await_recovery(self) -> None:
        step = "recovered"
        assert self.load is not None
        load = self.load
        since = self.executed_at
        self.wait(
            step,
            f"{RECOVERED_STREAK} answers 200 in a row from the shop",
            lambda: load.ok_streak(since) >= RECOVERED_STREAK,
        )
        during = load.counts(self.chaos_at)
        self.steps.record(
            step,
            f"the shop answers 200 again (since the chaos: {during})",
            requests_since_chaos=during,
            ok_streak=load.ok_streak(since),
        )

    def await_verification(self) -> None:
        step = "verified"

        def decided() -> dict[str, Any] | None:
            request = self.api("GET", f"/actions/{self.request_id}", step)
            return request if request.get("verified") is not None else None

        self.steps.note("[dim]DevMesh watches for the incident's errors for 9 s …[/dim]")
        request = self.wait(step, f"DevMesh to verify {self.request_id}", decided, interval=0.5)
        if not request["verified"]:
            raise DemoFailed(step, f"DevMesh found that {self.request_id} did not fix it")
        self.steps.record(
            step,
            f"DevMesh verified {self.request_id}: the agent's check passed and no new error of "
            f"{self.incident_id}'s templates since the restart",
            request_id=self.request_id,
            verified=True,
        )

    # 14. fix recorded, 15. audit --------------------------------------------------------
    def await_mitigation(self) -> None:
        step = "incident_mitigated"

        def mitigated() -> dict[str, Any] | None:
            incident = self.api("GET", f"/incidents/{self.incident_id}", step)["incident"]
            return incident if incident["state"] in ("mitigated", "resolved") else None

        incident = self.wait(step, f"{self.incident_id} to be mitigated", mitigated)
        assert self.webhook is not None
        ping = self.webhook.wait_for(incident["state"], self.incident_id, 5.0)
        self.steps.record(
            step,
            f"{self.incident_id} is {incident['state']} "
            f"(by {incident.get('acknowledged_by') or incident.get('resolved_by')})"
            + (f"; webhook received {self.incident_id} {ping.kind}" if ping else ""),
            incident_id=self.incident_id,
            state=incident["state"],
            by=incident.get("acknowledged_by") or incident.get("resolved_by"),
            webhook=ping.kind if ping else None,
        )

    def await_fix_in_graph(self) -> None:
        """The verified fix as the knowledge graph recalls it for the inventory (what the
        next diagnosis of a similar incident will be shown as a past fix)."""
        step = "fix_recorded"
        from devmesh_core.errors import DevMeshError
        from devmesh_core.graph import open_graph

        try:  # the server's embedded graph is running: this reuses it, never starts another
            graph = open_graph(None, self.server_dir, owned=True)
        except DevMeshError as exc:
            self.steps.record(step, f"the knowledge graph is not available: {exc}", status="info")
            return
        fix_id = f"fix-{self.request_id}"

        def recalled() -> Any:
            for past in graph.recall(service=INVENTORY, limit=10):
                for fix in past.fixes:
                    if past.id == self.incident_id and fix.id == fix_id:
                        return fix
            return None

        try:
            fix = self.wait(step, f"{fix_id} in the knowledge graph", recalled, interval=0.5)
        except DevMeshError as exc:
            raise DemoFailed(step, f"cannot read the knowledge graph: {exc}") from exc
        finally:
            graph.close()
        self.steps.record(
            step,
            f"knowledge graph: {self.incident_id} RESOLVED_BY {fix.id} ({fix.action} "
            f"{fix.parameters.get('unit', '')}, outcome {fix.outcome}, approver {fix.approver})",
            incident_id=self.incident_id,
            fix_id=fix.id,
            action=fix.action,
            outcome=fix.outcome,
            approver=fix.approver,
        )

    def show_audit(self) -> None:
        step = "audit"
        records = self.api("GET", "/audit", step, params={"incident": self.incident_id})
        table = Table(header_style="bold", title=f"audit trail of {self.incident_id}")
        for column in ("time (UTC)", "request", "step", "actor", "detail"):
            table.add_column(column, overflow="fold")
        for r in records:
            detail = {k: v for k, v in (r.get("detail") or {}).items() if v not in (None, "", [])}
            table.add_row(
                str(r["at"])[11:19],
                r.get("request_id") or "-",
                r["step"],
                escape(r["actor"]),
                escape(json.dumps(detail, default=str)[:90]),
            )
        self.console.print(table)
        self.steps.record(
            step,
            f"{len(records)} audit records: " + " → ".join(r["step"] for r in records),
            incident_id=self.incident_id,
            audit_steps=[r["step"] for r in records],
        )

    # shutdown ---------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop everything the demo started, in order (also after a failure or Ctrl-C):
        load, shipper (flushes), services, server (saves), webhook receiver."""
        stopped: list[str] = []
        problems: list[str] = []

        def attempt(name: str, action: Callable[[], None]) -> None:
            try:
                action()
                stopped.append(name)
            except Exception as exc:
                problems.append(f"{name}: {exc}")

        if self.load is not None:
            attempt("load", self.load.stop)
        if self.shipper is not None:
            attempt("shipper", lambda: _terminate(self.shipper, 20.0))
        if self.units is not None:
            attempt("services", self.units.close)
        if self.http is not None:
            self.http.close()
        if self.server is not None:
            attempt("server", lambda: _terminate(self.server, 30.0))
        if self.webhook is not None:
            attempt("webhook receiver", self.webhook.close)
        self.steps.record(
            "shutdown",
            "stopped " + ", ".join(stopped) + (f"; problems: {problems}" if problems else ""),
            status="failed" if problems else "ok",
            stopped=stopped,
            problems=problems,
        )


def _terminate(child: Child | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout`` seconds."""
    if child is None or child.proc.poll() is not None:
        return
    child.proc.terminate()
    try:
        child.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        child.proc.kill()
        child.proc.wait(10)
