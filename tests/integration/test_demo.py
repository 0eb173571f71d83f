"""``devmesh demo`` end to end, headless: real server, real services, real shipper and agent.

Each test runs the demo as a subprocess (the way a person runs it) and reads what happened
from its ``demo-steps.jsonl``; nothing in the loop is mocked. The ``systemctl`` the agent
runs is the demo's documented shim (it stands in for systemd, which the demo services are
not run by).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devmesh.demo.steps import read_steps

LOOP = [
    "server_up",
    "apps_up",
    "node_up",
    "baseline",
    "chaos",
    "incident_opened",
    "webhook_received",
    "diagnosis",
    "action_proposed",
    "awaiting_approval",
    "approved",
    "executed",
    "recovered",
    "verified",
    "incident_mitigated",
    "fix_recorded",
    "audit",
    "shutdown",
    "done",
]


def _env(**extra: str) -> dict[str, str]:
    """This process's environment without any DEVMESH_* setting, plus ``extra``; a wide
    terminal so rich does not wrap what the test reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVMESH_")}
    env.update(COLUMNS="200", **extra)
    return env


def _demo(*args: str) -> list[str]:
    return [sys.executable, "-m", "devmesh.cli.main", "demo", *args]


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _started_pids(steps: dict[str, dict[str, Any]]) -> list[int]:
    """Every process the demo reports having started (server, services, shipper, and the
    inventory the restart started)."""
    pids = [
        steps["server_up"]["detail"]["pid"],
        steps["apps_up"]["detail"]["inventory"]["pid"],
        steps["apps_up"]["detail"]["shop"]["pid"],
        steps["node_up"]["detail"]["pid"],
    ]
    restarted = re.search(r"pid (\d+)", str(steps.get("executed", {}).get("detail", {})))
    if restarted:
        pids.append(int(restarted.group(1)))
    return pids


