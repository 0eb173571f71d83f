"""End to end over real processes: ``devmesh serve`` + ``python -m devmesh.cli.agent`` (with a
fake ``systemctl`` first on its PATH): propose → approve → the agent pulls, runs, reports →
verified, with the whole audit trail and the remediation events stored. Adversarial
proposals (non-catalog, shell injection, off-allowlist, prompt injection) never run."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ingest.agent import build_agent, start_in_thread
from tests.conftest import start_server
from tests.integration.actions.conftest import FakeNode, make_node

TOKEN = "e2e-node-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALICE = {"platform": "web", "user_id": "alice"}
BOB = {"platform": "web", "user_id": "bob"}


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, FakeNode, subprocess.Popen[bytes]]]:
    """One server and one agent for the module (starting them costs seconds)."""
    tmp_path = tmp_path_factory.mktemp("e2e")
    node = make_node(tmp_path / "node")
    server, base = start_server(
        tmp_path / "server",
        env={
            "DEVMESH_API_TOKENS": TOKEN,
            "DEVMESH_ACTIONS__CONFIG_FILE": str(node.config),
        },
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "devmesh.cli.agent", "--server", base, "--token", TOKEN,
         "--host", "web1", "--config", str(node.config), "--poll-interval", "0.2"],
        env=node.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield base, node, agent
    finally:
        for proc in (agent, server):
            proc.terminate()
            proc.communicate(timeout=30)


def _wait_status(base: str, request_id: str, wanted: set[str], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = httpx.get(f"{base}/actions/{request_id}", headers=AUTH).json()
        if data["status"] in wanted and (data["status"] != "succeeded" or data["verified"]):
            return data
        time.sleep(0.1)
    raise AssertionError(f"request stayed {data['status']}")


def test_propose_approve_execute_verify_audit(
    stack: tuple[str, FakeNode, subprocess.Popen[bytes]],
) -> None:
    base, node, _agent = stack
    assert httpx.get(f"{base}/agent/actions", params={"host": "web1"}).status_code == 401
    proposed = httpx.post(
        f"{base}/actions",
        headers=AUTH,
        json={"action": "restart_unit", "params": {"unit": "nginx"}, "host": "web1",
              "incident_id": "INC-7", "requested_by": ALICE},
    )  # fmt: skip
    assert proposed.status_code == 201, proposed.text
    request_id = proposed.json()["id"]
    pending = httpx.get(f"{base}/actions/pending", headers=AUTH).json()
    assert [p["id"] for p in pending] == [request_id]
    time.sleep(0.5)
    assert node.systemctl_calls() == []  # nothing runs before approval

    refused = httpx.post(
        f"{base}/actions/{request_id}/approve",
        headers=AUTH,
        json={"identity": {"platform": "web", "user_id": "mallory"}},
    )
    assert refused.status_code == 401
    approved = httpx.post(f"{base}/actions/{request_id}/approve", headers=AUTH,
                          json={"identity": BOB})  # fmt: skip
    assert approved.status_code == 200 and approved.json()["status"] == "approved"

    done = _wait_status(base, request_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    assert done["verified"] is True
    assert done["result"]["exit_code"] == 0
    assert done["result"]["verify"]["ok"] is True
    assert node.systemctl_calls() == ["[restart][nginx.service]", "[is-active][nginx.service]"]

    trail = httpx.get(f"{base}/audit", params={"request": request_id}, headers=AUTH).json()
    assert [(a["step"], a["actor"]) for a in trail] == [
        ("proposed", "web:alice"),
        ("refused", "web:mallory"),
        ("approved", "web:bob"),
        ("claimed", "agent:web1"),
        ("executed", "agent:web1"),
        ("verified", "system:devmesh"),
    ]
    events = httpx.get(f"{base}/query/logs", params={"host": "web1"}, headers=AUTH).json()
    kinds = {e["event_type"]: e for e in events["events"] if e.get("event_type")}
    assert set(kinds) == {"remediation_started", "remediation_completed"}
    assert kinds["remediation_completed"]["meta"]["payload"]["request_id"] == request_id
    assert (
        kinds["remediation_started"]["meta"]["correlation_id"]
        == (kinds["remediation_completed"]["meta"]["correlation_id"])
    )


def test_adversarial_proposals_never_execute(
    stack: tuple[str, FakeNode, subprocess.Popen[bytes]],
) -> None:
    base, node, _agent = stack
    attempts = [
        ({"action": "run_shell", "params": {"cmd": "rm -rf /"}}, "not in catalog"),
        ({"action": "restart_unit", "params": {"unit": "nginx; rm -rf /"}}, "bad parameter"),
        ({"action": "restart_unit", "params": {"unit": "sshd"}}, "not allowlisted"),
        ({"action": "clear_cache", "params": {"cache": "/"}}, "bad parameter"),
    ]
    for body, reason in attempts:
        answer = httpx.post(
            f"{base}/actions", headers=AUTH, json={**body, "host": "web1", "requested_by": ALICE}
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"].startswith(reason)
    # A log line carrying a prompt injection, turned into a proposal by a model:
    injected = httpx.post(
        f"{base}/actions", headers=AUTH,
        json={"action": "restart_unit", "params": {"unit": "sshd"}, "host": "web1",
              "incident_id": "INC-8", "requested_by": {"platform": "system",
                                                        "user_id": "diagnosis"}},
    )  # fmt: skip
    assert injected.status_code == 422
    assert httpx.get(f"{base}/actions/pending", headers=AUTH).json() == []
    before = node.systemctl_calls()
    time.sleep(0.6)  # a few agent polls
    assert node.systemctl_calls() == before
    refusals = [a for a in httpx.get(f"{base}/audit", headers=AUTH).json()
                if a["step"] == "refused" and "params" in a["detail"]]  # fmt: skip
    assert len(refusals) == 5
    assert all(a["detail"]["reason"] for a in refusals)


def test_dry_run_proposal_describes_without_storing(
    stack: tuple[str, FakeNode, subprocess.Popen[bytes]],
) -> None:
    base, _node, _agent = stack
    stored = len(httpx.get(f"{base}/actions", params={"status": "all"}, headers=AUTH).json())
    answer = httpx.post(f"{base}/actions", headers=AUTH,
                        json={"action": "stop_unit", "params": {"unit": "nginx"},
                              "host": "web1", "dry_run": True})  # fmt: skip
    assert answer.status_code == 200
    assert answer.json()["summary"] == "stop unit nginx.service on web1"
    assert answer.json()["risk"] == "high"
    after = httpx.get(f"{base}/actions", params={"status": "all"}, headers=AUTH).json()
    assert len(after) == stored


def test_agent_in_a_thread_as_ship_runs_it(
    stack: tuple[str, FakeNode, subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``devmesh ship --agent`` runs the same agent in a thread of the shipper process."""
    base, node, _agent = stack
    monkeypatch.setenv("PATH", node.env()["PATH"])
    agent = build_agent(base, TOKEN, "web1-b", config=node.config, poll_interval=0.1)
    thread = start_in_thread(agent)
    try:
        made = httpx.post(
            f"{base}/actions", headers=AUTH,
            json={"action": "reload_unit", "params": {"unit": "nginx"}, "host": "web1-b",
                  "requested_by": "system:test"},
        )  # fmt: skip
        request_id = made.json()["id"]
        httpx.post(f"{base}/actions/{request_id}/approve", headers=AUTH, json={"identity": BOB})
        done = _wait_status(base, request_id, {"succeeded", "failed"})
        assert done["status"] == "succeeded" and done["verified"] is True
        assert "[reload][nginx.service]" in node.systemctl_calls()
        assert agent.executed == 1
    finally:
        agent.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
