"""`devmesh runbooks lint|list|show`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from devmesh.cli.runbooks import app
from devmesh_core.config import Settings
from devmesh_core.reason.runbooks import bundled_runbooks_dir


def _mount(data_dir: Path) -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = Settings(data_dir=data_dir)

    root.add_typer(app, name="runbooks")
    return root


def test_lint_bundled_ok(tmp_path: Path) -> None:
    result = CliRunner().invoke(_mount(tmp_path), ["runbooks", "lint"])
    assert result.exit_code == 0, result.output
    assert "runbooks OK" in result.output


def test_lint_bad_dir_one_line_per_problem(tmp_path: Path) -> None:
    bad = tmp_path / "rb"
    bad.mkdir()
    (bad / "a.md").write_text("---\nid: a\ntitle: a: b: c\n---\n")
    (bad / "b.md").write_text("---\nid: b\ntitle: B\nactions:\n  - action: format_disk\n---\n")
    (bad / "c.md").write_text("---\nid: c\ntitle: C\n---\n")
    result = CliRunner().invoke(_mount(tmp_path), ["runbooks", "lint", str(bad)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(str(bad / "a.md")) and "not valid YAML" in lines[0]
    assert lines[1].startswith(str(bad / "b.md")) and "format_disk" in lines[1]


def test_list_json_and_table(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(_mount(tmp_path), ["runbooks", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    ids = {row["id"] for row in rows}
    assert len(rows) == len(list(bundled_runbooks_dir().glob("*.md")))
    assert {"disk-full", "oom-kill", "dns-failure"} <= ids
    assert all("body" not in row for row in rows)
    table = runner.invoke(_mount(tmp_path), ["runbooks", "list"], terminal_width=200)
    assert table.exit_code == 0 and "disk-full" in table.output


def test_show(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(_mount(tmp_path), ["runbooks", "show", "oom-kill"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "[high] Out of memory" in result.output
    assert "restart_unit unit={unit}" in result.output
    assert "## Diagnose" in result.output
    data = json.loads(
        runner.invoke(_mount(tmp_path), ["runbooks", "show", "oom-kill", "--json"]).stdout
    )
    assert data["id"] == "oom-kill" and "## Fix" in data["body"]
    missing = runner.invoke(_mount(tmp_path), ["runbooks", "show", "nope"])
    assert missing.exit_code == 1 and "no runbook" in missing.output


def test_uses_runbooks_of_the_data_dir(tmp_path: Path) -> None:
    own = tmp_path / "runbooks"
    own.mkdir()
    (own / "mine.md").write_text(
        "---\nid: mine\ntitle: Mine\ntriggers:\n  - pattern: 'boom'\n    examples: [boom]\n---\n"
    )
    result = CliRunner().invoke(_mount(tmp_path), ["runbooks", "list", "--json"])
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == ["mine"]