def _assert_all_stopped(pids: list[int]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    assert not [p for p in pids if _alive(p)], "the demo left processes running"


def _check_loop(demo_dir: Path, *, auto: bool) -> None:
    """The whole loop happened, in order, with the facts each step claims."""
    records = read_steps(demo_dir / "demo-steps.jsonl")
    assert [r["step"] for r in records] == LOOP
    assert all(r["status"] == "ok" for r in records if r["step"] != "awaiting_approval")
    elapsed = [r["elapsed_s"] for r in records]
    assert elapsed == sorted(elapsed)
    steps = {r["step"]: r for r in records}
    detail = {name: r["detail"] for name, r in steps.items()}

    assert detail["baseline"]["requests"].get("200", 0) > 0
    incident = detail["incident_opened"]
    assert incident["count"] == 1  # exactly one incident for the whole outage
    assert incident["origin_service"] == "demo-inventory"  # through the topology file
    assert {"demo-inventory", "demo-shop"} <= set(incident["services"])
    assert "upstream-unreachable" in incident["runbook_ids"]
    incident_id = incident["incident_id"]

    assert detail["webhook_received"] == {
        "incident_id": incident_id,
        "kind": "opened",
        "verified": True,
    }
    diagnosis = detail["diagnosis"]
    assert diagnosis["origin_service"] == "demo-inventory"
    assert any(e.startswith(("event:", "template:")) for e in diagnosis["evidence_ids"])
    assert {"action": "restart_unit", "params": {"unit": "demo-inventory.service"}} in [
        {"action": a["action"], "params": a["params"]} for a in diagnosis["proposed_actions"]
    ]

    proposed = detail["action_proposed"]
    assert proposed["source"] == "diagnosis"
    assert (proposed["action"], proposed["params"]) == (
        "restart_unit",
        {"unit": "demo-inventory.service"},
    )
    request_id = proposed["request_id"]
    assert detail["approved"]["approvals"] == [f"cli:{getpass.getuser()}"]
    assert detail["approved"]["auto"] is auto

    executed = detail["executed"]
    assert executed["exit_code"] == 0
    assert executed["argv"][0] == str(demo_dir / "bin" / "systemctl")
    assert executed["argv"][1:] == ["restart", "demo-inventory.service"]
    assert executed["verify"]["ok"] is True and executed["verify"]["state"] == "active"

    recovered = detail["recovered"]
    assert recovered["ok_streak"] >= 8
    assert recovered["requests_since_chaos"].get("502", 0) > 0  # the outage was real

    assert detail["verified"]["verified"] is True
    mitigated = detail["incident_mitigated"]
    assert mitigated["state"] in ("mitigated", "resolved")
    assert mitigated["by"] == f"devmesh:{request_id}"
    fix = detail["fix_recorded"]
    assert (fix["fix_id"], fix["outcome"]) == (f"fix-{request_id}", "success")
    assert detail["audit"]["audit_steps"] == [
        "proposed",
        "approved",
        "claimed",
        "executed",
        "verified",
    ]
    assert detail["shutdown"]["problems"] == []

    # The services' own logs show the outage and the restart.
    shop_log = (demo_dir / "logs" / "shop.log").read_text()
    assert "connect() failed (111: Connection refused) while connecting to upstream" in shop_log
    inventory_log = (demo_dir / "logs" / "inventory.log").read_text()
    assert inventory_log.count("inventory listening on") == 2
    assert "Main process exited, code=killed, status=9/KILL" in inventory_log
    _assert_all_stopped(_started_pids(steps))


def test_demo_auto_approve_closes_the_loop(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    done = subprocess.run(
        _demo("--auto-approve", "--data-dir", str(demo_dir), "--keep", "--timeout", "60"),
        cwd=tmp_path,
        env=_env(DEVMESH_ACTIONS__ALLOW_AUTO_APPROVE="true"),
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "webhook received INC-1 opened" in done.stdout
    _check_loop(demo_dir, auto=True)
    waiting = next(
        r for r in read_steps(demo_dir / "demo-steps.jsonl") if r["step"] == "awaiting_approval"
    )
    command = waiting["detail"]["command"]
    assert " actions approve A-" in command
    assert command in done.stdout  # printed on one line, as a person would copy it


def test_demo_waits_for_approval_from_another_terminal(tmp_path: Path) -> None:
    """Without --auto-approve the demo waits; the printed command, run from elsewhere,
    approves and the loop closes."""
    demo_dir = tmp_path / "demo"
    proc = subprocess.Popen(
        _demo("--data-dir", str(demo_dir), "--keep", "--timeout", "60"),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        steps_file = demo_dir / "demo-steps.jsonl"
        command = None
        deadline = time.monotonic() + 120
        while command is None and time.monotonic() < deadline and proc.poll() is None:
            if steps_file.exists():
                for record in read_steps(steps_file):
                    if record["step"] == "awaiting_approval":
                        command = record["detail"]["command"]
            time.sleep(0.3)
        assert command is not None, "the demo never asked for approval"
        assert proc.poll() is None  # it waits
        approved = subprocess.run(
            command, shell=True, cwd=tmp_path, env=_env(), capture_output=True, text=True
        )
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert ": approved (1/1 approvals)" in approved.stdout
        output, _ = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=60)
    assert proc.returncode == 0, output[-4000:]
    _check_loop(demo_dir, auto=False)


def test_auto_approve_is_refused_without_the_setting(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    done = subprocess.run(
        _demo("--auto-approve", "--data-dir", str(demo_dir)),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refused" in done.stderr
    assert "DEVMESH_ACTIONS__ALLOW_AUTO_APPROVE=true" in done.stderr
    assert not demo_dir.exists()  # nothing was started


def test_a_step_that_times_out_fails_the_demo_by_name_and_stops_everything(
    tmp_path: Path,
) -> None:
    """No approval comes: the approval step times out, the demo names it, exits 1 and
    stops what it started."""
    demo_dir = tmp_path / "demo"
    done = subprocess.run(
        _demo("--data-dir", str(demo_dir), "--timeout", "20"),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 1, done.stdout[-4000:]
    assert "failed at step 'approved'" in done.stdout
    records = read_steps(demo_dir / "demo-steps.jsonl")  # kept after a failure
    names = [r["step"] for r in records]
    assert names == [*LOOP[: LOOP.index("approved") + 1], "shutdown"]
    assert records[-2]["status"] == "failed"
    assert "timed out after 20s" in records[-2]["message"]
    assert records[-1]["status"] == "ok"
    _assert_all_stopped(_started_pids({r["step"]: r for r in records}))


def test_systemctl_shim_drives_the_demo_supervisor(tmp_path: Path) -> None:
    """The shim the agent runs: is-active, restart of a killed unit (systemd's lines in its
    log), and systemctl's exit codes for a dead or unknown unit."""
    import signal
    import socket

    from devmesh.demo.units import UnitSupervisor

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    log = tmp_path / "logs" / "inventory.log"
    control = tmp_path / "systemd"
    supervisor = UnitSupervisor(control, ready_timeout=30)
    supervisor.add(
        "demo-inventory.service",
        [
            sys.executable,
            "-m",
            "devmesh.demo.apps",
            "inventory",
            "--port",
            str(port),
            "--log",
            str(log),
        ],
        log_path=log,
        port=port,
    )

    def systemctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devmesh.demo.systemctl", "--control", str(control), *args],
            capture_output=True,
            text=True,
            timeout=90,
        )

    try:
        first = supervisor.start("demo-inventory.service").pid
        supervisor.run_in_thread()
        active = systemctl("is-active", "demo-inventory")  # bare names get .service
        assert (active.returncode, active.stdout.strip()) == (0, "active")
        assert first is not None
        supervisor.kill("demo-inventory.service", signal.SIGKILL)
        deadline = time.monotonic() + 10
        while systemctl("is-active", "demo-inventory.service").returncode != 3:
            assert time.monotonic() < deadline, "the kill was never noticed"
            time.sleep(0.1)
        assert systemctl("is-active", "demo-inventory.service").stdout.strip() == "failed"
        assert "Main process exited, code=killed, status=9/KILL" in log.read_text()
        assert "Failed with result 'signal'." in log.read_text()

        restarted = systemctl("restart", "demo-inventory.service")
        assert restarted.returncode == 0, restarted.stdout
        second = supervisor.units["demo-inventory.service"].pid
        assert second is not None and second != first
        assert f"pid {second}" in restarted.stdout
        assert systemctl("is-active", "demo-inventory.service").returncode == 0

        unknown = systemctl("restart", "postgres.service")
        assert unknown.returncode == 5
        assert "Unit postgres.service not found" in unknown.stdout
        assert systemctl("is-active", "postgres.service").returncode == 3
    finally:
        supervisor.close()
    assert supervisor.units["demo-inventory.service"].pid is None


def test_chat_settings_reach_the_demo_server_only_when_a_bot_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from devmesh.cli.demo import chat_environment
    from devmesh_core.config import Settings

    for key in list(os.environ):
        if key.startswith(("DEVMESH_DISCORD__", "DEVMESH_TELEGRAM__")):
            monkeypatch.delenv(key)
    assert chat_environment(Settings(_env_file=None)) == {}  # type: ignore[call-arg]
    monkeypatch.setenv("DEVMESH_TELEGRAM__TOKEN", "999:secret")
    monkeypatch.setenv("DEVMESH_TELEGRAM__PING_CHAT_IDS", "42")
    env = chat_environment(Settings(_env_file=None))  # type: ignore[call-arg]
    assert env["DEVMESH_TELEGRAM__TOKEN"] == "999:secret"  # the real token, not the mask
    assert json.loads(env["DEVMESH_TELEGRAM__PING_CHAT_IDS"]) == [42]
    assert not any(k.startswith("DEVMESH_DISCORD__") for k in env)
    # What the demo passes parses back into the same settings on the server's side.
    monkeypatch.delenv("DEVMESH_TELEGRAM__TOKEN")
    monkeypatch.delenv("DEVMESH_TELEGRAM__PING_CHAT_IDS")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    again = Settings(_env_file=None)  # type: ignore[call-arg]
    assert again.telegram.token is not None
    assert again.telegram.token.get_secret_value() == "999:secret"
    assert again.telegram.ping_chat_ids == [42]
