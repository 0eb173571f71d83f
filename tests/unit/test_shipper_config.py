"""Shipper configuration: the shipped example is valid, mistakes are named, CLI overrides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devmesh.cli.ship import build_config
from ingest.config import ShipperConfigError, load_config, parse_config
from ingest.filters import load_rules
from ingest.shipper import EX_CONFIG

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def test_the_example_config_and_filters_are_valid(tmp_path: Path) -> None:
    data = yaml.safe_load((DEPLOY / "shipper.example.yaml").read_text())
    token = tmp_path / "token"
    token.write_text("\n  dm_secret  \n")
    data["token_file"] = str(token)
    cfg = parse_config(data)
    assert cfg.token == "dm_secret"
    assert cfg.journal.mode == "live" and cfg.journal.start == "tail"
    assert cfg.batch_max_events == 50 and cfg.batch_max_seconds == 2.0
    assert cfg.spool_max_mb == 100
    rules = load_rules(DEPLOY / "shipper-filters.example.yaml")
    assert rules.min_priority == 6
    assert not rules.keep("sshd.service", "sshd", 3, "Connection closed by 1.2.3.4 [preauth]")
    assert rules.keep("sshd.service", "sshd", 3, "Failed password for root")


def test_relative_paths_are_from_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("t")
    path = tmp_path / "shipper.yaml"
    path.write_text(
        "server: http://s:1/\ntoken_file: tok\nstate_dir: state\n"
        "journal: {mode: file, files: [a.journal], format: export}\n"
    )
    cfg = load_config(path)
    assert cfg.server == "http://s:1"
    assert cfg.token == "t"
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.journal.files == (tmp_path / "a.journal",)
    assert cfg.journal.format == "export"
    assert cfg.cursor_path == tmp_path / "state" / "cursor.json"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ("- a list", "must be a YAML mapping"),
        ("sever: http://x", "unknown config keys: sever"),
        ("server: devmesh.lan", "http:// or https://"),
        ("batch: {max_events: 0}", "batch.max_events must be at least 1"),
        ("batch: {max_events: lots}", "batch.max_events must be an integer"),
        ("journal: {mode: tape}", "journal.mode"),
        ("journal: {format: xml}", "journal.format"),
        ("journal: {mode: file}", "journal.files is empty"),
        ("journal: {mode: directory}", "journal.directory is unset"),
        ("token_file: /nonexistent/token", "cannot read token file"),
        ("spool: [1]", "spool must be a mapping"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, data: str, error: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(data)
    with pytest.raises(ShipperConfigError, match=error):
        load_config(path)


def test_command_line_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server: http://a:1\nbatch: {max_events: 10}\n")
    token = tmp_path / "token"
    token.write_text("from-file")
    cfg = build_config(
        path,
        server="http://b:2/",
        token="ignored",
        token_file=token,
        files=[tmp_path / "x.journal"],
        follow=False,
        batch_size=500,
        journal_format="export",
        start="head",
    )
    assert cfg.server == "http://b:2"
    assert cfg.token == "from-file"
    assert cfg.journal.mode == "file" and not cfg.journal.follow
    assert cfg.journal.format == "export" and cfg.journal.start == "head"
    assert cfg.batch_max_events == 500
    with pytest.raises(ShipperConfigError):
        build_config(None, start="middle")


def test_light_entry_point_exits_78_on_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server: nope\n")
    result = subprocess.run(
        [sys.executable, "-m", "devmesh.cli.ship", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == EX_CONFIG
    assert "configuration error" in result.stderr


REGISTERED = (
    "import typer\n"
    "from devmesh.cli.ship import ship\n"
    "app = typer.Typer()\n"
    "app.command()(ship)\n"
    "app.command('other')(lambda: None)\n"
    "app()\n"
)


def test_ship_works_as_a_typer_command(tmp_path: Path) -> None:
    """As the lead registers it on the main CLI: ``app.command()(ship)``."""
    help_text = subprocess.run(
        [sys.executable, "-c", REGISTERED, "ship", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert help_text.returncode == 0, help_text.stderr
    for option in (
        "--config",
        "--server",
        "--token-file",
        "--directory",
        "--format",
        "--follow",
        "--batch-size",
        "--spool-mb",
        "--filters",
    ):
        assert option in help_text.stdout
    path = tmp_path / "c.yaml"
    path.write_text("server: nope\n")
    bad = subprocess.run(
        [sys.executable, "-c", REGISTERED, "ship", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert bad.returncode == EX_CONFIG
    assert "configuration error" in bad.stderr
