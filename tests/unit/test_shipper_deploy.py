"""deploy/install_shipper.sh and the systemd unit, as far as they can run here: syntax, a
staged install under --destdir, --dry-run, refusals, and ``systemd-analyze verify``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ingest.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "install_shipper.sh"
UNIT = ROOT / "deploy" / "devmesh-shipper.service"


def install(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, input=stdin, timeout=60
    )


def test_script_syntax() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_staged_install(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    token = tmp_path / "node1.token"
    token.write_text("\ndm_node1_secret\n")
    result = install(
        "--destdir",
        str(dest),
        "--skip-venv",
        "--server",
        "https://dm.lan:8770",
        "--token-file",
        str(token),
        "--format",
        "json",
        "--start",
        "head",
    )
    assert result.returncode == 0, result.stderr
    etc = dest / "etc" / "devmesh"
    token_path = etc / "shipper.token"
    assert token_path.read_text() == "dm_node1_secret\n"
    assert token_path.stat().st_mode & 0o777 == 0o600
    assert (etc / "shipper.yaml").stat().st_mode & 0o777 == 0o644

    data = yaml.safe_load((etc / "shipper.yaml").read_text())
    assert data["server"] == "https://dm.lan:8770"
    assert data["token_file"] == "/etc/devmesh/shipper.token"
    assert data["filters_file"] == "/etc/devmesh/shipper-filters.yaml"
    data["token_file"] = str(token_path)  # as the service would see it
    cfg = parse_config(data)
    assert cfg.token == "dm_node1_secret"
    assert cfg.journal.format == "json" and cfg.journal.start == "head"

    unit = (dest / "etc" / "systemd" / "system" / "devmesh-shipper.service").read_text()
    assert "@" not in unit.replace("user@", "")  # every placeholder replaced
    assert (
        "ExecStart=/opt/devmesh-shipper/venv/bin/python -m devmesh.cli.ship "
        "--config /etc/devmesh/shipper.yaml --token-file ${CREDENTIALS_DIRECTORY}/token" in unit
    )
    assert "LoadCredential=token:/etc/devmesh/shipper.token" in unit
    assert "RestartPreventExitStatus=78" in unit
    assert "dm_node1_secret" not in unit

    # A re-run keeps the config a person may have edited, but takes a new token.
    (etc / "shipper.yaml").write_text((etc / "shipper.yaml").read_text() + "# edited\n")
    token.write_text("dm_rotated")
    again = install("--destdir", str(dest), "--skip-venv", "--token-file", str(token))
    assert again.returncode == 0, again.stderr
    assert "keeping existing" in again.stdout
    assert (etc / "shipper.yaml").read_text().endswith("# edited\n")
    assert token_path.read_text() == "dm_rotated\n"


def test_token_from_stdin(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    result = install(
        "--destdir",
        str(dest),
        "--skip-venv",
        "--server",
        "http://x:1",
        "--token-stdin",
        stdin="dm_from_stdin\n",
    )
    assert result.returncode == 0, result.stderr
    assert (dest / "etc/devmesh/shipper.token").read_text() == "dm_from_stdin\n"


def test_dry_run_changes_nothing_and_shows_the_plan(tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text("x")
    result = install(
        "--dry-run",
        "--server",
        "http://x:1",
        "--token-file",
        str(token),
        "--prefix",
        str(tmp_path / "opt"),
    )
    assert result.returncode == 0, result.stderr
    assert "would run: systemctl daemon-reload" in result.stdout
    assert "would run: systemctl restart devmesh-shipper.service" in result.stdout
    assert "--no-deps" in result.stdout
    assert not (tmp_path / "opt").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "http://x:1"], "no token"),
        (["--server", "devmesh.lan", "--token-stdin"], "http:// or https://"),
        (["--server", "http://x:1", "--token-stdin", "--start", "middle"], "head or tail"),
        (["--frobnicate"], "unknown option"),
    ],
)
def test_refusals(tmp_path: Path, args: list[str], message: str) -> None:
    result = install("--destdir", str(tmp_path), "--skip-venv", *args, stdin="tok\n")
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "etc").exists()  # refused before writing anything


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_file_verifies(tmp_path: Path) -> None:
    python = Path(shutil.which("python3") or "/usr/bin/python3")
    unit = tmp_path / "devmesh-shipper.service"
    unit.write_text(
        UNIT.read_text()
        .replace("@PREFIX@/venv/bin/python", str(python))
        .replace("@CONFIG_DIR@", "/etc/devmesh")
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if str(unit) in line]
    assert result.returncode == 0 and not problems, problems


def test_staged_install_with_the_agent(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    token = tmp_path / "node1.token"
    token.write_text("dm_node1_secret\n")
    result = install(
        "--destdir", str(dest), "--skip-venv", "--server", "https://dm.lan:8770",
        "--token-file", str(token), "--agent",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    etc = dest / "etc" / "devmesh"
    env = dict(line.split("=", 1) for line in (etc / "agent.env").read_text().splitlines() if line)
    assert env["DEVMESH_AGENT_SERVER"] == "https://dm.lan:8770"
    assert env["DEVMESH_AGENT_HOST"]
    # Nothing is allowed until the operator says so.
    assert yaml.safe_load((etc / "actions.yaml").read_text()) == {"allow": {}}
    unit = (dest / "etc" / "systemd" / "system" / "devmesh-agent.service").read_text()
    assert (
        "ExecStart=/opt/devmesh-shipper/venv/bin/python -m devmesh.cli.agent "
        "--server ${DEVMESH_AGENT_SERVER}" in unit
    )
    assert "LoadCredential=token:/etc/devmesh/shipper.token" in unit
    assert "EnvironmentFile=/etc/devmesh/agent.env" in unit
