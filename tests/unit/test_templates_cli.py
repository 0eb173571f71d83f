"""`devmesh templates mine`: one JSON object per input line, in order."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from devmesh.cli.templates import app
from devmesh_core.log import configure_logging

configure_logging("console", "WARNING", stream=sys.stderr)

LINES = [
    "Invalid user alice from 10.0.0.1",
    "Connection closed by 10.0.0.2 [preauth]",
    "Invalid user 0101 from 10.0.0.3",
    "",
    "Connection closed by 10.0.0.4 [preauth]",
]


def _mount() -> typer.Typer:
    root = typer.Typer()
    root.add_typer(app, name="templates")
    return root


def test_mine_jsonl(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    result = CliRunner().invoke(_mount(), ["templates", "mine", str(log), "--jsonl"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["template"] == "Invalid user <*> from <*>"
    assert rows[0]["template_id"] == rows[2]["template_id"]
    assert rows[1]["template_id"] == rows[4]["template_id"] != rows[0]["template_id"]
    assert rows[3]["template"] == ""


def test_mine_with_state_dir_reuses_ids_and_summary(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("\n".join(LINES), encoding="utf-8")
    state = tmp_path / "state"
    runner = CliRunner()
    first = runner.invoke(_mount(), ["templates", "mine", str(log), "--state-dir", str(state)])
    second = runner.invoke(_mount(), ["templates", "mine", str(log), "--state-dir", str(state)])
    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout
    summary = runner.invoke(_mount(), ["templates", "mine", str(log), "--summary"])
    assert summary.exit_code == 0
    assert "Connection closed by <*> [preauth]" in summary.stdout


def test_mine_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(_mount(), ["templates", "mine", str(tmp_path / "nope.log")])
    assert result.exit_code == 1
