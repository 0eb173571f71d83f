"""``devmesh actions …`` and ``devmesh audit`` on a real SQLite data dir, as ``cli:<user>``."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

from typer.testing import CliRunner

from devmesh.cli.main import app


def _env(tmp_path: Path, role: str) -> dict[str, str]:
    actions = {
        "allow": {"web1": {"units": ["nginx"]}},
        "roles": {f"cli:{getpass.getuser()}": [role]},
    }
    return {"DEVMESH_DATA_DIR": str(tmp_path), "DEVMESH_ACTIONS": json.dumps(actions),
            "DEVMESH_LOG_FORMAT": "json"}  # fmt: skip


def test_propose_approve_list_show_audit(tmp_path: Path) -> None:
    runner = CliRunner()
    env = _env(tmp_path, "approver")
    proposed = runner.invoke(
        app, ["actions", "propose", "restart_unit", "--host", "web1", "-p", "unit=nginx",
              "--incident", "INC-2", "--json"], env=env,
    )  # fmt: skip
    assert proposed.exit_code == 0, proposed.output
    request = json.loads(proposed.stdout)
    assert request["params"] == {"unit": "nginx.service"}
    assert request["requested_by"] == f"cli:{getpass.getuser()}"

    listed = runner.invoke(app, ["actions", "list", "--json"], env=env)
    assert [r["id"] for r in json.loads(listed.stdout)] == [request["id"]]
    approved = runner.invoke(app, ["actions", "approve", request["id"]], env=env)
    assert approved.exit_code == 0 and "approved" in approved.stdout

    trail = runner.invoke(app, ["audit", "--incident", "INC-2", "--json"], env=env)
    assert [a["step"] for a in json.loads(trail.stdout)] == ["proposed", "approved"]
    shown = runner.invoke(app, ["actions", "show", request["id"], "--json"], env=env)
    assert json.loads(shown.stdout)["request"]["status"] == "approved"


def test_refusals_exit_nonzero_with_the_reason(tmp_path: Path) -> None:
    runner = CliRunner()
    env = _env(tmp_path, "viewer")
    refused = runner.invoke(
        app, ["actions", "propose", "restart_unit", "--host", "web1", "-p", "unit=nginx"], env=env
    )
    assert refused.exit_code == 1
    assert "no role that may propose" in refused.output
    env = _env(tmp_path, "operator")
    bad = runner.invoke(
        app, ["actions", "propose", "restart_unit", "--host", "web1", "-p", "unit=sshd"], env=env
    )
    assert bad.exit_code == 1 and "not allowlisted" in bad.output
    dry = runner.invoke(
        app, ["actions", "propose", "restart_unit", "--host", "web1", "-p", "unit=nginx",
              "--dry-run"], env=env,
    )  # fmt: skip
    assert dry.exit_code == 0 and "restart unit nginx.service on web1" in dry.stdout
    trail = runner.invoke(app, ["audit", "--json"], env=env)
    assert [a["step"] for a in json.loads(trail.stdout)] == ["refused", "refused"]
