"""Node tokens (``devmesh token create NAME --host H``) over a real server: the agent of one
node cannot poll or report another node's requests, and a node token can never propose or
approve — a token copied off one machine cannot steer the fleet."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devmesh_core import services
from devmesh_core.store import open_store
from tests.conftest import start_server
from tests.integration.actions.conftest import make_node

ADMIN = "admin-token-for-node-token-tests"
ALICE = {"platform": "web", "user_id": "alice"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    root = tmp_path_factory.mktemp("node-tokens")
    node = make_node(root / "node")
    data = root / "server"
    data.mkdir()
    store = open_store(f"sqlite:///{data / 'devmesh.db'}")
    try:
        store.migrate()
        tokens = {
            "web1": services.create_token(store, "node-web1", host="web1"),
            "web1-b": services.create_token(store, "node-web1-b", host="web1-b"),
        }
    finally:
        store.close()
    proc, base = start_server(
        data,
        env={"DEVMESH_API_TOKENS": ADMIN, "DEVMESH_ACTIONS__CONFIG_FILE": str(node.config)},
    )
    try:
        yield base, tokens
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _approved_for(base: str, host: str) -> str:
    made = httpx.post(
        f"{base}/actions",
        headers=_auth(ADMIN),
        json={
            "action": "restart_unit",
            "params": {"unit": "nginx"},
            "host": host,
            "requested_by": "system:diagnosis",
        },
    )
    assert made.status_code == 201, made.text
    request_id = str(made.json()["id"])
    decided = httpx.post(
        f"{base}/actions/{request_id}/approve", headers=_auth(ADMIN), json={"identity": ALICE}
    )
    return request_id if decided.status_code == 200 else pytest.fail(decided.text)


def test_node_token_polls_only_its_own_host(server: tuple[str, dict[str, str]]) -> None:
    base, tokens = server
    other = httpx.get(
        f"{base}/agent/actions", params={"host": "web1-b"}, headers=_auth(tokens["web1"])
    )
    assert other.status_code == 401
    assert "bound to host 'web1'" in other.json()["detail"]
    own = httpx.get(f"{base}/agent/actions", params={"host": "web1"}, headers=_auth(tokens["web1"]))
    assert own.status_code == 200 and own.json() == {"actions": []}


def test_node_token_cannot_report_or_claim_another_hosts_request(
    server: tuple[str, dict[str, str]],
) -> None:
    base, tokens = server
    request_id = _approved_for(base, "web1-b")
    stolen = httpx.post(
        f"{base}/agent/actions/{request_id}/result",
        headers=_auth(tokens["web1"]),
        json={"exit_code": 0, "output": "pretend it ran", "duration": 0.1},
    )
    assert stolen.status_code == 401
    # The right node still gets it, untouched.
    claimed = httpx.get(
        f"{base}/agent/actions", params={"host": "web1-b"}, headers=_auth(tokens["web1-b"])
    ).json()["actions"]
    assert [a["id"] for a in claimed] == [request_id]


@pytest.mark.parametrize(
    "path", ["/actions", "/actions/A-xxxxx/approve", "/actions/A-xxxxx/reject"]
)
def test_node_token_never_proposes_or_decides(
    server: tuple[str, dict[str, str]], path: str
) -> None:
    base, tokens = server
    body = (
        {"action": "restart_unit", "params": {"unit": "nginx"}, "host": "web1"}
        if path == "/actions"
        else {"identity": ALICE}
    )
    answer = httpx.post(f"{base}{path}", headers=_auth(tokens["web1"]), json=body)
    assert answer.status_code == 401
    assert "node token" in answer.json()["detail"]


def test_node_tokens_still_ingest_and_read(server: tuple[str, dict[str, str]]) -> None:
    base, tokens = server
    sent = httpx.post(
        f"{base}/ingest/logs",
        headers=_auth(tokens["web1"]),
        json=[{"timestamp": "2026-11-23T10:00:00Z", "service": "nginx", "host": "web1",
               "message": "started"}],
    )  # fmt: skip
    assert sent.status_code == 200 and sent.json()["accepted"] == 1
    assert httpx.get(f"{base}/query/logs", headers=_auth(tokens["web1"])).status_code == 200


def test_cli_creates_a_node_token(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "devmesh.cli.main", "token", "create", "node-x", "--host", "x1"],
        env={**os.environ, "DEVMESH_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    store = open_store(f"sqlite:///{tmp_path / 'devmesh.db'}")
    try:
        assert set(store.token_hosts().values()) == {"x1"}
        assert services.hash_token(out.stdout.strip()) in store.token_hosts()
    finally:
        store.close()
